"""Daily use of the real command (issue 42): every mistake on the command line is one line, exit 2,
before any training, with no run and no store left behind; Ctrl-C and `kill` end with two lines
(what was interrupted, the command that continues it) and 128 + the signal's number, the runs
KILLED with their checkpoints."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import FAST, ROOT, TRAIN, free_port

CONF = ROOT / "conf"


def one_line_refusal(project, *args: str) -> str:
    """Run the real command; it must refuse in one line, exit 2, and leave no store."""
    return refused(project, project.run(*args))


def one_job_refusal(project, *overrides: str) -> str:
    """`python src/train.py <FAST> <overrides>` as one job in this process (conftest's
    Project.job): a job's own refusal (its store, its values), checked as the command's."""
    return refused(project, project.job(*overrides))


def refused(project, proc) -> str:
    """A refusal in one line, exit 2, with no store left behind; the line."""
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not project.store.exists()  # no store, so no run
    assert not (project.workdir / "checkpoints").exists()
    return lines[0]


# --- keys inside a group's option, as a newcomer types them -----------------------------------

@pytest.mark.parametrize("args, expected", [
    (["lr.vale=0.01"], "error: lr.vale: no such setting in lr=constant (did you mean lr.value?); "
                       "lr=constant has: value"),
    (["model.dropuot=0.3"], "error: model.dropuot: no such setting in model=modified_net (did you "
                            "mean model.dropout?); model=modified_net has: dropout"),
    # a key of another option of the group: which options have it
    (["data=cifar10", "data.imagesize=64"],
     "error: data.imagesize: no such setting in data=cifar10; data=cifar10 has: name, title, root, "
     "download, cache_dir, split_seed, "),
    (["data=image_folder", "data.imagesize=64"],
     "error: data.imagesize: no such setting in data=image_folder (did you mean data.image_size?)"),
    # generated data: the schema knows its image size, which the option leaves at its default
    (["data.imagesize=64"], "error: data.imagesize: no such setting in data=synthetic (did you "
                            "mean +data.source.image_size?)"),
    (["optimizer.momentun=0.5"], "error: optimizer.momentun: no such setting in optimizer=sgd (did "
                                 "you mean optimizer.momentum?); optimizer=sgd has: momentum, "
                                 "weight_decay, nesterov"),
    (["optimizer=adam", "optimizer.momentum=0.9"],
     "error: optimizer.momentum: no such setting in optimizer=adam; optimizer=adam has: "
     "weight_decay; optimizer.momentum is a setting of optimizer=rmsprop, sgd"),
    # the schema knows it, the option leaves it at its default: `+` adds it
    (["optimizer.dampening=0.1"], "error: optimizer.dampening: optimizer=sgd does not set "
                                  "dampening; add it with +optimizer.dampening=<value>"),
    (["loss.label_smothing=0.1"], "error: loss.label_smothing: no such setting in "
                                  "loss=cross_entropy (did you mean loss.label_smoothing?)"),
    (["augment.hflp=false"], "error: augment.hflp: no such setting in augment=report (did you mean "
                             "augment.hflip?)"),
    # nested: by its whole name or by its last part
    (["lr=step", "lr.gamma=0.5"], "error: lr.gamma: no such setting in lr=step (did you mean "
                                  "lr.schedule.gamma?); lr=step has: value, schedule.milestones, "
                                  "schedule.gamma"),
    (["data.source.num_trian=100"], "error: data.source.num_trian: no such setting in "
                                    "data=synthetic (did you mean data.source.num_train?)"),
    (["model=origin_net", "model.dropout=0.3"],
     "error: model.dropout: no such setting in model=origin_net; model=origin_net has: no "
     "settings; model.dropout is a setting of model=modified_net, modified_net_ds"),
    # what a preset chooses: the study's optimizers, one of which has no momentum
    (["-m", "ablation=optimizer", "optimizer.momentum=0.5"],
     "error: optimizer.momentum: no such setting in optimizer=adagrad"),
    # a sweep's option without the key
    (["-m", "model=modified_net,origin_net", "model.dropout=0.1"],
     "error: model.dropout: no such setting in model=origin_net"),
    # a preset group is not a section
    (["experiment.trainer.epochs=3"], "error: experiment.trainer.epochs: experiment is a group of "
                                      "presets (fast_modifiednet, fast_modifiednet_dropout05, "
                                      "fast_originnet, fast_recipe), not a section: choose one "
                                      "with experiment=<name>; the setting you may mean: "
                                      "trainer.epochs"),
    # a key without its section, or under another one: its full name
    (["epochs=3"], "error: epochs: no such setting (did you mean trainer.epochs?)"),
    (["momentum=0.5"], "error: momentum: no such setting (did you mean optimizer.momentum?)"),
    (["optimizer.lr=0.1"], "error: optimizer.lr: no such setting in optimizer=sgd (did you mean "
                           "lr.value?); optimizer=sgd has: momentum, weight_decay, nesterov"),
    # + for a key the config has (Hydra: "Could not append to config")
    (["+lr.value=0.1"], "error: +lr.value=0.1: lr.value is already a setting; write "
                        "lr.value=0.1 (+ adds a key the config lacks)"),
    # spaces around =, and a key without a value
    (["lr.value", "=", "0.1"], "error: data=synthetic trainer.epochs=1 trainer.num_threads=1 "
                               "lr.value = 0.1: an override has no spaces around '=': python "),
    (["lr.value"], "error: lr.value: an override is key=value (e.g. lr.value=...; ~lr.value "
                   "removes it)"),
    # internal keys are never listed
    (["optimizer=0.001"], "error: optimizer=0.001: optimizer is a group of options (adagrad, adam, "
                          "rmsprop, sgd), not a value; its settings: optimizer.momentum, "
                          "optimizer.nesterov, optimizer.weight_decay"),
    (["hydra/launcher=slurmm"], "error: hydra/launcher=slurmm: no such option (did you mean "
                                "hydra/launcher=slurm?); allowed: basic, joblib, parallel, "),
])
def test_a_key_misspelled_inside_a_group_is_one_line_with_the_nearest_name(project, args, expected):
    flags = [a for a in args if a.startswith("-") and a != "-"]
    line = one_line_refusal(project, *flags, *FAST, *[a for a in args if not a.startswith("-")])
    assert line.startswith(expected), line
    if args[-1] == "data.imagesize=64" and "data=cifar10" in args:  # which options have it
        assert line.endswith("; data.image_size is a setting of data=cifar10_jpeg, image_folder")
    assert "_target_" not in line and "_partial_" not in line


# --- -m: missing, or where argparse does not take it --------------------------------------------

def test_a_list_of_values_without_m_says_add_m(project):
    line = one_line_refusal(project, *FAST, "lr.value=0.01,0.02")
    command = shlex.join(["python", str(TRAIN), "-m", *FAST, "lr.value=0.01,0.02"])
    assert line == (f"error: lr.value=0.01,0.02: a list of values is a sweep: add -m to sweep them "
                    f"({command}); for one value that is a list write lr.value=[0.01,0.02]")


def test_a_study_without_m_says_add_m_rather_than_train_its_baseline_alone(project):
    line = one_line_refusal(project, "ablation=lr", *FAST)
    assert line.startswith("error: ablation=lr is a sweep of several runs: add -m to run it "
                           f"(python {TRAIN} -m ablation=lr data=synthetic"), line


def test_m_among_the_overrides_says_where_it_goes(project):
    line = one_line_refusal(project, *FAST, "-m", "lr.value=0.01,0.02")
    assert line == (f"error: -m goes before the overrides: python {TRAIN} -m "
                    f"{' '.join(FAST)} lr.value=0.01,0.02")


# --- stores that are not stores -----------------------------------------------------------------
# The job refuses these as it opens the store (one job's outcome): in-process, but for one case of
# each parametrized test, which runs the real command.

def test_a_file_that_is_no_database_is_refused_and_nothing_is_made_beside_it(project, tmp_path):
    junk = tmp_path / "notes.db"
    junk.write_text("not a database\n")
    for uri in (f"sqlite:///{junk}", str(junk)):
        line = one_job_refusal(project, f"tracking.uri={uri}")
        assert line.startswith(f"error: tracking.uri={uri}: {junk} is not an SQLite database"), line
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in tmp_path.iterdir() if p.name != "notes.db.lock")
    assert not Path(f"{junk}.lock").exists() and junk.read_text() == "not a database\n"


def test_a_database_file_given_as_a_folder_says_to_write_its_scheme(project, tmp_path):
    import sqlite3

    db = tmp_path / "runs.db"
    sqlite3.connect(db).close()
    db.write_bytes(b"SQLite format 3\x00" + bytes(84))  # a database's header
    line = one_job_refusal(project, f"tracking.uri={db}")
    assert line == (f"error: tracking.uri={db} is an SQLite file, not a store folder: write "
                    f"tracking.uri=sqlite:///{db}")


@pytest.mark.parametrize("uri, expected", [
    ("foo://bar", "error: tracking.uri=foo://bar: no store MLflow can open (foo://); use a folder"),
    ("file:///tmp/some/folder", "error: tracking.uri=file:///tmp/some/folder: MLflow's file store "
                                "is retired; give the folder itself (tracking.uri=/tmp/some/folder)"),
])
def test_a_uri_mlflow_has_no_store_for_is_one_line(project, uri, expected):
    if uri == "foo://bar":  # this case through the real command, the other in-process
        line = one_line_refusal(project, *FAST, f"tracking.uri={uri}")
    else:
        line = one_job_refusal(project, f"tracking.uri={uri}")
    assert line.startswith(expected)


def test_a_database_server_that_does_not_answer_is_one_line(project):
    port = free_port()  # nothing listens there
    uri = f"postgresql://user@127.0.0.1:{port}/mlflow"
    line = one_job_refusal(project, f"tracking.uri={uri}")
    assert line == (f"error: tracking.uri={uri}: no postgresql server answers at 127.0.0.1:{port} "
                    f"(connection refused); start it or check the host and port")


@pytest.mark.parametrize("scheme, driver", [("postgresql", "psycopg"), ("mysql", "MySQLdb")])
def test_a_database_whose_driver_is_not_installed_names_the_package(project, scheme, driver):
    import importlib.util

    if importlib.util.find_spec(driver) is not None:
        pytest.skip(f"{driver} is installed here")
    with socket.socket() as server:  # something answers on the port: the driver is what lacks
        server.bind(("127.0.0.1", 0))
        server.listen()
        uri = f"{scheme}://user@127.0.0.1:{server.getsockname()[1]}/mlflow"
        if scheme == "postgresql":  # this case through the real command, the other in-process
            line = one_line_refusal(project, *FAST, f"tracking.uri={uri}")
        else:
            line = one_job_refusal(project, f"tracking.uri={uri}")
    assert line.startswith(f"error: tracking.uri={uri}: its Python driver {driver} is not "
                           "installed: pip install "), line


def test_a_slurm_sweep_without_slurm_is_one_line_before_any_run(project, tmp_path):
    # this machine's tools but SLURM's (the real-cluster step installs SLURM into /usr/bin)
    tools = tmp_path / "bin-without-slurm"
    tools.mkdir()
    for folder in (Path(sys.executable).parent, Path("/usr/local/bin"), Path("/usr/bin"),
                   Path("/bin")):
        for tool in (folder.iterdir() if folder.is_dir() else []):
            if not tool.name.startswith(("sbatch", "srun", "squeue", "scancel", "sinfo", "salloc")) \
                    and not (tools / tool.name).exists():
                (tools / tool.name).symlink_to(tool)
    env = {"PATH": str(tools)}  # no sbatch, no srun
    proc = project.run("-m", "hydra/launcher=slurm", *FAST, "lr.value=0.01,0.02", env=env)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == ["error: hydra/launcher=slurm: SLURM is not installed here (sbatch and srun "
                     "not on PATH); run the sweep on the cluster's login node, or leave out "
                     "hydra/launcher=slurm to run its jobs on this machine"], proc.stderr
    assert not project.store.exists()


# --- the promise for every key of every group ---------------------------------------------------

def every_option_key():
    """(group, option, key) for every setting a user types in every option of conf/."""
    from cifar_sweep.config.override_check import _is_global, _leaves, _option_tree, groups

    for group, options in groups([CONF]).items():
        for option in options:
            if _is_global(CONF / group / f"{option}.yaml"):
                continue
            tree = _option_tree([CONF], group, option)
            for key in _leaves(tree or {}):
                yield group, option, key


def as_typed(value) -> str:
    """A value as a user types it on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ",".join(as_typed(v) for v in value) + "]"
    return str(value)


