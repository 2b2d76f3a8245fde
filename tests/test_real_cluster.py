"""On real clusters, brought up on this machine by tests/clusters/*.sh (root, loopback): SLURM
22.05 with and without accounting, through `src/train.py -m hydra/launcher=slurm` and the real
sbatch, squeue, scancel. `make test-cluster` runs them (marker `cluster`, not in the default
suite); where the cluster cannot come up (not root, no packages) they skip and say why."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cifar_sweep.sweep_folder import PARENT_FILE
from conftest import ROOT, TRAIN, wait_for

pytestmark = pytest.mark.cluster

SLURM_SH = ROOT / "tests" / "clusters" / "slurm.sh"
# tiny jobs that fit a small node: one core, no GPU, 1 GB
SLURM = ["hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1",
         "hydra.launcher.gpus_per_node=null", "hydra.launcher.mem_gb=1", "data=synthetic"]


def _script(script: Path, *args: str, env: dict | None = None) -> None:
    proc = subprocess.run([str(script), *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})
    if proc.returncode == 3:  # not root, or no packages: say so, never pass
        pytest.skip(f"{script.name} {' '.join(args)}: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture(scope="session")
def slurm_down():
    """The cluster's daemons are stopped (by pid) once the session ends, whatever mode it ran."""
    yield
    subprocess.run([str(SLURM_SH), "down"], capture_output=True, timeout=300)


@pytest.fixture(params=["no accounting", "accounting"])
def slurm(request, slurm_down):
    """The cluster in each mode (switching restarts its daemons; a few seconds)."""
    _script(SLURM_SH, "up", *(["--accounting"] if request.param == "accounting" else []))
    return request.param


@pytest.fixture
def slurm_plain(slurm_down):
    _script(SLURM_SH, "up")


def _queue() -> list[str]:
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T"], capture_output=True, text=True,
                         timeout=60).stdout
    return out.splitlines()


def _wait(predicate, timeout: float, what: str):
    return wait_for(predicate, timeout, what, step=1.0)  # a cluster's answers come in seconds


def _logs(workdir: Path, task: str | None = None) -> str:
    """The jobs' logs, or one array task's: submitit names them .submitit/<array>_<task>/
    <array>_<task>_<rank>_log.out, and the rank is 0 for every job, so the folder says which."""
    folder = "*" if task is None else f"*_{task}"
    return "".join(p.read_text(errors="replace") for p in sorted(
        (workdir / "multirun").glob(f"*/*/.submitit/{folder}/*_log.out")))


def _start(project, *overrides: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(TRAIN), "-m", *SLURM, *overrides], cwd=project.workdir,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0"})


def _finish(sweep: subprocess.Popen, timeout: float = 600) -> tuple[str, str]:
    try:
        return sweep.communicate(timeout=timeout)
    finally:
        if sweep.poll() is None:
            sweep.kill()
            sweep.wait(timeout=60)


def _jobs(project):
    return [r for r in project.runs() if r.data.tags.get("cifar_sweep.role") == "job"]


def _epochs(project, run_id: str) -> list[int]:
    return [m.step for m in project.client.get_metric_history(run_id, "val_accuracy")]


def test_threads_follow_the_allocated_cpus_with_task_none(project, slurm_down):
    """task/none pins nothing: the job still takes the cpus_per_task it was given, not the node."""
    _script(SLURM_SH, "up", env={"TASK_PLUGIN": "task/none"})
    try:
        proc = project.run("-m", *SLURM, "trainer.epochs=1", timeout=600)
    finally:
        _script(SLURM_SH, "up")  # the other tests' task/affinity
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [job] = _jobs(project)
    assert job.info.status == "FINISHED"
    assert job.data.tags["num_threads"] == "1"


def test_a_preset_the_cluster_cannot_run_is_one_line_before_any_run(project, slurm_plain):
    for bad, named in [("hydra.launcher.gpus_per_node=1", "hydra.launcher.gpus_per_node=1"),
                       ("hydra.launcher.partition=nowhere", "hydra.launcher.partition=nowhere"),
                       ("hydra.launcher.mem_gb=100000", "hydra.launcher.mem_gb=100000")]:
        proc = project.run("-m", *SLURM, "trainer.epochs=1", bad, timeout=300)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        [line] = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
        assert named in line and "this cluster refuses it" in line, proc.stderr
        assert "Traceback" not in proc.stderr
    assert project.runs() == []  # no parent run, no job: nothing was submitted
    assert not _queue()


