"""Beyond one machine: sweeps through hydra-submitit-launcher (locally, and the sbatch script its
SLURM preset makes, on a mocked SLURM), preempted jobs that continue, Ray, and a shared tracking
server started by `make server`. Everything binds 127.0.0.1 on a free port and is stopped by the
test that started it; every wait is bounded."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from mlflow.tracking import MlflowClient

from conftest import FAST, ROOT, TRAIN, free_port, wait_for

CONF = ROOT / "conf"
REPORT = ROOT / "src" / "report.py"
EPOCH_METRICS = ["train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "epoch_seconds"]
ARTIFACTS = ["config.yaml", "confusion_matrix.png", "curves.png", "correct.png", "wrong.png",
             "best_weights.pt", "evaluation.json"]


def roles(runs, role: str):
    return [r for r in runs if r.data.tags.get("cifar_sweep.role") == role]


# --- submitit: locally, end to end -------------------------------------------------------------

@pytest.mark.slow  # in `make test-full`: the default suite stays under about 12 minutes
def test_submitit_local_sweep_makes_one_parent_and_two_finished_children(project):
    proc = project.train("-m", "hydra/launcher=submitit_local", "optimizer=sgd,adam", check=True)
    assert "Submitit 'local' sweep output dir" in proc.stdout + proc.stderr
    runs = project.runs()
    [parent] = roles(runs, "sweep")
    children = roles(runs, "job")
    assert parent.info.status == "FINISHED" and len(children) == 2
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert sorted(c.data.tags["optimizer"] for c in children) == ["adam", "sgd"]
    assert all(c.info.status == "FINISHED" for c in children)
    assert all(c.data.tags["num_threads"] == "1" for c in children)
    # each job ran in its own submitit process, which left its result next to its log
    results = list((project.workdir / "multirun").glob("*/*/.submitit/*/*_result.pkl"))
    assert len(results) == 2


def _descendants(root: int) -> list[int]:
    """Processes below `root` (those this test started, through the sweep), from /proc."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [root]
    while frontier:
        pid = frontier.pop()
        children = [p for p, ppid in parents.items() if ppid == pid]
        found += children
        frontier += children
    return found


def _submitit_task(sweep: subprocess.Popen) -> int | None:
    """The pid of the process running the job (`python -m submitit.core._submit`)."""
    for pid in _descendants(sweep.pid):
        try:
            if b"submitit.core._submit" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
        except OSError:
            continue
    return None


def _job_log(workdir: Path) -> str:
    return "".join(p.read_text(errors="replace")
                   for p in (workdir / "multirun").glob("*/*/.submitit/*/*_0_log.out"))