def misspelt(key: str) -> str:
    """The key's last part with one letter dropped (a newcomer's typo)."""
    head, _, last = key.rpartition(".")
    cut = last[:len(last) // 2] + last[len(last) // 2 + 1:]
    return f"{head}.{cut}" if head else cut


def test_every_key_of_every_option_passes_and_its_typo_names_it():
    """Each setting of each option of each group is accepted as typed, and with one letter
    dropped is refused in one line that names it; internal keys are never listed."""
    from cifar_sweep.config.override_check import problem

    seen = 0
    for group, option, key in every_option_key():
        value = OmegaConf.to_container(OmegaConf.create({"v": OmegaConf.select(
            OmegaConf.load(CONF / group / f"{option}.yaml"), key)}))["v"]
        typed = f"{group}.{key}={as_typed(value)}"
        assert problem([f"{group}={option}", typed]) is None, typed
        wrong = f"{group}.{misspelt(key)}=1"
        line = problem([f"{group}={option}", wrong])
        assert line is not None and line.startswith(f"{group}.{misspelt(key)}: no such setting "
                                                    f"in {group}={option}"), (wrong, line)
        assert f"{group}.{key}" in line and "\n" not in line, (wrong, line)
        assert "_target_" not in line and "_partial_" not in line
        seen += 1
    assert seen >= 60  # every group's options, each with its settings


def test_every_key_the_check_passes_hydra_composes():
    """The check refuses nothing Hydra takes: each option's settings, overridden, compose."""
    from hydra import compose, initialize_config_dir

    by_option: dict[tuple[str, str], list[str]] = {}
    for group, option, key in every_option_key():
        value = OmegaConf.to_container(OmegaConf.create({"v": OmegaConf.select(
            OmegaConf.load(CONF / group / f"{option}.yaml"), key)}))["v"]
        by_option.setdefault((group, option), []).append(f"{group}.{key}={as_typed(value)}")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for (group, option), settings in by_option.items():  # all of an option's at once
            compose("config", overrides=[f"{group}={option}", *settings])


# --- Ctrl-C and kill ----------------------------------------------------------------------------

def start(project, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(TRAIN), *args], cwd=project.workdir,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)


