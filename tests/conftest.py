"""Tests run a job in a scratch folder and read results back the way a user would: through
MLflow's client and the files written. `Project.job` runs one job in this process (its config
composed from conf/ as `src/train.py` composes it); `Project.train` runs the real entrypoint in a
subprocess, for what needs a process: sweeps and launchers, signals and kills, the command line."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "src" / "train.py"
# Small and quick: 2,000 synthetic images, batch 64, one thread per process.
FAST = ["data=synthetic", "trainer.epochs=1", "trainer.num_threads=1"]


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
        import torch
        from hydra import compose, initialize_config_dir
        from omegaconf import open_dict

        from cifar_sweep.config.override_check import problem, sweep_flag_problem
        from cifar_sweep.data import cache
        from cifar_sweep.job.steps import run_job
        from cifar_sweep.sweep import job_context

        # what src/train.py refuses before Hydra composes, refused here too: a conversion from
        # `train` cannot pass a command the entrypoint would not run
        line = sweep_flag_problem([*FAST, *overrides]) or problem([*FAST, *overrides])
        if line:
            if check is True:
                raise AssertionError(f"exit 2\nerror: {line}")
            return Ran(2, "", f"error: {line}\n")
        with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("config", overrides=[*FAST, *overrides], return_hydra_config=True)
        hydra = cfg.hydra
        with open_dict(cfg):
            del cfg["hydra"]
        out, err = io.StringIO(), io.StringIO()
        handler = logging.StreamHandler(out)  # conf/hydra/job_logging/cifar_sweep.yaml's console
        handler.setFormatter(logging.Formatter("[%(asctime)s] %(message)s", "%H:%M:%S"))
        root, level = logging.getLogger(), logging.getLogger().level
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        quiet = {name: logging.getLogger(name).level for name in ("alembic", "mlflow", "urllib3")}
        for name in quiet:  # as the job logging's config has them
            logging.getLogger(name).setLevel(logging.WARNING)
        result, code = None, 0
        # as a new process starts: no data kept in memory by an earlier job; its thread count back
        cache._in_process.clear()
        threads = torch.get_num_threads()
        with _environ(env or {}), _cwd(self.workdir), contextlib.redirect_stdout(out), \
                contextlib.redirect_stderr(err):
            try:
                result = run_job(cfg, job_context.from_hydra(hydra, cfg))
                code = result.exit_code
            except Exception:
                traceback.print_exc()
                code = 1
            finally:
                root.removeHandler(handler)
                root.setLevel(level)
                torch.set_num_threads(threads)
                for name, before in quiet.items():
                    logging.getLogger(name).setLevel(before)
        ran = Ran(code, out.getvalue(), err.getvalue(), result)
        if check is True and code != 0:
            raise AssertionError(f"exit {code}\n{ran.stdout}\n{ran.stderr}")
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
def _cwd(path: Path):
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


@contextlib.contextmanager
def _environ(changes: dict[str, str | None]):
    """Set (or, where the value is None, remove) environment variables for the block."""
    before = {k: os.environ.get(k) for k in changes}
    for key, value in changes.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path)


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
