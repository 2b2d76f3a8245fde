"""How a job ends, as a table (cifar_sweep/job/endings.py): each way recognised from a real
exception, each row's consequences checked through the entrypoint where a run is cheap to end
that way, and the table users read (docs/faults.md) held equal to the one the code reads."""

from __future__ import annotations

import errno
import gc
import os
import subprocess
import sys
import weakref
from types import SimpleNamespace

import pytest
from mlflow.exceptions import MlflowException

from cifar_sweep import faults
from cifar_sweep.errors import NonFiniteLossError, Pruned, UserInputError, Yielded
from cifar_sweep.job import endings
from conftest import FAST, ROOT, TRAIN, free_port, wait_for


class UncompletedJobError(RuntimeError):
    """submitit's, by name (submitit is matched by name: it is only there on a cluster)."""


def _full(folder):
    return OSError(errno.ENOSPC, "No space left on device", str(folder / "x.pt"))


CASES = {
    "finished": None,
    endings.ELSEWHERE: lambda tmp: Yielded(SimpleNamespace(info=SimpleNamespace(run_id="w1"))),
    endings.PRUNED: lambda tmp: Pruned(3),
    endings.NAN: lambda tmp: NonFiniteLossError("the training loss became nan"),
    endings.CODE_ERROR: lambda tmp: ValueError("a bug"),
    endings.BAD_VALUE: lambda tmp: UserInputError("lr.value=0 is invalid"),
    endings.ENVIRONMENT: _full,
    endings.TIME_LIMIT: lambda tmp: UncompletedJobError("job 12 timed out"),
    endings.SIGNAL: lambda tmp: SystemExit(143),
    endings.LOST_SERVER: lambda tmp: MlflowException("API request failed: connection refused"),
}


def test_every_way_has_a_row_and_every_row_a_way():
    assert set(CASES) == set(endings.WAYS)


