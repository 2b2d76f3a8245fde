"""Tables you can trust, through the real entrypoint on a synthetic store: a row is a setting
with its seeds pooled, nothing is mixed silently, results are tied to the code that made them."""

import csv
import os
import re
import shutil

import pytest

from conftest import ROOT

REPORT = ROOT / "src" / "report.py"
QUICK = ["hydra/launcher=basic", "tracking.figures=false"]


def table_rows(project, study="lr"):
    return list(csv.DictReader((project.sweep_report(study) / "table.csv").open()))


@pytest.mark.slow  # in `make test-full`: the default suite stays under about 12 minutes
def test_seeds_join_their_row_and_another_batch_size_is_not_mixed_in(project):
    project.train("-m", "ablation=lr", "lr.value=0.005", "trainer.seed=0,1,2", *QUICK, check=True)
    project.train("-m", "ablation=lr", "lr.value=0.005", "trainer.seed=3,4", *QUICK, check=True)
    project.run("ablation=lr", script=REPORT, check=True)
    [row] = table_rows(project)
    assert row["seeds"] == "0 1 2 3 4" and row["runs"] == "5"
    assert "5: 0-4" in (project.sweep_report("lr") / "table.md").read_text()

    # the same study at another batch size: its own table, the other runs named below it
    project.train("-m", "ablation=lr", "lr.value=0.005,0.05", "trainer.batch_size=256", *QUICK,
                  check=True)
    proc = project.run("ablation=lr", script=REPORT, check=True)
    rows = table_rows(project)
    assert [r["setting"] for r in rows] == ["lr.value=0.005", "lr.value=0.05"]
    assert all(r["runs"] == "1" for r in rows)
    assert "trainer.batch_size=64: 5 runs, not mixed in" in proc.stdout
    client = project.client
    batch_of = {r.info.run_id: r.data.params["trainer.batch_size"]
                for r in project.runs("ablation-lr") if "trainer.batch_size" in r.data.params}
    assert {batch_of[i] for r in rows for i in r["run_ids"].split()} == {"256"}

    # the earlier fixed settings, chosen by the user: five seeds again, the others named
    proc = project.run("ablation=lr", "where=trainer.batch_size=64", script=REPORT, check=True)
    # an earlier sweep's table: its own folder, the one it names (LATEST: the newest sweep's)
    [folder] = re.findall(r"^wrote (results/lr/\S+)/", proc.stdout, re.M)
    [row] = csv.DictReader((project.workdir / folder / "table.csv").open())
    assert row["runs"] == "5" and row["baseline"] == "True"
    assert "trainer.batch_size=256: 2 runs, not mixed in" in proc.stdout
    # reading made nothing: no run, no artifact on the sweeps
    sweeps = [r for r in project.runs("ablation-lr") if r.data.tags["cifar_sweep.role"] == "sweep"]
    assert all(not client.list_artifacts(s.info.run_id, "report") for s in sweeps)