def interrupt(proc: subprocess.Popen, needle: str, signum: int, group: bool) -> tuple[str, str]:
    """Wait for `needle` in the output, then send the signal: to the whole process group as a
    terminal's Ctrl-C does, or to the command alone as `kill`. (the output before, after)"""
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if needle in line:
            break
    else:
        proc.wait()
        raise AssertionError("".join(seen))
    if group:
        os.killpg(proc.pid, signum)
    else:
        proc.send_signal(signum)
    try:
        rest, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    return "".join(seen), rest


@pytest.mark.parametrize("signum, group", [(signal.SIGINT, True), (signal.SIGTERM, False)])
def test_a_run_interrupted_says_what_and_how_to_continue_in_two_lines(project, signum, group):
    args = [*FAST[:1], "trainer.epochs=200", "trainer.num_threads=1"]
    out, after = interrupt(start(project, *args), "epoch 1/200", signum, group)
    [run] = project.runs()
    assert run.info.status == "KILLED"
    checkpoint = project.workdir / "checkpoints" / run.data.tags["config_hash"] / \
        f"{run.info.run_id}.pt"
    assert checkpoint.is_file()
    lines = [line for line in after.splitlines() if line.strip() and " epoch " not in line]
    name = signal.Signals(signum).name
    assert lines == [
        f"interrupted ({name}): run {run.info.run_id} ({run.info.run_name}) stopped KILLED, its "
        f"checkpoint kept",
        f"continue with the same command: {shlex.join(['python', str(TRAIN), *args])}"], after
    assert "Traceback" not in out + after


