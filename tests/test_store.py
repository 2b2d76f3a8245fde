"""The local store under concurrency and bad locations: several `src/train.py` processes started at
once against one fresh store, and a store folder that cannot be written (one job, in-process)."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import FAST, TRAIN


def train_at_once(workdir: Path, uri: str, count: int, timeout: int = 900):
    """Start `count` runs (seeds 0..count-1) at the same moment; wait for all of them."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs = [subprocess.Popen([sys.executable, str(TRAIN), *FAST, "hydra/launcher=basic",
                               f"trainer.seed={seed}", f"tracking.uri={uri}"],
                              cwd=workdir, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
             for seed in range(count)]
    deadline = time.monotonic() + timeout
    try:
        outputs = [p.communicate(timeout=max(1, deadline - time.monotonic()))[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
            p.wait()
    return [(p.returncode, out) for p, out in zip(procs, outputs)]


def check_all_finished(db: Path, results, count: int) -> None:
    for code, out in results:
        assert code == 0 and "Traceback" not in out, out
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    [experiment] = [e for e in client.search_experiments() if e.name == "cifar-sweep"]
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == count
    assert all(r.info.status == "FINISHED" for r in runs)
    assert sorted(r.data.params["trainer.seed"] for r in runs) == [str(s) for s in range(count)]
    for run in runs:  # nothing lost: every epoch, the test metrics, the artifacts
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")] == [1]
        assert "test_accuracy" in run.data.metrics
        assert "best_weights.pt" in {a.path for a in client.list_artifacts(run.info.run_id)}


@pytest.mark.slow  # over a minute on the 2-core CPU: make test-full (a default test covers its core)
def test_four_processes_at_once_on_a_fresh_folder_store(tmp_path):
    results = train_at_once(tmp_path, "store", 4)
    check_all_finished(tmp_path / "store" / "mlflow.db", results, 4)


@pytest.mark.slow
def test_soak_eight_processes_at_once_on_a_fresh_sqlite_uri(tmp_path):
    db = tmp_path / "elsewhere" / "runs.db"
    results = train_at_once(tmp_path, f"sqlite:///{db}", 8)
    check_all_finished(db, results, 8)


def test_store_where_a_file_is_is_one_line_and_no_run(project):
    (project.workdir / "taken").write_text("")
    proc = project.job("tracking.uri=taken/store")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == (f"error: tracking.uri=taken/store is not writable: cannot write in "
                           f"{project.workdir / 'taken' / 'store'} (Not a directory); choose a "
                           "folder you can write to\n")
    assert "Traceback" not in proc.stdout
    assert not (project.workdir / "mlruns").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write in any folder")
def test_read_only_store_folder_is_one_line_and_no_run(project):
    store = project.workdir / "store"
    store.mkdir()
    store.chmod(0o555)
    try:
        proc = project.job(f"tracking.uri={store}")
    finally:
        store.chmod(0o755)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == (f"error: tracking.uri={store} is not writable: cannot write in {store} "
                           "(permission denied); choose a folder you can write to\n")
    assert list(store.iterdir()) == []


def test_read_only_store_message(tmp_path, monkeypatch):
    """The same check in-process, where the test cannot make a folder unwritable (as root)."""
    from cifar_sweep.errors import UserInputError
    from cifar_sweep.tracking import store

    monkeypatch.setattr(store.os, "access", lambda path, mode: False)
    with pytest.raises(UserInputError, match=r"^tracking.uri=s is not writable: cannot write in "
                                             r".* \(permission denied\); choose a folder"):
        store.prepare_sqlite(tmp_path / "s" / "mlflow.db", "sqlite:///unused", "s")
    assert list((tmp_path / "s").iterdir()) == []