def test_a_cancelled_job_is_one_line_and_the_same_command_continues_it(project, slurm):
    """scancel mid-training: the job stops within seconds (SIGTERM), its run KILLED with its
    checkpoint; the array's other job finishes watched; the command returns soon after, non-zero,
    with one line naming the job; the same command continues the run, each epoch logged once."""
    epochs = "trainer.epochs=25"
    args = (epochs, "optimizer=sgd,adam", "checkpoint.keep=true")
    sweep = _start(project, *args)
    try:
        _wait(lambda: "epoch 3/25" in _logs(project.workdir, "0"), 400, "job 0's third epoch")
        [job0] = [line.split()[0] for line in _queue() if line.split()[0].endswith("_0")]
        cancelled = time.monotonic()
        subprocess.run(["scancel", job0], check=True, timeout=60)
        _wait(lambda: not any(line.startswith(job0 + " ") for line in _queue()), 25,
              f"{job0} to leave the queue well before KillWait (30 s)")
        stopped_after = time.monotonic() - cancelled
        _wait(lambda: not _queue(), 400, "job 1 to end")
        queue_empty = time.monotonic()
        out, err = _finish(sweep)
        returned_after = time.monotonic() - queue_empty
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert stopped_after < 25
    assert returned_after < 60, f"the command returned {returned_after:.0f} s after the last job"
    assert sweep.returncode not in (0, None), out + err
    lines = [x for x in err.splitlines() if job0 in x]
    assert len(lines) == 1 and re.search(rf"SLURM job {job0} \(#0 [^)]*optimizer=sgd[^)]*\) "
                                         r"ended CANCELLED", lines[0]), err
    assert "Traceback" not in err and "Bypassing sacct" not in err
    runs = {r.data.tags["optimizer"]: r for r in _jobs(project)}
    assert runs["sgd"].info.status == "KILLED", runs["sgd"].data.tags.get("failure_reason")
    assert runs["adam"].info.status == "FINISHED" and "failure_reason" not in runs["adam"].data.tags
    assert all(r.info.status != "RUNNING" for r in project.runs())
    assert list((project.workdir / "checkpoints").rglob("*.pt"))
    done = len(_epochs(project, runs["sgd"].info.run_id))
    assert 3 <= done < 25

    again = project.run("-m", *SLURM, *args, timeout=900)
    assert again.returncode == 0, again.stdout + again.stderr
    # from its checkpoint: the epoch after the last logged one (or one more, where the job was
    # killed between writing the checkpoint and logging that epoch)
    resumed = re.findall(r"continuing from epoch (\d+)\b", _logs(project.workdir))
    assert [int(e) for e in resumed] in ([done + 1], [done + 2]), _logs(project.workdir)
    sgd = project.client.get_run(runs["sgd"].info.run_id)
    assert sgd.info.status == "FINISHED" and "failure_reason" not in sgd.data.tags
    assert _epochs(project, sgd.info.run_id) == list(range(1, 26))



