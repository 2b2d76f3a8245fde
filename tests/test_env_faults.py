"""A full disk, a read-only store, a GPU out of memory: the run ends KILLED with its checkpoint
kept, a sweep stops early (exit 75), and the same command afterwards continues.

Real faults where this machine allows (a small tmpfs when running as root); elsewhere an
injected one: a `sitecustomize` written by the test, put first on the subprocess's PYTHONPATH,
raises the error (ENOSPC at the artifact upload, torch's OutOfMemoryError in an epoch). A single
run is a job in this process (`project.job`): the same code run here (`injected`), undone after
it. It is a test file only; nothing in src/ knows of it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import FAST, ROOT, TRAIN

EXIT_STOPPED = 75

HOOK = '''
import errno, os
fault = os.environ.get("CIFAR_SWEEP_TEST_FAULT", "")
if fault == "artifacts_enospc":  # every artifact upload finds the store's disk full
    from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

    def log_artifacts(self, local_dir, artifact_path=None):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.artifact_dir)

    LocalArtifactRepository.log_artifacts = log_artifacts
elif fault == "artifacts_erofs":  # the store's file system turned read-only (a disk error)
    from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

    def log_artifacts(self, local_dir, artifact_path=None):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), self.artifact_dir)

    LocalArtifactRepository.log_artifacts = log_artifacts
elif fault.startswith("oom:"):  # oom:<job>:<epoch>: that job's epoch runs out of GPU memory
    import torch
    from hydra.core.hydra_config import HydraConfig

    import cifar_sweep.train.loop as training

    job, epoch = (int(x) for x in fault.split(":")[1:])
    real, calls = training.train_epoch, {}

    def train_epoch(p):
        # a job in this process (project.job) has no Hydra runtime: a job alone, job 0
        num = int(HydraConfig.get().job.get("num") or 0) if HydraConfig.initialized() else 0
        calls[num] = calls.get(num, 0) + 1
        if num == job and calls[num] == epoch:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(p)

    training.train_epoch = train_epoch
'''


@pytest.fixture
def inject(tmp_path):
    """env for project.train that injects `fault` into the entrypoint and its workers."""
    hook = tmp_path / "fault_hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(HOOK)

    def env(fault: str) -> dict[str, str]:
        path = os.pathsep.join([str(hook), str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])
        return {"CIFAR_SWEEP_TEST_FAULT": fault, "PYTHONPATH": path}
    return env


@contextlib.contextmanager
def injected(fault: str):
    """HOOK's `fault` in this process, for project.job (a sitecustomize runs only as a process
    starts): the same code run here, its patches undone after the block."""
    from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

    import cifar_sweep.train.loop as training

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(LocalArtifactRepository, "log_artifacts",  # restored on leaving
                      LocalArtifactRepository.log_artifacts)
        patch.setattr(training, "train_epoch", training.train_epoch)
        patch.setenv("CIFAR_SWEEP_TEST_FAULT", fault)
        exec(HOOK, {"__name__": "fault_hook"})
        patch.delenv("CIFAR_SWEEP_TEST_FAULT")  # read once, as the sitecustomize reads it
        yield


def jobs(project):
    return {r.data.params["lr.value"]: r for r in project.runs()
            if r.data.tags.get("cifar_sweep.role") == "job"}


def epochs_logged(project, run_id: str) -> list[int]:
    return sorted(m.step for m in project.client.get_metric_history(run_id, "val_accuracy"))


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


def checkpoints(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.pt")) if folder.exists() else []


@pytest.mark.slow  # over a minute on the 2-core CPU: make test-full (a default test covers its core)
def test_full_disk_at_the_upload_stops_the_sweep_and_the_same_command_logs_it_untrained(
        project, inject):
    # a fixed sweep folder: the stop marker the first command leaves there must not stop the next
    sweep = ("-m", "hydra/launcher=basic", "lr.value=0.01,0.02,0.03", "trainer.epochs=2",
             "hydra.sweep.dir=sweep")
    proc = project.train(*sweep, env=inject("artifacts_enospc"))
    assert proc.returncode == EXIT_STOPPED, proc.stderr
    store = project.workdir / "mlruns"
    assert error_lines(proc.stderr)[-1] == (
        f"error: the sweep stopped early: no space left on {store} (job #0); 2 of 3 jobs did not "
        f"start; free space on {store} and run the same command again: killed runs continue "
        f"from their checkpoints, finished ones are skipped (exit 75)")
    assert "Traceback" not in proc.stderr
    [killed] = jobs(project).values()  # the other two jobs made no run
    assert killed.info.status == "KILLED"
    assert killed.data.tags["failure_reason"] == f"interrupted: no space left on {store}"
    assert epochs_logged(project, killed.info.run_id) == [1, 2]  # what it logged stays
    [kept] = checkpoints(project.workdir / "checkpoints")
    assert kept.stem == killed.info.run_id
    assert (project.workdir / "sweep" / "stopped_by_environment.json").is_file()

    again = project.train(*sweep, check=True)
    # the trained run is evaluated and logged from its checkpoint, not trained again
    assert "trained (2 epochs): evaluating and logging it from its checkpoint" in again.stdout
    assert "#0 epoch" not in again.stdout
    after = jobs(project)
    assert {lr: r.info.status for lr, r in after.items()} == dict.fromkeys(
        ("0.01", "0.02", "0.03"), "FINISHED")
    assert after["0.01"].info.run_id == killed.info.run_id
    assert "failure_reason" not in after["0.01"].data.tags
    assert "test_accuracy" in after["0.01"].data.metrics
    for run in after.values():
        assert epochs_logged(project, run.info.run_id) == [1, 2]  # each epoch once
    artifacts = {a.path for a in project.client.list_artifacts(killed.info.run_id)}
    assert {"best_weights.pt", "evaluation.json"} <= artifacts
    assert checkpoints(project.workdir / "checkpoints") == []


@pytest.mark.slow  # the parallel launcher's worker processes: about 70 s (137 s on a loaded CPU)
def test_gpu_out_of_memory_stops_a_parallel_sweep_and_the_same_command_continues(
        project, inject):
    # two workers: job 0 runs out of memory in its second epoch while job 1 trains beside it;
    # job 2 would start after job 0, and does not
    sweep = ("-m", "hydra.launcher.n_jobs=2", "lr.value=0.01,0.02,0.03", "trainer.epochs=3")
    proc = project.train(*sweep, env=inject("oom:0:2"))
    assert proc.returncode == EXIT_STOPPED, proc.stderr
    last = error_lines(proc.stderr)[-1]
    assert last.startswith("error: the sweep stopped early: out of GPU memory on cpu (job #0); "
                           "1 of 3 jobs did not start; lower trainer.jobs_per_gpu (now 1) or "
                           "trainer.batch_size (now 64"), last
    before = jobs(project)
    assert before["0.01"].info.status == "KILLED"
    assert before["0.01"].data.tags["failure_reason"] == "interrupted: out of GPU memory on cpu"
    assert before["0.02"].info.status == "FINISHED" and "0.03" not in before
    [kept] = checkpoints(project.workdir / "checkpoints")
    assert torch.load(kept, weights_only=True)["progress"]["epoch"] == 1

    again = project.train(*sweep, check=True)
    assert "continuing from epoch 2" in again.stdout
    after = jobs(project)
    assert all(r.info.status == "FINISHED" for r in after.values()) and len(after) == 3
    assert after["0.01"].info.run_id == before["0.01"].info.run_id
    for run in after.values():
        assert epochs_logged(project, run.info.run_id) == [1, 2, 3]


@pytest.mark.slow  # in `make test-full`: the default suite stays under about 12 minutes
def test_single_run_out_of_gpu_memory_exits_75_and_the_same_command_continues(project):
    with injected("oom:0:2"):
        proc = project.job("trainer.epochs=2")
    assert proc.returncode == EXIT_STOPPED, proc.stderr
    [line] = error_lines(proc.stderr)
    [run] = jobs(project).values()
    assert line == (f"error: stopped by the environment: out of GPU memory on cpu; run "
                    f"{run.info.run_id} stopped, its checkpoint kept; free the GPU of other "
                    "processes or lower trainer.batch_size (now 64: a new batch size starts "
                    "anew), and run the same command again")
    assert run.info.status == "KILLED"
    project.job("trainer.epochs=2", check=True)
    [run] = jobs(project).values()
    assert run.info.status == "FINISHED" and epochs_logged(project, run.info.run_id) == [1, 2]
    # (a NaN loss, a fault of the run, stays FAILED: tests/test_errors.py)


@pytest.mark.slow  # in `make test-full`: the default suite stays under about 12 minutes
def test_store_turned_read_only_kills_the_run_and_the_same_command_logs_it(project):
    # injected: a tmpfs whose files are open cannot be remounted read-only ("mount point is
    # busy"); a disk's file system turns read-only by itself after an error
    with injected("artifacts_erofs"):
        proc = project.job("trainer.epochs=2")
    assert proc.returncode == EXIT_STOPPED, proc.stderr
    store = project.workdir / "mlruns"
    [run] = jobs(project).values()
    assert error_lines(proc.stderr) == [
        f"error: stopped by the environment: read-only file system on {store}; run "
        f"{run.info.run_id} stopped, its checkpoint kept; make {store} writable again and run "
        "the same command again"]
    assert run.info.status == "KILLED"
    assert run.data.tags["failure_reason"] == f"interrupted: read-only file system on {store}"
    again = project.job("trainer.epochs=2", check=True)
    assert "evaluating and logging it from its checkpoint" in again.stdout
    [run] = jobs(project).values()
    assert run.info.status == "FINISHED" and epochs_logged(project, run.info.run_id) == [1, 2]


# ---- real faults: a small tmpfs, when this process may mount one ----

@contextlib.contextmanager
def tmpfs(folder: Path, size: str):
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("a real full disk needs a tmpfs mount: run as root")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path) -> Path:
    """Write until the file system is full, as another process would."""
    ballast = folder / "ballast"
    with open(ballast, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return ballast


def train_until(project, needle: str, then, *overrides: str) -> subprocess.CompletedProcess:
    """Run the entrypoint; call `then()` as soon as `needle` appears in its output."""
    flags = [o for o in overrides if o.startswith("-")]
    args = [sys.executable, str(TRAIN), *flags, *FAST, *[o for o in overrides if o not in flags]]
    proc = subprocess.Popen(args, cwd=project.workdir, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    seen, done = [], False
    try:
        for line in proc.stdout:
            seen.append(line)
            if not done and needle in line:
                then()
                done = True
        proc.wait(timeout=300)
    finally:
        proc.kill()
        proc.wait()
    assert done, "".join(seen)
    return subprocess.CompletedProcess(args, proc.returncode, "".join(seen), "")


def test_real_full_disk_under_the_checkpoints_stops_the_sweep_then_it_continues(project):
    folder = project.workdir / "ckpt"
    sweep = ("-m", "hydra/launcher=basic", "lr.value=0.01,0.02", "trainer.epochs=3",
             "model=origin_net", f"checkpoint.dir={folder}")
    with tmpfs(folder, "8m"):
        ballast = []
        proc = train_until(project, "#0 epoch 1/3", lambda: ballast.append(fill(folder)), *sweep)
        assert proc.returncode == EXIT_STOPPED, proc.stdout
        last = error_lines(proc.stdout)[-1]
        assert last.startswith(f"error: the sweep stopped early: no space left on {folder} "
                               f"(job #0); 1 of 2 jobs did not start; free space on {folder} "
                               "and run the same command again"), last
        [killed] = jobs(project).values()
        assert killed.info.status == "KILLED"
        assert killed.data.tags["failure_reason"] == f"interrupted: no space left on {folder}"
        # the failed write left no temporary file, and the previous checkpoint whole
        assert [p.name for p in folder.rglob("*") if p.is_file() and p != ballast[0]] == [
            f"{killed.info.run_id}.pt"]
        [kept] = checkpoints(folder)
        epoch = torch.load(kept, weights_only=True)["progress"]["epoch"]
        assert epoch in (1, 2) and epochs_logged(project, killed.info.run_id) == list(
            range(1, epoch + 1))

        ballast[0].unlink()  # space freed: the same command continues
        again = project.train(*sweep, check=True)
        assert f"continuing from epoch {epoch + 1}" in again.stdout
        after = jobs(project)
        assert len(after) == 2 and all(r.info.status == "FINISHED" for r in after.values())
        assert after["0.01"].info.run_id == killed.info.run_id
        for run in after.values():
            assert epochs_logged(project, run.info.run_id) == [1, 2, 3]


@pytest.mark.slow  # in `make test-full`: the default suite stays under about 12 minutes
def test_real_full_store_mid_run_then_the_same_command_continues(project):
    store = project.workdir / "store"
    run = ("trainer.epochs=3", "model=origin_net", f"tracking.uri={store}")
    with tmpfs(store, "32m"):
        ballast = []
        proc = train_until(project, "epoch 1/3", lambda: ballast.append(fill(store)), *run)
        assert proc.returncode == EXIT_STOPPED, proc.stdout
        [line] = error_lines(proc.stdout)
        assert line.startswith(f"error: stopped by the environment: no space left on {store}; "
                               "run "), line
        [kept] = checkpoints(project.workdir / "checkpoints")
        ballast[0].unlink()
        project.store = store
        [ghost] = jobs(project).values()
        assert ghost.info.status in ("RUNNING", "KILLED")
        project.job(*run, check=True)  # the fill above needs a process; this needs none
        [after] = jobs(project).values()
        assert after.info.run_id == kept.stem and after.info.status == "FINISHED"
        assert epochs_logged(project, after.info.run_id) == [1, 2, 3]


@pytest.mark.slow  # up to a minute on the 2-core CPU: make test-full (a default test covers its core)
def test_too_little_space_is_one_line_before_any_job_and_a_narrow_margin_a_warning(project):
    folder = project.workdir / "ckpt"
    with tmpfs(folder, "2m"):
        # two MobileNetV2 jobs: a 36 MB checkpoint each, on 2 MB
        proc = project.train("-m", "hydra/launcher=basic", "model=mobilenet_v2", "trainer.seed=0,1",
                             f"checkpoint.dir={folder}")
        assert proc.returncode == 2, proc.stderr
        [line] = error_lines(proc.stderr)
        assert line.startswith(f"error: not enough free space for this sweep: checkpoint.dir="
                               f"{folder} has 2.1 MB free, and its 2 jobs to train write about "), line
        assert project.runs() == []

        # ModifiedNet: a 0.62 MB checkpoint and its temporary copy, 1.3 MB of 2.1: a warning
        proc = project.train("-m", "hydra/launcher=basic", f"checkpoint.dir={folder}",
                             check=True)
        assert f"warning: narrow free space: checkpoint.dir={folder} has 2.1 MB free" in proc.stderr
        assert [r.info.status for r in project.runs()
                if r.data.tags.get("cifar_sweep.role") == "job"] == ["FINISHED"]
