"""Tests run a job in a scratch folder and read results back the way a user would: through
MLflow's client and the files written. `Project.job` runs one job in this process (its config
composed from conf/ as `src/train.py` composes it); `Project.train` runs the real entrypoint in a
subprocess, for what needs a process: sweeps and launchers, signals and kills, the command line."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pytest
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "src" / "train.py"
# Small and quick: 2,000 synthetic images, batch 64, one thread per process.
FAST = ["data=synthetic", "trainer.epochs=1", "trainer.num_threads=1"]
# what a job's log lines look like and which libraries are quieter: Hydra's job logging config
JOB_LOGGING = ROOT / "conf" / "hydra" / "job_logging" / "cifar_sweep.yaml"


@dataclass
class Ran:
    """One job run in-process, read as `subprocess.CompletedProcess` is: exit status and output."""

    returncode: int
    stdout: str
    stderr: str
    result: object = None  # the job's JobResult (None where it raised)


class Project:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.store = workdir / "mlruns"

    def run(self, *overrides: str, script: Path = TRAIN, check: bool | None = None,
            timeout: int = 600, env: dict[str, str | None] | None = None
            ) -> subprocess.CompletedProcess:
        """`env`: variables to set, or to remove where the value is None."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0", **(env or {})}
        env = {k: v for k, v in env.items() if v is not None}
        proc = subprocess.run([sys.executable, str(script), *overrides], cwd=self.workdir,
                              env=env, capture_output=True, text=True, timeout=timeout)
        if check is True and proc.returncode != 0:
            raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def train(self, *overrides: str, **kw) -> subprocess.CompletedProcess:
        # Hydra's argument parser needs -m/--multirun before the first override.
        flags = [o for o in overrides if o.startswith("-")]
        return self.run(*flags, *FAST, *[o for o in overrides if not o.startswith("-")], **kw)

    def job(self, *overrides: str, check: bool | None = None,
            env: dict[str, str | None] | None = None) -> Ran:
        """`python src/train.py <FAST> <overrides>` as one job in this process: the config
        composed by Hydra's compose API from conf/, `run_job` called in this folder; its log lines
        (stdout), errors (stderr) and exit status as the command's. A raised error is exit 1 and
        its traceback on stderr."""
        from hydra import compose, initialize_config_dir
        from omegaconf import open_dict

        from cifar_sweep.config.override_check import problem, sweep_flag_problem
        from cifar_sweep.job.steps import run_job
        from cifar_sweep.sweep import job_context

        # what src/train.py refuses before Hydra composes, refused here too: a conversion from
        # `train` cannot pass a command the entrypoint would not run
        line = sweep_flag_problem([*FAST, *overrides]) or problem([*FAST, *overrides])
        if line:
            ran = Ran(2, "", f"error: {line}\n")
        else:
            with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
                cfg = compose("config", overrides=[*FAST, *overrides], return_hydra_config=True)
            hydra = cfg.hydra
            with open_dict(cfg):
                del cfg["hydra"]
            with _job_process(self.workdir, env or {}) as (out, err):
                result, code = None, 1
                try:
                    result = run_job(cfg, job_context.from_hydra(hydra, cfg))
                    code = result.exit_code
                except Exception:
                    traceback.print_exc()
            ran = Ran(code, out.getvalue(), err.getvalue(), result)
        if check is True and ran.returncode != 0:
            raise AssertionError(f"exit {ran.returncode}\n{ran.stdout}\n{ran.stderr}")
        return ran

    @property
    def client(self) -> MlflowClient:
        return MlflowClient(tracking_uri=f"sqlite:///{self.store / 'mlflow.db'}")

    def sweep_report(self, experiment: str = "cifar-sweep") -> Path:
        """The newest sweep's folder that `src/report.py` (or a sweep's end) wrote for the
        experiment or preset study: results/<name>/<LATEST>, as a user finds it."""
        base = self.workdir / "results" / experiment
        return base / (base / "LATEST").read_text().strip()

    def runs(self, experiment: str = "cifar-sweep"):
        if not (self.store / "mlflow.db").exists():
            return []
        client = self.client
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            return []
        return client.search_runs([exp.experiment_id], max_results=1000)


