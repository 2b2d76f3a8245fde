"""A user's output, as a user meets it: a sweep and its report write only into results/ (ignored
by git), one folder per sweep, and say where; `git status` stays clean, in a clean clone too;
the UI link a sweep prints opens with the command it names (`make ui STORE=...`)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT, make_ui

REPORT = ROOT / "src" / "report.py"
GIT = shutil.which("git")
needs_git = pytest.mark.skipif(GIT is None, reason="no git")


def git(folder: Path, *args: str) -> str:
    return subprocess.run([GIT, *args], cwd=folder, capture_output=True, text=True,
                          check=True).stdout


def as_repository(folder: Path) -> None:
    """`folder` as a checkout of the project would hold it: the project's .gitignore, committed."""
    shutil.copy(ROOT / ".gitignore", folder / ".gitignore")
    git(folder, "init", "-q")
    git(folder, "add", ".gitignore")
    git(folder, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "ignore")


def api(base: str, path: str, body: dict | None = None, query: str = "") -> dict:
    """MLflow's REST API as the UI's page asks it: a POST with `body`, else a GET."""
    request = urllib.request.Request(
        f"{base}/ajax-api/2.0/mlflow/{path}{query}",
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(request, timeout=30).read())


@needs_git
def test_a_sweep_and_its_report_write_only_into_results_and_say_where(project):
    as_repository(project.workdir)
    store = project.workdir.parent / f"{project.workdir.name}-store"  # a store of the user's,
    # outside the checkout (inside, it would be the user's own untracked folder)
    proc = project.train("-m", "hydra/launcher=basic", "optimizer=sgd,adam",
                         f"tracking.uri={store}", "tracking.figures=false",
                         "tracking.log_model=false", check=True)
    [folder] = re.findall(r"^wrote (results/cifar-sweep/\S+)/ \(the tables", proc.stdout, re.M)
    [parent] = [r for r in project_runs(store)
                if r.data.tags["cifar_sweep.role"] == "sweep"]
    assert folder.endswith("_" + parent.info.run_id[:8]), folder
    out = project.workdir / folder
    assert {p.name for p in out.iterdir()} >= {"table.md", "table.csv", "table.tex", "notes.md"}
    assert (out.parent / "LATEST").read_text().strip() == out.name

    report = project.run("sweep=latest", f"tracking.uri={store}", "tracking.figures=false",
                         script=REPORT, check=True)
    assert f"wrote {folder}/" in report.stdout  # the same sweep, the same folder: no second copy
    assert sorted(p.name for p in (project.workdir / "results").iterdir()) == ["cifar-sweep"]
    assert (out / "table_more.tex").is_file() and not (project.workdir / "reports").exists()
    # table.tex's columns, by name: a wrong one is one line naming the allowed ones, exit 2
    wrong = project.run("sweep=latest", f"tracking.uri={store}", "report.columns=accuracy,nope",
                        script=REPORT)
    assert wrong.returncode == 2 and wrong.stderr.startswith(
        "error: report.columns: nope is not a column of this table; allowed: accuracy, "), wrong.stderr
    assert len(wrong.stderr.strip().splitlines()) == 1
    chosen = project.run("sweep=latest", f"tracking.uri={store}", "tracking.figures=false",
                         "report.columns=accuracy,f1", script=REPORT, check=True)
    assert f"wrote {folder}/" in chosen.stdout
    tex = (out / "table.tex").read_text()
    assert "optimizer & Accuracy & F1 \\\\" in tex and "Precision" in (out / "table_more.tex").read_text()
    # everything the sweep and its report wrote is ignored by the project's .gitignore
    assert git(project.workdir, "status", "--porcelain", "--untracked-files=all") == ""

    # the UI link, with the command it names: `make ui STORE=<store>` serves that experiment
    [(command, experiment)] = re.findall(
        r"compare its rows in the MLflow UI \((make ui STORE=\S+)\): "
        r"http://127\.0\.0\.1:5000/#/experiments/(\d+)/runs\?viewStateShareKey=\w+$",
        proc.stdout, re.M)
    assert command == f"make ui STORE={store}"
    with make_ui(*command.split()[2:]) as ui:
        base = ui.base
        got = api(base, "experiments/get", query=f"?experiment_id={experiment}")
        assert got["experiment"]["name"] == "cifar-sweep"
        runs = api(base, "runs/search", {"experiment_ids": [experiment], "max_results": 10})
        assert parent.info.run_id in {r["info"]["run_id"] for r in runs["runs"]}
        # one worker: make's shell exec'd mlflow, which runs one uvicorn worker
        import psutil

        tree = psutil.Process(ui.process.pid).children(recursive=True)
        assert len(tree) <= 2, [p.cmdline()[:3] for p in tree]
    assert f"open {ui.base}/#/experiments?workflowType=machine_learning" in ui.printed