@pytest.mark.parametrize("signum, group", [(signal.SIGINT, True), (signal.SIGTERM, False)])
def test_a_parallel_sweep_interrupted_says_what_and_how_to_continue(project, signum, group):
    args = ["-m", *FAST[:1], "trainer.epochs=200", "lr.value=0.001,0.002"]
    proc = start(project, *args)
    out, after = interrupt(proc, "epoch 2/200", signum, group)
    assert proc.returncode == 128 + signum
    runs = project.runs()
    [parent] = [r for r in runs if r.data.tags["cifar_sweep.role"] == "sweep"]
    jobs = [r for r in runs if r.data.tags["cifar_sweep.role"] == "job"]
    assert parent.info.status == "KILLED" and jobs
    assert all(r.info.status == "KILLED" for r in jobs)
    lines = [line for line in after.splitlines() if line.strip() and " epoch " not in line]
    name = signal.Signals(signum).name
    assert len(lines) == 2, after
    assert lines[0].startswith(f"interrupted ({name}): sweep {parent.info.run_id}: 0 of 2 jobs "
                               f"finished, {len(jobs)} stopped KILLED ("), after
    assert lines[1] == f"continue with the same command: {shlex.join(['python', str(TRAIN), *args])}"
    assert "Traceback" not in out + after and "leaked semaphore" not in after