@contextlib.contextmanager
def _job_process(workdir: Path, env: dict[str, str | None]):
    """What a job's own process gives it, for a job run in this one: its folder, its environment
    (`env`: variables to set, or to remove where None), stdout and stderr of its own (yielded), the
    job logging's lines and levels, no data kept in memory by an earlier job; the thread count it
    sets undone after it."""
    import torch
    from omegaconf import OmegaConf

    from cifar_sweep.data import cache

    cache._in_process.clear()

    config = OmegaConf.load(JOB_LOGGING)
    out, err = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(out)  # the console handler: stdout
    handler.setFormatter(logging.Formatter(config.formatters.simple.format,
                                           config.formatters.simple.datefmt))
    loggers = {"": config.root.level, **{name: spec.level for name, spec in config.loggers.items()}}
    levels = {name: logging.getLogger(name).level for name in loggers}
    threads = torch.get_num_threads()
    logging.getLogger().addHandler(handler)
    for name, level in loggers.items():
        logging.getLogger(name).setLevel(level)
    try:
        with mock.patch.dict(os.environ), contextlib.chdir(workdir), \
                contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            for key, value in env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            yield out, err
    finally:
        logging.getLogger().removeHandler(handler)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        torch.set_num_threads(threads)


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path)


def free_port() -> int:
    """A loopback port nothing listens on when asked (a server to start there, or a closed one)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class UI:
    """A `make ui` that answers: its base URL, its process (make, which exec's mlflow), and once
    it has ended what it printed."""

    base: str
    process: subprocess.Popen
    printed: str = ""


@contextlib.contextmanager
def make_ui(*args: str, project_dir: Path = ROOT, timeout: float = 120):
    """`make ui <args>` as a user types it (`args`: STORE=...), in `project_dir`'s Makefile with
    this Python, on a free loopback port, in a session of its own; yields a `UI` once it answers
    /health; then ends it (make and its mlflow, by the session) and keeps what it printed."""
    port = free_port()
    server = subprocess.Popen(["make", "-C", str(project_dir), "ui", *args, f"PORT={port}",
                               f"PYTHON={sys.executable}"], cwd=project_dir,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)
    ui = UI(f"http://127.0.0.1:{port}", server)
    try:
        wait_for(lambda: _answers(ui), timeout, "make ui to answer", step=1)
        yield ui
    finally:  # (a make ui that ended by itself has no session left to signal)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            ui.printed, _ = server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGKILL)
            ui.printed, _ = server.communicate()


def _answers(ui: UI) -> bool:
    import urllib.request

    assert ui.process.poll() is None, f"make ui ended: {ui.process.communicate()[0]}"
    try:
        urllib.request.urlopen(f"{ui.base}/health", timeout=2)
        return True
    except OSError:
        return False


def wait_for(predicate, timeout: float, what: str, step: float = 0.5):
    """Poll `predicate` until it returns something truthy, at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def hand_made_table(rows: dict[str, dict[str, dict[str, float]]], baseline: str,
                    kind: str = "Ablation"):
    """A table of hand-made runs of one sweep, without a store: `rows` is an lr.value label ->
    seed -> the run's metrics; `baseline` the label compared against. The runs start a second
    apart, in this order."""
    import pandas as pd

    from cifar_sweep.report.rows import records
    from cifar_sweep.report.selection import choose
    from cifar_sweep.report.studies import Table, TableSpec
    from cifar_sweep.results import _frame

    start = pd.Timestamp("2026-01-01")
    runs = []
    for job, (label, by_seed) in enumerate(rows.items()):
        for seed, metrics in by_seed.items():
            runs.append({
                "run_id": f"{label}-{seed}", "status": "FINISHED", "sweeps": "A", "seed": seed,
                "start_time": start + pd.Timedelta(seconds=len(runs)), "role": "job",
                "setting_hash": f"s-{label}", "code_version": "c1", "git_commit": "0" * 40,
                "code.model": "m1", "data_fingerprint": "fp", "precision": "fp32",
                "device": "cpu", "job_num": str(job),
                "overrides": f"lr.value={label} trainer.seed={seed}", "lr.value": label,
                "trainer.seed": seed, "tracking.uri": "mlruns", **metrics})
    metric_names = {name for by_seed in rows.values() for m in by_seed.values() for name in m}
    jobs = _frame(runs, {"lr.value", "trainer.seed", "tracking.uri"}, metric_names)
    sweeps = pd.DataFrame([{"run_id": "A", "start_time": start,
                            "varying": "lr.value trainer.seed"}])
    selection = choose(jobs, sweeps, baseline=f"lr.value={baseline}")
    return Table(TableSpec("hand-made", "hand-made", kind=kind), jobs, selection,
                 records(jobs, selection), {"data": "hand-made", "data_fingerprint": "-"})