def _signal_job_after(project, overrides: list[str], needle: str) -> subprocess.CompletedProcess:
    """Start a 1-job submitit_local sweep, send its job the signal SLURM sends before a
    preemption or a time limit (SIGUSR2) once `needle` is in the job's log, let it finish."""
    flags = [o for o in overrides if o.startswith("-")]
    sweep = subprocess.Popen(
        [sys.executable, str(TRAIN), *flags, *FAST, *[o for o in overrides if o not in flags]],
        cwd=project.workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        wait_for(lambda: needle in _job_log(project.workdir) or sweep.poll() is not None,
                 300, f"{needle!r} in the job's log")
        task = _submitit_task(sweep)
        assert task is not None, _job_log(project.workdir)
        os.kill(task, signal.SIGUSR2)
        out, _ = sweep.communicate(timeout=300)
    finally:
        if sweep.poll() is None:
            for pid in _descendants(sweep.pid):
                with _ignore(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            sweep.kill()
            sweep.wait(timeout=60)
    return subprocess.CompletedProcess(sweep.args, sweep.returncode, out, "")


@contextmanager
def _ignore(*errors):
    try:
        yield
    except errors:
        pass


@pytest.mark.slow  # about 65 s: the job starts twice
def test_preempted_submitit_job_is_requeued_and_continues_its_run(project):
    """submitit's SIGUSR2 handler: not near the time limit, so a preemption; the plugin's
    checkpoint() resubmits the same job, which finds its KILLED run and continues it."""
    proc = _signal_job_after(project, ["-m", "hydra/launcher=submitit_local", "trainer.epochs=6",
                                       "optimizer=sgd"], "epoch 2/6")
    log = _job_log(project.workdir)
    assert proc.returncode == 0, proc.stdout + log
    assert "this job is preempted" in log and "Requeued job" in log
    assert re.search(r"continuing from epoch [345]\b", log), log
    [job] = roles(project.runs(), "job")
    assert job.info.status == "FINISHED" and "failure_reason" not in job.data.tags
    steps = [m.step for m in project.client.get_metric_history(job.info.run_id, "val_accuracy")]
    assert steps == list(range(1, 7))  # every epoch once, in one run
    assert not list((project.workdir / "checkpoints").rglob("*.pt"))


@pytest.mark.slow
def test_job_out_of_requeues_is_killed_with_its_checkpoint_kept(project):
    """A signal counts as a time limit after min(0.8 x, x - 10 min) of a job's time: with
    timeout_min=1, any. max_num_timeout=0: no requeue, submitit raises UncompletedJobError."""
    _signal_job_after(project, ["-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=1",
                                "+hydra.launcher.max_num_timeout=0", "trainer.epochs=6",
                                "optimizer=sgd"], "epoch 2/6")
    assert "Job not requeued because: timed-out too many times" in _job_log(project.workdir)
    [job] = roles(project.runs(), "job")
    assert job.info.status == "KILLED", job.data.tags.get("failure_reason")
    assert job.data.tags["failure_reason"].startswith("interrupted")
    assert list((project.workdir / "checkpoints").rglob("*.pt"))  # the same command continues


# --- the SLURM preset, on a mocked SLURM -------------------------------------------------------

def test_slurm_preset_through_the_plugin_writes_this_sbatch_script(tmp_path, monkeypatch):
    """The plugin's own launch() with our preset, on submitit's mocked SLURM (its sbatch, sacct,
    scancel are stubs): the script it submits, and the jobs it pickles."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.plugins import Plugins
    from hydra.types import HydraContext
    from submitit.core.utils import DelayedSubmission
    from submitit.slurm.test_slurm import mocked_slurm

    sweep_dir = tmp_path / "multirun"
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", return_hydra_config=True, overrides=[
            "hydra/launcher=slurm", "hydra.launcher.partition=gpu", f"hydra.sweep.dir={sweep_dir}"])
        context = HydraContext(config_loader=GlobalHydra.instance().config_loader(), callbacks=None)
        launcher = Plugins.instance().instantiate_launcher(
            hydra_context=context, task_function=lambda job_cfg: None, config=cfg)
        # launch() waits for the jobs' results; on a mocked SLURM no job ever runs
        from hydra_plugins.cifar_sweep_slurm import launcher as slurm_launcher

        monkeypatch.setattr(slurm_launcher, "wait_for",
                            lambda jobs, names, overrides: ["not run"] * len(jobs))
        with mocked_slurm():
            launcher.launch([["optimizer=sgd"], ["optimizer=adam"]], initial_job_idx=0)

    [script] = sweep_dir.glob(".submitit/*/*_submission.sh")
    lines = set(script.read_text().splitlines())
    for line in ["#SBATCH --array=0-1%2",         # 2 jobs, at most min(2, array_parallelism) at once
                 "#SBATCH --partition=gpu",       # from the command line
                 "#SBATCH --time=60",             # timeout_min
                 "#SBATCH --signal=USR2@120",     # signal_delay_s: SIGUSR2 2 minutes before --time
                 "#SBATCH --cpus-per-task=4",
                 "#SBATCH --gpus-per-node=1",
                 "#SBATCH --mem=16GB",
                 "#SBATCH --requeue"]:
        assert line in lines, script.read_text()
    srun = next(line for line in lines if line.startswith("srun "))
    assert f"{sys.executable} -u -m submitit.core._submit" in srun

    # each array task's pickle: the launcher itself, called with that job's overrides, allowed
    # max_num_timeout requeues at its time limit; its checkpoint() is the same call again
    pickles = sorted(sweep_dir.glob(".submitit/*_*/*_submitted.pkl"))
    assert len(pickles) == 2
    for job_num, (path, overrides) in enumerate(zip(pickles, [["optimizer=sgd"], ["optimizer=adam"]])):
        delayed = DelayedSubmission.load(path)
        assert type(delayed.function).__name__ == "SlurmLauncher"
        assert delayed.args[0] == overrides and delayed.args[2] == job_num
        assert delayed._timeout_min == 60 and delayed._timeout_countdown == 3
        again = delayed._checkpoint_function()
        assert again.function is delayed.function and again.args == delayed.args


def test_a_signal_delay_that_leaves_no_time_to_train_is_one_line_before_any_run(project):
    """SLURM would signal every attempt before its first checkpoint: each requeue would start
    the run anew. Refused before the sweep's parent run (and before sbatch is asked)."""
    proc = project.train("-m", "hydra/launcher=slurm", "hydra.launcher.timeout_min=1")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    [line] = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert "hydra.launcher.signal_delay_s=120 with hydra.launcher.timeout_min=1 leaves -60 s" in line
    assert "allowed: hydra.launcher.timeout_min of at least 3" in line
    assert project.runs() == []


def test_slurm_preset_without_a_partition_leaves_it_to_the_cluster(tmp_path):
    from hydra import compose, initialize_config_dir
    from submitit.slurm.slurm import _make_sbatch_string

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    assert cfg.hydra.launcher.partition is None
    script = _make_sbatch_string(command="true", folder=tmp_path, partition=None, map_count=3,
                                 array_parallelism=cfg.hydra.launcher.array_parallelism)
    assert "--partition" not in script and "#SBATCH --array=0-2%3" in script


# --- Ray ---------------------------------------------------------------------------------------

def test_ray_launcher_without_its_extra_is_one_line(project):
    import importlib.util

    if importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is not None:
        pytest.skip("the [ray] extra is installed here")
    proc = project.train("-m", "hydra/launcher=ray_tasks", "optimizer=sgd,adam")
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("error: hydra/launcher=ray_tasks needs the [ray] extra, which "
                                   "is not installed: pip install -e '.[ray]'")
    assert not project.store.exists()


@pytest.mark.slow
def test_ray_local_instance_sweep_makes_one_parent_and_two_finished_children(project):
    """Runs where the [ray] extra is installed. Ray's own gRPC servers (GCS, raylet, workers)
    listen on every interface whatever _node_ip_address says (Ray 2.60, token-authenticated);
    only its address is loopback here."""
    pytest.importorskip("hydra_plugins.hydra_ray_launcher.ray_launcher",
                        reason="the [ray] extra is not installed")
    proc = project.train("-m", "hydra/launcher=ray_tasks", "optimizer=sgd,adam",
                         "+hydra.launcher.ray.init.num_cpus=2",
                         "+hydra.launcher.ray.init._node_ip_address=127.0.0.1", check=True)
    assert "Started a local Ray instance" in proc.stdout + proc.stderr
    runs = project.runs()
    [parent] = roles(runs, "sweep")
    children = roles(runs, "job")
    assert parent.info.status == "FINISHED" and len(children) == 2
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert all(c.info.status == "FINISHED" for c in children)
    assert all(c.data.tags["num_threads"] == "1" for c in children)


# --- a shared tracking server: `make server` ---------------------------------------------------

@contextmanager
def tracking_server(folder: Path, workers: int = 2, **make_vars: str):
    """`make server` in `folder` (its store: folder/mlruns), on a free loopback port; yields its
    URI and log; stops the whole process group (make, mlflow, uvicorn and its workers)."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = folder / "server.log"
    args = [f"PYTHON={sys.executable}", f"PORT={port}", f"WORKERS={workers}",
            *[f"{k}={v}" for k, v in make_vars.items()]]
    with log.open("w") as out:
        proc = subprocess.Popen(["make", "-s", "-f", str(ROOT / "Makefile"), "server", *args],
                                cwd=folder, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    uri = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        assert proc.poll() is None, log.read_text()
        try:
            return requests.get(f"{uri}/health", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    try:
        wait_for(answers, 180, f"the server at {uri}")
        yield uri, log
    finally:
        with _ignore(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            with _ignore(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        # uvicorn's workers go with their parent; nothing of the group may stay
        wait_for(lambda: not _group_alive(proc.pid), 60, "the server's processes to end")


def _group_alive(pgid: int) -> bool:
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[2]) == pgid:
                return True
        except (OSError, IndexError, ValueError):
            continue
    return False


@pytest.mark.slow  # a real server, a sweep and the report: about 80 s
def test_sweep_and_report_through_a_tracking_server(project, tmp_path):
    with tracking_server(tmp_path / "server", workers=1) as (uri, log):
        # the default allowed hosts are localhost and private addresses: a login node reached
        # by its name needs ALLOWED_HOSTS (docs/cluster.md); this one is reached as 127.0.0.1
        refused = requests.get(f"{uri}/api/2.0/mlflow/experiments/search?max_results=1",
                               headers={"Host": "login-node:5000"}, timeout=10)
        assert refused.status_code in (400, 403), refused.status_code

        project.train("-m", "ablation=lr", "lr.value=0.005,0.05", f"tracking.uri={uri}",
                      check=True)
        assert not project.store.exists()  # nothing was logged to a local store

        client = MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name("ablation-lr")
        assert experiment.artifact_location.startswith("mlflow-artifacts:")
        runs = client.search_runs([experiment.experiment_id], max_results=100)
        [parent] = roles(runs, "sweep")
        children = roles(runs, "job")
        assert parent.info.status == "FINISHED" and len(children) == 2
        assert all(c.info.status == "FINISHED" for c in children)
        assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}

        # artifacts went through the server, into its --artifacts-destination, and come back
        for child in children:
            assert {a.path for a in client.list_artifacts(child.info.run_id)} >= set(ARTIFACTS)
            local = Path(client.download_artifacts(child.info.run_id, "evaluation.json",
                                                   str(tmp_path / child.info.run_id)))
            assert sum(map(sum, json.loads(local.read_text())["confusion"])) == 500
            stored = tmp_path / "server" / "mlruns" / "artifacts" / experiment.experiment_id
            assert (stored / child.info.run_id / "artifacts" / "best_weights.pt").is_file()

        # the study's tables, regenerated from the server alone
        project.run("ablation=lr", f"tracking.uri={uri}", script=REPORT, check=True)
        table = (project.sweep_report("lr") / "table.csv").read_text()
        assert all(c.info.run_id in table for c in children)
        # the sweep's own table went through the server too; the report wrote nothing there
        logged = {a.path for a in client.list_artifacts(parent.info.run_id, "table")}
        assert logged == {"table/table.csv", "table/table.md"}
        assert not client.list_artifacts(parent.info.run_id, "report")
    assert "database is locked" not in log.read_text()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{uri}/health", timeout=2)


# --- the server under a cluster's load ---------------------------------------------------------

LOAD_JOBS, LOAD_EPOCHS = 16, 50
LOAD_FILES = {"config.yaml": 2_000, "curves.png": 60_000, "best_weights.pt": 150_000}
# what store.bound_http_retries sets for jobs logging to a server
JOB_HTTP_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                "MLFLOW_HTTP_REQUEST_TIMEOUT": "15"}


def load_worker(uri: str, experiment_id: str, index: int, epochs: int, folder: str) -> None:
    """One job's logging, as job/steps.py does it, without the training: a run with its params, one
    log_batch per epoch (6 metrics and the heartbeat tags), a few artifacts, then FINISHED."""
    from mlflow.entities import Metric, Param, RunTag

    folder = Path(folder)
    client = MlflowClient(tracking_uri=uri)
    (folder / f"ready-{index}").touch()
    deadline = time.monotonic() + 300
    while not (folder / "go").exists():  # all start at once
        if time.monotonic() > deadline:
            raise SystemExit("no go")
        time.sleep(0.05)
    started, calls, epoch_seconds = time.time(), 0, []
    run_id = client.create_run(experiment_id, run_name=f"load #{index}",
                               tags={"cifar_sweep.role": "job", "job.num": str(index)}).info.run_id
    client.log_batch(run_id, params=[Param(f"config.key{i}", str(i)) for i in range(60)])
    calls += 2
    for epoch in range(1, epochs + 1):
        now = int(time.time() * 1000)
        t0 = time.perf_counter()
        client.log_batch(run_id, metrics=[Metric(name, index + epoch / 1000 + i, now, epoch)
                                          for i, name in enumerate(EPOCH_METRICS)],
                         tags=[RunTag("heartbeat", f"{time.time():.0f}"),
                               RunTag("heartbeat.timeout_s", "600")])
        epoch_seconds.append(time.perf_counter() - t0)
        calls += 1
    with tempfile.TemporaryDirectory() as tmp:
        for name, size in LOAD_FILES.items():
            path = Path(tmp) / name
            path.write_bytes(random.Random(f"{index}{name}").randbytes(size))
            client.log_artifact(run_id, str(path))
            calls += 1
    client.set_terminated(run_id, "FINISHED")
    calls += 1
    (folder / f"result-{index}.json").write_text(json.dumps({
        "run_id": run_id, "started": started, "ended": time.time(), "calls": calls,
        "epoch_seconds": epoch_seconds}))


@pytest.mark.slow
def test_tracking_server_takes_16_jobs_logging_at_once(tmp_path):
    """16 processes log 50 epochs and 3 artifacts each, all at once, to one server over SQLite
    (or the database URI in LOAD_BACKEND, e.g. postgresql://...); nothing is lost or duplicated.
    Prints requests per second and the slowest epoch's logging."""
    backend = {"BACKEND": os.environ["LOAD_BACKEND"]} if os.environ.get("LOAD_BACKEND") else {}
    with tracking_server(tmp_path / "server", workers=4, **backend) as (uri, log):
        client = MlflowClient(tracking_uri=uri)
        experiment_id = client.create_experiment("load")
        folder = tmp_path / "load"
        folder.mkdir()
        env = {**os.environ, **JOB_HTTP_ENV, "PYTHONPATH": str(Path(__file__).parent)}
        workers = [subprocess.Popen([sys.executable, __file__, uri, experiment_id, str(i),
                                     str(LOAD_EPOCHS), str(folder)], env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                   for i in range(LOAD_JOBS)]
        try:
            wait_for(lambda: len(list(folder.glob("ready-*"))) == LOAD_JOBS
                     or any(w.poll() is not None for w in workers), 300, "the workers to start")
            (folder / "go").touch()
            go = time.time()
            outputs = [w.communicate(timeout=600)[0] for w in workers]
        finally:
            for w in workers:
                if w.poll() is None:
                    w.kill()
                    w.wait(timeout=30)
        assert all(w.returncode == 0 for w in workers), "\n".join(outputs)
        results = [json.loads((folder / f"result-{i}.json").read_text()) for i in range(LOAD_JOBS)]

        # nothing lost, nothing twice
        for result in results:
            run = client.get_run(result["run_id"])
            assert run.info.status == "FINISHED"
            for name in EPOCH_METRICS:
                steps = sorted(m.step for m in client.get_metric_history(result["run_id"], name))
                assert steps == list(range(1, LOAD_EPOCHS + 1)), (result["run_id"], name)
            sizes = {a.path: a.file_size for a in client.list_artifacts(result["run_id"])}
            assert sizes == LOAD_FILES
        assert len(client.search_runs([experiment_id], max_results=1000)) == LOAD_JOBS

    server_log = log.read_text()
    wall = max(r["ended"] for r in results) - go
    calls = sum(r["calls"] for r in results)
    epochs = sorted(s for r in results for s in r["epoch_seconds"])
    figures = {
        "backend": backend.get("BACKEND", "sqlite").split(":")[0], "jobs": LOAD_JOBS,
        "epochs": LOAD_EPOCHS, "wall_s": round(wall, 2), "api_calls": calls,
        "calls_per_s": round(calls / wall, 1),
        "epoch_log_s_median": round(epochs[len(epochs) // 2], 4),
        "epoch_log_s_p95": round(epochs[int(len(epochs) * 0.95)], 4),
        "epoch_log_s_max": round(epochs[-1], 4),
        "http_5xx": len(re.findall(r'HTTP/1\.1" 5\d\d', server_log)),
        "database_locked": server_log.count("database is locked"),
    }
    print("\nload:", json.dumps(figures))
    assert figures["http_5xx"] == 0 and figures["database_locked"] == 0


if __name__ == "__main__":  # a load worker: uri experiment_id index epochs folder
    load_worker(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