@pytest.mark.parametrize("search", [False, True], ids=["sweep", "search"])
def test_the_interrupted_line_counts_a_sweeps_jobs_and_a_searchs_trials(tmp_path, search):
    """What a Ctrl-C prints of a sweep, read from a real store: the jobs finished of all, the runs
    stopped. A search asks its trials as it goes, so it names the trials finished and no total
    (it said `4 of 1 jobs finished`: the total was its first batch)."""
    from mlflow import MlflowClient

    from cifar_sweep.sweep.callback import MlflowSweepCallback
    from cifar_sweep.tracking import tags as t

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.create_experiment("e", (tmp_path / "artifacts").as_uri())
    parent = client.create_run(experiment, tags={t.ROLE: t.ROLE_SWEEP}).info.run_id
    for num in range(3):
        run = client.create_run(experiment, run_name=f"#{num} lr.value=0.{num + 1}", tags={
            t.ROLE: t.ROLE_JOB, t.PARENT: parent, t.JOB_NUM: str(num), t.CONFIG_HASH: f"h{num}"})
        if num < 2:
            client.set_terminated(run.info.run_id, "FINISHED")
    callback = MlflowSweepCallback()
    callback.client, callback.parent_id, callback.search = client, parent, search
    callback.jobs, callback.checkpoint_dir = (1 if search else 3), str(tmp_path / "checkpoints")
    done = "2 trials finished" if search else "2 of 3 jobs finished"
    assert callback.interrupted() == (f"sweep {parent}: {done}, 1 stopped KILLED (#2), no "
                                      "checkpoint yet: it starts over")
    assert client.get_run(parent).info.status == "KILLED"
    assert [r.info.status for r in client.search_runs([experiment], f"tags.`{t.PARENT}` = "
                                                      f"'{parent}'", order_by=["run_name"])] == [
        "FINISHED", "FINISHED", "KILLED"]

# --- report.py: its usage, and arguments checked before the store is opened ---------------------