def project_runs(store: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{store / 'mlflow.db'}")
    exp = client.get_experiment_by_name("cifar-sweep")
    return client.search_runs([exp.experiment_id], max_results=100)


def test_make_ui_refuses_a_folder_without_a_store(tmp_path):
    proc = subprocess.run(["make", "-s", "-C", str(ROOT), "ui", f"STORE={tmp_path}"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[0] == (f"error: STORE={tmp_path} holds no store (no {tmp_path}/mlflow.db); "
                                   "allowed: a folder a run logged to (tracking.uri=<folder>) or a "
                                   "database URI (sqlite:///<file>.db)")
    server = subprocess.run(["make", "-s", "-C", str(ROOT), "ui", "STORE=http://host:5000"],
                            capture_output=True, text=True, timeout=60)
    assert server.returncode == 0 and "http://host:5000 is a tracking server" in server.stdout


@needs_git
@pytest.mark.slow  # 15 trainings and a report with figures: 5 min 12 s on the 2-core CPU (shared)
def test_a_study_in_a_clean_clone_leaves_git_status_clean(tmp_path):
    """Issue 41's "done when": in a clean clone, `make ablation-lr EPOCHS=1 ARGS='data=synthetic
    trainer.seed=0,1,2'` leaves `git status` clean and prints the folder it wrote; its table.tex
    compiles in a two-column article with no overfull box; accuracy_vs_lr.value.png is there;
    `make ui STORE=<that store>` serves it."""
    clone = tmp_path / "clone"
    subprocess.run([GIT, "clone", "-q", str(ROOT), str(clone)], check=True)
    env = {**os.environ, "PYTHONPATH": str(clone / "src")}  # the clone's code, not the tree's
    proc = subprocess.run(["make", "ablation-lr", "EPOCHS=1", f"PYTHON={sys.executable}",
                           "ARGS=data=synthetic trainer.seed=0,1,2 trainer.num_threads=1"],
                          cwd=clone, env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert git(clone, "status", "--porcelain", "--untracked-files=all") == ""
    folders = re.findall(r"^wrote (results/lr/\S+)/$", proc.stdout, re.M)
    assert folders, proc.stdout[-2000:]
    out = clone / folders[-1]
    assert (out / "accuracy_vs_lr.value.png").is_file() and (out / "accuracy_vs_lr.value.pdf").is_file()
    assert not any((clone / "reports").rglob("*_*-*")), "a user's study wrote into reports/"
    if shutil.which("pdflatex"):
        from test_paper_tables import compile_tex

        log = compile_tex(tmp_path, (out / "table.tex").read_text(),
                          (out / "table_more.tex").read_text())
        assert "Overfull \\hbox" not in log
    with make_ui(f"STORE={clone / 'mlruns'}", project_dir=clone) as ui:
        got = api(ui.base, "experiments/get-by-name", query="?experiment_name=ablation-lr")
        assert got["experiment"]["name"] == "ablation-lr"


def test_only_published_writes_into_reports(project):
    """`make tables` alone (`report.py all published`) is the one writer of reports/; the same
    command otherwise writes the user's results/."""
    project.run("models", script=REPORT, check=True)
    assert (project.workdir / "results" / "models.md").is_file()
    assert not (project.workdir / "reports").exists()
    proc = project.run("models", "published", script=REPORT, check=True)
    assert "wrote reports/models.md" in proc.stdout
    assert (project.workdir / "reports" / "models.md").read_text() == (
        project.workdir / "results" / "models.md").read_text()


def test_make_tables_publishes_only_alone():
    def planned(*args: str) -> str:
        return subprocess.run(["make", "-n", "-C", str(ROOT), "tables", *args], capture_output=True,
                              text=True, check=True).stdout
    assert "src/report.py  all published" in planned()
    assert "published" not in planned("ARGS=tracking.uri=/elsewhere")
    assert "published" not in planned("CONFIG_DIR=/tmp")
    # a report's setting goes to the report alone, never to a run
    study = subprocess.run(["make", "-n", "-C", str(ROOT), "ablation-lr",
                            "ARGS=data=synthetic report.columns=accuracy,f1"],
                           capture_output=True, text=True, check=True).stdout
    [train] = [part for part in study.split(";") if "src/train.py" in part]
    [report] = [part for part in study.split(";") if "src/report.py" in part]
    assert "data=synthetic" in train and "report.columns" not in train
    assert "report.columns=accuracy,f1" in report