@pytest.mark.slow  # 3 to 5 minutes: `pytest -m cluster tests/test_real_cluster.py`, not in CI
def test_a_job_over_its_time_limit_continues_one_run_across_attempts(project, slurm_plain):
    """SIGUSR2 signal_delay_s before the limit: submitit requeues the job, whose next attempt
    continues the same run; one run in the end, each epoch logged once."""
    proc = project.run("-m", *SLURM, "trainer.epochs=80", "hydra.launcher.timeout_min=2",
                       "hydra.launcher.signal_delay_s=60", "hydra.launcher.max_num_timeout=6",
                       timeout=1500)
    log = _logs(project.workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr + log
    assert "this job is timed-out" in log and "continuing from epoch" in log, log
    [job] = _jobs(project)
    assert job.info.status == "FINISHED" and "failure_reason" not in job.data.tags
    assert _epochs(project, job.info.run_id) == list(range(1, 81))

# --- Ray: a head and a worker node, each its own `ray start` --------------------------------------

RAY_SH = ROOT / "tests" / "clusters" / "ray.sh"
RAY_PORT = "6390"


@pytest.fixture(scope="session")
def ray_cluster():
    """The [ray] extra pins joblib 1.5 (cloudpickle<3): it lives in its own venv, RAY_PYTHON."""
    python = os.environ.get("RAY_PYTHON")
    if not python:
        pytest.skip("RAY_PYTHON is not set: a python with the [ray] extra "
                    "(make test-cluster RAY_PYTHON=.venv-ray/bin/python)")
    python = str(Path(python).absolute())  # the jobs run in the test's own folder
    env = {"PYTHON": python, "RAY_PORT": RAY_PORT}
    _script(RAY_SH, "up", env=env)
    yield python
    subprocess.run([str(RAY_SH), "down"], capture_output=True, timeout=300,
                   env={**os.environ, **env})


def _node_pids(name: str) -> set[int]:
    """The processes of one node: those its `ray start` started, followed by parent pid (a
    task's worker leads a process group of its own, so the group is not enough)."""
    leader = int(Path(os.environ.get("CLUSTER_STATE", "/var/tmp/cifar-sweep-ray"),
                      f"{name}.pid").read_text())
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    pids, todo = set(), [leader]
    while todo:
        pid = todo.pop()
        pids.add(pid)
        todo.extend(children.get(pid, []))
    return pids


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_ray_sweep_spreads_over_both_nodes_and_a_lost_node_is_one_line(project, ray_cluster):
    """Two jobs, one CPU per node: one on each. The worker's raylet SIGKILLed mid-job: one line
    naming the job, the other job finishes, nothing RUNNING, non-zero; the same command (once
    the worker is back) continues the lost run, each epoch logged once."""
    work = project.workdir
    args = ["-m", "hydra/launcher=ray_tasks", f"hydra.launcher.ray.init.address=127.0.0.1:{RAY_PORT}",
            f"hydra.sweep.dir={work / 'multirun' / 'ray'}", f"tracking.uri={work / 'mlruns'}",
            f"checkpoint.dir={work / 'checkpoints'}", "data=synthetic", "trainer.epochs=40",
            "checkpoint.keep=true", "optimizer=sgd,adam"]
    # as the cluster (ray.sh): without token authentication
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0", "RAY_AUTH_MODE": "disabled"}
    sweep = subprocess.Popen([ray_cluster, str(TRAIN), *args], cwd=work, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def on_both():  # a task's worker titles itself ray::<function> (idle workers do not)
            jobs = {n: [p for p in _node_pids(n) if "ray::_run_job" in _cmdline(p)]
                    for n in ("head", "worker")}
            return jobs if all(jobs.values()) else None
        # the store is read once the sweep has made it (its parent run's id file): a client
        # opening a SQLite file that another process is still creating races its migrations
        _wait(lambda: (work / "multirun" / "ray" / PARENT_FILE).is_file(), 300, "the sweep's start")
        _wait(on_both, 300, "a job on each node")
        _wait(lambda: len([r for r in _jobs(project) if project.client.get_metric_history(
            r.info.run_id, "val_accuracy")]) == 2, 300, "both jobs' first epoch")
        [raylet] = [p for p in _node_pids("worker") if "raylet" in _cmdline(p).split()[0]]
        os.kill(raylet, signal.SIGKILL)
        out, err = _finish(sweep)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert sweep.returncode not in (0, None), out + err
    lost = [x for x in err.splitlines() if x.startswith("error: Ray lost job")]
    assert len(lost) == 1, err
    assert "Traceback" not in err, err
    runs = _jobs(project)
    assert all(r.info.status != "RUNNING" for r in project.runs())
    [killed] = [r for r in runs if r.info.status == "KILLED"]
    [finished] = [r for r in runs if r.info.status == "FINISHED"]
    assert killed.data.tags["optimizer"] in lost[0] and finished.data.tags["optimizer"] not in lost[0]

    _script(RAY_SH, "up", env={"PYTHON": ray_cluster, "RAY_PORT": RAY_PORT})  # the worker back
    again = subprocess.run([ray_cluster, str(TRAIN), *args], cwd=work, env=env,
                           capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout + again.stderr
    after = project.client.get_run(killed.info.run_id)
    assert after.info.status == "FINISHED"
    assert _epochs(project, after.info.run_id) == list(range(1, 41))