def copy_project(folder):
    for part in ("src", "conf"):
        shutil.copytree(ROOT / part, folder / part,
                        ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    return folder / "src" / "train.py", {"PYTHONPATH": str(folder / "src")}


def edit(folder, module, old, new):
    path = folder / "src" / "cifar_sweep" / module
    path.write_text(path.read_text().replace(old, new, 1))


@pytest.mark.slow  # in `make test-full`: the default suite stays under about 12 minutes
def test_changed_model_code_trains_again_and_an_unrelated_change_reuses(project, tmp_path):
    train, env = copy_project(tmp_path / "copy")
    sweep = ["-m", "model=modified_net,origin_net", *QUICK]
    project.train(*sweep, script=train, env=env, check=True)
    # ModifiedNet's head changes: its runs are another experiment now; OriginNet's are not
    edit(tmp_path / "copy", "models.py", "nn.Linear(100, 64), nn.ReLU(), nn.Dropout(dropout),",
         "nn.Linear(100, 64), nn.GELU(), nn.Dropout(dropout),")
    proc = project.train(*sweep, script=train, env=env, check=True)
    out = proc.stdout + proc.stderr
    assert "but other code made it (changed: model): training again" in out
    assert out.count("already finished: run") == 1  # OriginNet's
    jobs = [r for r in project.runs() if r.data.tags["cifar_sweep.role"] == "job"]
    assert sorted(r.data.params["model._target_"].rsplit(".", 1)[1] for r in jobs) == [
        "ModifiedNet", "ModifiedNet", "OriginNet"]
    old, new = sorted((r for r in jobs if r.data.params["model._target_"].endswith("ModifiedNet")),
                      key=lambda r: r.info.start_time)
    assert old.data.tags["code.model"] != new.data.tags["code.model"]
    assert old.data.tags["code.training"] == new.data.tags["code.training"]

    report = project.run("experiment=cifar-sweep", script=REPORT, check=True)
    rows = list(csv.DictReader((project.sweep_report() / "table.csv").open()))
    assert [r["setting"] for r in rows] == ["model=modified_net", "model=origin_net"]
    assert rows[0]["run_ids"] == new.info.run_id  # the old code's run is left out, and named
    assert f"code.model={old.data.tags['code.model']}: 1 run, not mixed in" in report.stdout

    # a change elsewhere (a new model option) leaves both reusable: nothing trains
    edit(tmp_path / "copy", "models.py", "def parameter_count(",
         "class NewNet(nn.Module):\n    pass\n\n\ndef parameter_count(")
    proc = project.train(*sweep, script=train, env=env, check=True)
    assert (proc.stdout + proc.stderr).count("already finished: run") == 2
    # and reusing another code's result is the user's choice
    proc = project.train("model=modified_net", "trainer.reuse_other_code=true",
                         "tracking.experiment=other", "hydra/launcher=basic", script=train,
                         env=env, check=True)
    assert "already finished: run" in proc.stdout + proc.stderr


def trial_numbers(project):
    table = (project.workdir / "results" / "hpo-modifiednet" / "table.md").read_text()
    return [m.group(1) for m in re.finditer(r"^\| \**(\d+)\** \|", table, re.M)]


@pytest.mark.slow  # in `make test-full`: the default suite stays under about 12 minutes
def test_a_second_search_in_the_same_experiment_stays_out_of_the_first_table(project):
    search = ["-m", "hpo=modifiednet", "hydra/launcher=basic", "hydra.sweeper.n_trials=2",
              "hydra.sweeper.space={lr.value:{type:float,low:0.01,high:0.1,log:true}}"]
    project.train(*search, "hydra.sweeper.study_name=first", check=True)
    project.train(*search, "hydra.sweeper.study_name=second", "hydra.sweeper.seed=1", check=True)
    wrong = project.run("hpo=modifiednet", script=REPORT)  # the preset's name: neither of these
    assert wrong.returncode == 1 and "it holds the studies first, second: choose one with " \
        "hydra.sweeper.study_name=<name>" in wrong.stderr
    proc = project.run("hpo=modifiednet", "hydra.sweeper.study_name=first", script=REPORT,
                       check=True)
    assert trial_numbers(project) == ["0", "1"]
    assert "Not mixed in: 2 trial runs of other studies" in proc.stdout
    # the study made again under the same name (its storage deleted): its own table
    (project.workdir / "hpo" / "optuna.db").unlink()
    project.train(*search[:3], "hydra.sweeper.n_trials=1", *search[4:],
                  "hydra.sweeper.study_name=first", check=True)
    proc = project.run("hpo=modifiednet", "hydra.sweeper.study_name=first", script=REPORT,
                       check=True)
    assert trial_numbers(project) == ["0"]
    assert "Not mixed in: 4 trial runs of other studies" in proc.stdout  # both earlier ones


@pytest.mark.slow  # a real authenticating server: about 60 s
def test_a_read_only_user_makes_tables(project, tmp_path):
    from mlflow.server import get_app_client
    from mlflow.tracking import MlflowClient

    from conftest import free_port
    from test_server import ADMIN, BOB, Server

    auth = Server(tmp_path / "auth", free_port(), ("--app-name", "basic-auth"),
                  {"MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN["MLFLOW_TRACKING_PASSWORD"],
                   "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-only"})
    auth.start()
    try:
        project.train("-m", "lr.value=0.01,0.02", f"tracking.uri={auth.uri}", *QUICK, env=ADMIN,
                      check=True)
        os.environ.update(ADMIN)
        try:  # bob may read every experiment (the server's default permission), write none
            get_app_client("basic-auth", tracking_uri=auth.uri).create_user(
                BOB["MLFLOW_TRACKING_USERNAME"], BOB["MLFLOW_TRACKING_PASSWORD"])
            admin = MlflowClient(tracking_uri=auth.uri)
            experiment = admin.get_experiment_by_name("cifar-sweep").experiment_id

            def store():
                runs = admin.search_runs([experiment])
                return sorted((r.info.run_id, r.info.status, r.info.end_time,
                               tuple(a.path for a in admin.list_artifacts(r.info.run_id)))
                              for r in runs)

            before = store()
            proc = project.run("sweep=latest", f"tracking.uri={auth.uri}", script=REPORT,
                               env={**{k: None for k in ADMIN}, **BOB})
            assert proc.returncode == 0, proc.stdout + proc.stderr
            rows = list(csv.DictReader(
                (project.sweep_report() / "table.csv").open()))
            assert [r["setting"] for r in rows] == ["lr.value=0.01", "lr.value=0.02"]
            assert (project.sweep_report() / "curves.png").is_file()
            assert store() == before  # nothing written: no run, no artifact, no status
        finally:
            for key in ADMIN:
                os.environ.pop(key, None)
    finally:
        auth.kill()