@pytest.mark.parametrize("way", sorted(set(CASES) - {"finished"}))
def test_each_way_is_recognised_from_its_exception(way, tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"  # a server that no longer answers
    ending = endings.EndingClassifier(uri, [("checkpoint.dir", tmp_path)], "cuda:0", "lower it")
    exc = CASES[way](tmp_path)
    ended = ending.of(exc)
    assert ended.way == way
    assert ended.status == endings.WAYS[way].status
    if endings.WAYS[way].status in ("KILLED", "FAILED"):
        assert ended.reason  # the failure_reason tag the run is closed with
    if way in (endings.ENVIRONMENT, endings.TIME_LIMIT, endings.SIGNAL):
        assert ended.reason.startswith("interrupted")  # continued by the same command
    if endings.WAYS[way].stops_sweep:
        assert isinstance(ended.fault, faults.EnvironmentFault)


def test_a_fault_behind_another_error_is_still_the_environment(tmp_path):
    """MLflow wraps SQLite's "database or disk is full"; torch wraps CUDA's out of memory."""
    ending = endings.EndingClassifier("sqlite:///" + str(tmp_path / "mlflow.db"),
                                      [("tracking.uri", tmp_path)], "cuda:1", "lower trainer.jobs_per_gpu")
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise MlflowException("(sqlite3.OperationalError) database or disk is full") from inner
    except MlflowException as exc:
        assert ending.of(exc).way == endings.ENVIRONMENT
    oom = ending.of(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert oom.way == endings.ENVIRONMENT and "cuda:1" in str(oom.fault)


def test_an_exception_is_recognised_once(tmp_path, monkeypatch):
    """tracked_run closes the run and the job's last step acts on the same ending: one reading."""
    calls = []
    real = faults.classify
    monkeypatch.setattr(faults, "classify", lambda *a, **k: calls.append(a) or real(*a, **k))
    ending = endings.EndingClassifier(str(tmp_path / "mlruns"), [("checkpoint.dir", tmp_path)])
    exc = _full(tmp_path)
    assert ending.of(exc) is ending.of(exc)
    assert len(calls) == 1


def test_an_ending_acted_on_lets_the_jobs_objects_go(tmp_path):
    """An exception's traceback holds the job's frames (its model, optimizer, GPU tensors): once
    the job has acted on it, the classifier must not keep it, or a process that runs several
    jobs (the basic launcher, a search) holds every failed job's model."""
    ending = endings.EndingClassifier(str(tmp_path / "mlruns"))
    held = []

    class Parts:
        pass

    def train():
        parts = Parts()
        held.append(weakref.ref(parts))
        raise ValueError("a bug")

    try:
        train()
    except ValueError as exc:
        assert ending.of(exc).way == endings.CODE_ERROR
        ending.forget(exc)
    gc.disable()  # freed by reference counting, not by a collection that may come later
    try:
        assert held[0]() is None
    finally:
        gc.enable()


def test_the_table_in_the_docs_is_the_one_the_code_reads():
    text = (ROOT / "docs" / "faults.md").read_text()
    for way, row in endings.WAYS.items():
        status = row.status or row.left
        exit_code = (f"raised: {row.raised}" if row.exit_code is endings.RAISED
                     else str(row.exit_code))
        line = (f"| {way} | {status} | {row.checkpoint} | {row.sweep} | "
                f"{'yes' if row.stops_sweep else 'no'} | {exit_code} |")
        assert line in text, line


# What each row tells the user, word for word: run r1 with its checkpoint, r2 before its first,
# no run made. (The job's last step prints it after "error: ", or logs it where `logged`.)
LINES = {
    endings.PRUNED: ["run r1: pruned after epoch 3", "run r2: pruned after epoch 3",
                     "run None: pruned after epoch 3"],
    endings.NAN: [f"run {r} failed: NonFiniteLossError: the training loss became nan"
                  for r in ("r1", "r2", None)],
    endings.BAD_VALUE: ["lr.value=0 is invalid (run r1: FAILED)",
                        "lr.value=0 is invalid (run r2: FAILED)", "lr.value=0 is invalid"],
    endings.ENVIRONMENT: [
        f"stopped by the environment: no space left on {{tmp}}; {kept}; free space on {{tmp}} and "
        "run the same command again"
        for kept in ("run r1 stopped, its checkpoint kept",
                     "run r2 stopped (it had no checkpoint yet: it starts over)",
                     "no run was created")],
    endings.TIME_LIMIT: [f"run {r} stopped: job 12 timed out" for r in ("r1", "r2", None)],
    endings.LOST_SERVER: [
        f"lost the tracking server {{uri}}: connection refused; {kept}: run the same command "
        "again when the server is back"
        for kept in ("the run's checkpoint is kept", "the run's checkpoint is kept",
                     "no run was created")],
}


@pytest.mark.parametrize("way", sorted(set(CASES) - {"finished"}))
def test_each_row_says_its_line(way, tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    ended = endings.EndingClassifier(uri, [("checkpoint.dir", tmp_path)], "cuda:0", "lower it").of(
        CASES[way](tmp_path))
    row = endings.WAYS[way]
    if way not in LINES:  # elsewhere: the job's own (from its state); an error in the code, a
        assert row.line is None  # signal: their exception goes on
        return
    (tmp_path / "r1.pt").write_bytes(b"")
    said = [row.line(ended, "r1", tmp_path / "r1.pt"), row.line(ended, "r2", tmp_path / "r2.pt"),
            row.line(ended, None, None)]
    assert said == [line.format(tmp=tmp_path, uri=uri) for line in LINES[way]]
    assert row.logged == (way == endings.PRUNED)  # not a failure: a log line, as the job's others


# Through the entrypoint: the rows a run ends by cheaply here (the others: test_env_faults.py,
# test_errors.py, test_hpo.py, test_server.py, test_real_cluster.py).

BOOM = '''
import torch.nn as nn
CALLS = [0]
class Boom(nn.Module):
    """Passes the check before the run (one batch), then fails in training: a bug in the code."""
    def __init__(self, num_classes=10):
        super().__init__()
        self.fc = nn.Linear(3 * 32 * 32, num_classes)
    def forward(self, x):
        CALLS[0] += 1
        if CALLS[0] > 2:
            raise ValueError("a bug in the model")
        return self.fc(x.flatten(1))
'''


def _checkpoints(project):
    return list((project.workdir / "checkpoints").rglob("*.pt"))


@pytest.mark.parametrize("way", ["finished", endings.BAD_VALUE, endings.CODE_ERROR])
def test_a_row_through_the_entrypoint(way, project):
    row = endings.WAYS[way]
    if way == endings.CODE_ERROR:  # the one case through the command: its exit 1 and traceback
        (project.workdir / "boom.py").write_text(BOOM)  # as src/train.py prints them
        proc = project.train("model._target_=boom.Boom", env={"PYTHONPATH": str(project.workdir)})
    else:  # the job's outcome: in this process
        proc = project.job(*(["lr.value=0"] if way == endings.BAD_VALUE else []))
    runs = project.runs()
    if way == endings.BAD_VALUE:  # found before any run
        assert proc.returncode == row.exit_code and runs == []
        [line] = proc.stderr.strip().splitlines()
        assert line.startswith("error: lr.value=0 is invalid"), proc.stderr
        return
    [run] = runs
    assert run.info.status == row.status
    assert _checkpoints(project) == []  # removed (finished: checkpoint.keep=false)
    if row.exit_code is endings.RAISED:  # an error in the code: its traceback, exit 1
        assert proc.returncode == 1 and "a bug in the model" in proc.stderr
        assert run.data.tags["failure_reason"] == "ValueError: a bug in the model"
    else:
        assert proc.returncode == row.exit_code, proc.stderr


def test_a_bad_value_in_a_sweep_names_its_job(tmp_path, monkeypatch, capsys):
    """Parallel jobs' lines interleave: a job's error line in a sweep says which job it is, as
    its log lines do ("#3 epoch ..."); alone, it is the bare "error: " line."""
    from hydra import compose, initialize_config_dir

    from cifar_sweep.job import steps
    from cifar_sweep.job.context import JobContext

    # the log-line prefix changes the root logger's formatters: not this test process's
    monkeypatch.setattr(steps, "_prefix_log_lines", lambda prefix: None)
    monkeypatch.chdir(tmp_path)
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[*FAST, "lr.value=0"])
    said = {}
    for ctx in (JobContext(sweep_dir=str(tmp_path / "sweep"), job_num=3), JobContext()):
        result = steps.run_job(cfg, ctx)
        [said[ctx.multirun]] = capsys.readouterr().err.strip().splitlines()
        assert result.state == "failed" and result.exit_code == (0 if ctx.multirun else 2)
    assert said[True].startswith("error: job #3: lr.value=0 is invalid"), said
    assert said[False] == said[True].replace("job #3: ", ""), said
    assert not (tmp_path / "mlruns").exists()  # found before any run


def test_a_signal_ends_as_its_row_says(project):
    """SIGTERM after an epoch: KILLED, the checkpoint kept, the status of the signal."""
    row = endings.WAYS[endings.SIGNAL]
    with open(project.workdir / "out.log", "w") as out:
        proc = subprocess.Popen([sys.executable, str(TRAIN), *FAST, "trainer.epochs=500"],
                                cwd=project.workdir, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            wait_for(lambda: _checkpoints(project), 120, "the first epoch's checkpoint")
            proc.terminate()
            proc.wait(timeout=60)
        finally:
            proc.kill()
    assert proc.returncode == 128 + 15
    [run] = project.runs()
    assert run.info.status == row.status and row.checkpoint == endings.KEPT
    assert run.data.tags["failure_reason"] == "interrupted"
    assert len(_checkpoints(project)) == 1
