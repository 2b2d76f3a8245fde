"""Tests run the real entrypoint in a subprocess, in a scratch folder, and read results back the
way a user would: through MLflow's client and the files written."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "src" / "train.py"
# Small and quick: 2,000 synthetic images, batch 64, one thread per process.
FAST = ["data=synthetic", "trainer.epochs=1", "trainer.num_threads=1"]


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