REPORT = ROOT / "src" / "report.py"


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A store with one finished sweep of two optimizers (1 epoch each)."""
    from conftest import Project

    project = Project(tmp_path_factory.mktemp("swept"))
    project.train("-m", "optimizer=sgd,adam", "hydra/launcher=basic", check=True)
    return project


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_report_help_prints_its_usage_and_targets(project, flag):
    proc = project.run(flag, script=REPORT)
    assert proc.returncode == 0 and proc.stderr == ""
    for target in ("ablation=lr", "sweep=latest", "experiment=<name>", "hpo=modifiednet", "models",
                   "baseline=", "where="):
        assert target in proc.stdout
    assert not project.store.exists()


@pytest.mark.parametrize("args, expected", [
    (["sweep="], "error: sweep= is empty; allowed: latest or a sweep's run id"),
    (["experiment="], "error: experiment= is empty; allowed: an experiment's name"),
    (["sweep=latest", "baseline=adam"], "error: baseline=adam is invalid: allowed: "
                                        "baseline=<key>=<value>"),
    (["sweep=latest", "trackng.uri=x"], "error: trackng.uri: no such setting (did you mean "
                                        "tracking.uri?)"),
    (["sweep=latest", "where=foo"], "error: where=foo is invalid: allowed: where=<key>=<value>"),
    # a report reads a store; it makes none where there is none
    (["sweep=latest", "tracking.uri=nothing/here"],
     "error: tracking.uri=nothing/here: no store there (no nothing/here/mlflow.db)"),
    (["sweep=latest", "tracking.uri=sqlite:///no.db"],
     "error: tracking.uri=sqlite:///no.db: no store there (no.db does not exist)"),
])
def test_report_arguments_are_checked_before_the_store_is_opened(project, args, expected):
    proc = project.run(*args, script=REPORT)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(expected) and proc.stderr.count("\n") == 1, proc.stderr
    assert sorted(p.name for p in project.workdir.iterdir()) == []  # no store, no results


def test_report_baseline_matching_no_row_names_the_rows_and_writes_nothing(swept):
    before = sorted(swept.workdir.rglob("*"))
    proc = swept.run("sweep=latest", "baseline=optimizer=sgdd", script=REPORT)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == ("error: baseline=optimizer=sgdd matches no row of this table (did you "
                           "mean baseline=optimizer=sgd?); its rows: optimizer=sgd, "
                           "optimizer=adam\n")
    assert sorted(swept.workdir.rglob("*")) == before  # nothing written
    proc = swept.run("sweep=latest", "baseline=optimizer=adam", "tracking.figures=false",
                     script=REPORT)
    assert proc.returncode == 0, proc.stderr  # a baseline that is a row: the report


def test_report_sweep_and_experiment_suggest_the_nearest_name(swept):
    [parent] = [r for r in swept.runs() if r.data.tags["cifar_sweep.role"] == "sweep"]
    cases = {
        "sweep=lastest": "error: sweep=lastest: no such run in the store (did you mean "
                         "sweep=latest?)\n",
        f"sweep={parent.info.run_id[:8]}": f"error: sweep={parent.info.run_id[:8]}: no such run in "
                                           f"the store (did you mean sweep={parent.info.run_id}?)\n",
        "experiment=cifar-swep": "error: experiment=cifar-swep: no such experiment in the store "
                                 "(did you mean experiment=cifar-sweep?); the store's experiments: ",
    }
    for arg, expected in cases.items():
        proc = swept.run(arg, script=REPORT)
        assert proc.returncode == 2 and proc.stderr.startswith(expected), proc.stderr
        assert proc.stderr.count("\n") == 1


# --- a partial table says so; a failed study prints no stale table ------------------------------

@pytest.mark.slow  # two commands, about a minute and a half here: the fast check is below
def test_a_sweep_whose_row_another_command_trains_ends_with_a_partial_table_that_says_so(project):
    """Another command trains lr.value=0.001 (paused, alive: SIGSTOP); the sweep leaves a
    reference to its run, ends with its table of the other row and one line naming the row still
    training elsewhere and its run; the table's notes say it; once that run finishes, report.py
    gives the full table."""
    alone = start(project, *FAST, "trainer.epochs=2", "lr.value=0.001")
    try:
        assert alone.stdout is not None
        for line in alone.stdout:
            if " run " in line and "config" in line:  # its run exists: pause it, alive
                os.kill(alone.pid, signal.SIGSTOP)
                break
        [elsewhere] = project.runs()
        sweep = project.train("-m", "hydra/launcher=basic", "trainer.epochs=2",
                              "lr.value=0.001,0.003")
    finally:
        os.kill(alone.pid, signal.SIGCONT)
    assert sweep.returncode == 0, sweep.stderr
    [parent] = [r for r in project.runs() if r.data.tags["cifar_sweep.role"] == "sweep"]
    last = [line for line in sweep.stdout.splitlines() if line.strip()][-1]
    assert last == (f"partial table: not in it lr.value=0.001 (still training elsewhere: run "
                    f"{elsewhere.info.run_id}); `python src/report.py sweep={parent.info.run_id}` "
                    "gives the full table once it finishes")
    notes = project.sweep_report().joinpath("notes.md").read_text()
    assert (f"- Partial table: not in it, lr.value=0.001 (still training elsewhere: run "
            f"{elsewhere.info.run_id}).") in notes
    assert alone.wait(timeout=300) == 0
    full = project.run(f"sweep={parent.info.run_id}", "tracking.figures=false", script=REPORT)
    assert full.returncode == 0, full.stderr
    assert f"| lr.value=0.001 | {elsewhere.info.run_id} |" in full.stdout
    assert "Partial table" not in full.stdout


def make_project(project) -> list[str]:
    """`make` in the scratch folder: the project's Makefile, src/ and conf/ linked there."""
    for name in ("Makefile", "src", "conf"):
        (project.workdir / name).symlink_to(ROOT / name)
    return ["make", "-s", f"PYTHON={sys.executable}"]


def test_a_study_stopped_before_its_jobs_ran_prints_no_older_table(project):
    old = project.workdir / "results" / "lr" / "2026-01-01_00-00-00_0ld7ab1e"
    old.mkdir(parents=True)
    (old / "table.md").write_text("| 0.005 | the older table |\n")
    (old.parent / "LATEST").write_text(old.name + "\n")
    proc = subprocess.run([*make_project(project), "ablation-lr",
                           "ARGS=data=image_folder data.root=nowhere trainer.epochs=1"],
                          cwd=project.workdir, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2  # make's own status for a failed recipe; the sweep's is below
    assert "the older table" not in proc.stdout + proc.stderr
    assert (old / "table.md").read_text() == "| 0.005 | the older table |\n"  # not rewritten
    assert sorted(p.name for p in old.parent.iterdir()) == [old.name, "LATEST"]
    assert ("make: study lr stopped before its jobs ran (exit 2): no table printed or rewritten; "
            f"the last one: results/lr/{old.name}/") in proc.stderr
    assert "Error 2" in proc.stderr
    assert not project.store.exists() or project.runs("ablation-lr") == []


def test_a_study_with_a_failed_job_prints_this_sweeps_table_naming_the_failed_row(project):
    proc = subprocess.run([*make_project(project), "ablation-lr",
                           "ARGS=data=synthetic trainer.epochs=1 trainer.num_threads=1 "
                           "hydra/launcher=basic lr.value=1e12,0.005"],
                          cwd=project.workdir, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and "Error 1" in proc.stderr, proc.stderr
    [failed] = [r for r in project.runs("ablation-lr") if r.info.status == "FAILED"
                and r.data.tags["cifar_sweep.role"] == "job"]
    # the report's table (after the sweep's own): its row, and a note naming the failed one
    report = proc.stdout[proc.stdout.index("# Ablation: lr"):]
    assert "| 0.005 (baseline) |" in report
    assert (f"- Partial table: not in it, lr.value=1000000000000.0 (failed: run "
            f"{failed.info.run_id}; NonFiniteLossError: training loss became nan). Failed runs "
            "are not continued.") in report


def test_the_rows_a_table_lacks_are_named_from_the_store(tmp_path):
    """In-process, on a hand-made store: a sweep of four jobs, one finished (in the table), one
    a reference to a run another command trains, one failed, one a reference to a finished run
    (in the table through it)."""
    from mlflow.tracking import MlflowClient

    from cifar_sweep.report import unfinished
    from cifar_sweep.tracking import tags as t
    from cifar_sweep.tracking.experiments import store_locations

    client = MlflowClient(store_locations(str(tmp_path / "mlruns"))[0])
    exp = client.create_experiment("e")
    parent = client.create_run(exp, tags={t.ROLE: t.ROLE_SWEEP, t.SWEEP_VARYING: "lr.value"})
    pid = parent.info.run_id

    def run(status: str, **tags: str) -> str:
        made = client.create_run(exp, tags=tags).info.run_id
        if status != "RUNNING":
            client.set_terminated(made, status)
        return made

    other = run("RUNNING", **{t.ROLE: t.ROLE_JOB})  # another command's, still training
    done_before = run("FINISHED", **{t.ROLE: t.ROLE_JOB})
    job = {t.PARENT: pid, t.ROLE: t.ROLE_JOB}
    finished = run("FINISHED", **job, **{t.JOB_NUM: "0", t.JOB_OVERRIDES: "lr.value=0.1 x=1"})
    run("FINISHED", **{**job, t.ROLE: t.ROLE_REFERENCE}, **{t.JOB_NUM: "1", t.SAME_AS: other,
                                                            t.JOB_OVERRIDES: "lr.value=0.2"})
    failed = run("FAILED", **job, **{t.JOB_NUM: "2", t.JOB_OVERRIDES: "lr.value=9",
                                     t.FAILURE: "NonFiniteLossError: loss nan\nmore"})
    run("FINISHED", **{**job, t.ROLE: t.ROLE_REFERENCE}, **{t.JOB_NUM: "3", t.SAME_AS: done_before,
                                                            t.JOB_OVERRIDES: "lr.value=0.4"})
    missing = unfinished.of_sweep(client, pid, {finished, done_before})
    assert missing == [
        unfinished.Missing("lr.value=0.2", unfinished.ELSEWHERE, other),
        unfinished.Missing("lr.value=9", "failed", failed, "NonFiniteLossError: loss nan")]
    assert unfinished.line(missing, pid) == (
        f"partial table: not in it lr.value=0.2 (still training elsewhere: run {other}), "
        f"lr.value=9 (failed: run {failed}; NonFiniteLossError: loss nan); `python src/report.py "
        f"sweep={pid}` gives the full table once they finish")
    assert unfinished.note(missing).endswith(
        "`python src/report.py` gives the full table once the runs still training finish; "
        "failed runs are not continued.")
    # once the other command's run has finished, the table holds it: nothing is missing
    client.set_terminated(other, "FINISHED")
    assert [m.setting for m in unfinished.of_sweep(client, pid, {finished, done_before, other})] == [
        "lr.value=9"]


@pytest.mark.parametrize("args, expected", [
    (["hydra.launcher.n_jobz=3"], "hydra.launcher.n_jobz: no such setting (did you mean "
     "hydra.launcher.n_jobs?); hydra.launcher (hydra/launcher=parallel) has: n_jobs, "),
    (["hydra/launcher=basic", "hydra.launcher.n_jobs=3"], "hydra.launcher.n_jobs: no such "
     "setting; hydra.launcher (hydra/launcher=basic) has: "),
    (["hydra.sweep.dirr=x"], "hydra.sweep.dirr: no such setting (did you mean hydra.sweep.dir?)"),
    (["hydra.job.env_set.FOO=1"], "hydra.job.env_set.FOO: hydra.job.env_set holds no FOO yet; "
     "add it with +hydra.job.env_set.FOO=<value>"),
])
def test_a_hydra_key_mistyped_is_one_line_against_the_chosen_launcher(args, expected):
    """Hydra's own settings, checked against Hydra's config as the choices make it (its own
    answer is a 6-line block); the real keys pass."""
    from cifar_sweep.config.override_check import problem

    line = problem(args)
    assert line is not None and line.startswith(expected) and "\n" not in line, line
    for good in (["hydra.launcher.n_jobs=1"], ["hydra.sweep.dir=x"], ["+hydra.job.env_set.FOO=1"],
                 ["hydra.job.chdir=true"], ["hydra/launcher=basic", "hydra.job.chdir=false"]):
        assert problem(good) is None, good


def test_a_hydra_key_mistyped_through_the_command_is_one_line_and_no_store(project):
    proc = project.train("-m", "trainer.seed=0,1", "hydra.launcher.n_jobz=3")
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: hydra.launcher.n_jobz: no such setting (did you mean")
    assert not project.store.exists()
