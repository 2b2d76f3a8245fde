"""Runs against a real `mlflow server` process: logging to it, no server at the address, and the
server killed in the middle of a run, then started again."""

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import FAST, TRAIN, free_port

MLFLOW = Path(sys.executable).parent / "mlflow"


class Server:
    """`mlflow server` on 127.0.0.1 with a SQLite store and proxied artifacts in `folder`."""

    def __init__(self, folder: Path, port: int, args: tuple[str, ...] = (), env: dict | None = None):
        self.folder, self.port, self.proc = folder, port, None
        self.args, self.env = list(args), env or {}
        self.uri = f"http://127.0.0.1:{port}"

    def start(self, timeout: float = 120) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        log = open(self.folder / "server.log", "a")
        # its own process group: `mlflow server` runs uvicorn and a job runner as children
        self.proc = subprocess.Popen(
            [str(MLFLOW), "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers",
             "1", "--backend-store-uri", f"sqlite:///{self.folder / 'mlflow.db'}",
             "--artifacts-destination", str(self.folder / "artifacts"), *self.args],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.folder,
            # without its job runner (GenAI jobs) it starts in half the time
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **self.env})
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.folder / "server.log").read_text()
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise AssertionError(f"no /health within {timeout} s")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        elif self.proc is not None:  # the leader is gone; its children may not be
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc = None


@pytest.fixture
def server(tmp_path):
    started = Server(tmp_path / "server", free_port())
    started.start()
    yield started
    started.kill()


def job_runs(uri: str):
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("cifar-sweep")
    return client, client.search_runs([experiment.experiment_id]) if experiment else []


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


@pytest.mark.slow  # a real server: about 45 s; the round trip through `make server` is in test_cluster.py
def test_run_logs_to_a_server_and_reads_back(project, server):
    project.job(f"tracking.uri={server.uri}", "model=origin_net", check=True)
    client, [run] = job_runs(server.uri)
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")] == [1]
    assert 0 <= run.data.metrics["test_accuracy"] <= 1 and run.data.params["trainer.epochs"] == "1"
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "curves.png", "evaluation.json", "best_weights.pt"} <= names
    local = client.download_artifacts(run.info.run_id, "config.yaml", str(project.workdir / "dl"))
    assert "epochs: 1" in Path(local).read_text()
    assert list((server.folder / "artifacts").rglob("best_weights.pt"))  # stored by the server
    assert not project.store.exists()  # nothing went to the local default store

    # an experiment made by local runs on another machine: its artifacts at a path that cannot
    # be made here (under a file; as root, every existing folder is writable); spaces in it
    (project.workdir / "other machine").write_text("a file, not a folder")
    elsewhere = (project.workdir / "other machine" / "mlruns" / "artifacts" / "7").as_uri()
    client.create_experiment("made-locally", artifact_location=elsewhere)
    proc = project.job(f"tracking.uri={server.uri}", "tracking.experiment=made-locally")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    [line] = error_lines(proc.stdout + proc.stderr)
    assert line.startswith(f"error: tracking.experiment=made-locally: its artifacts live at the "
                           f"file path {elsewhere}, which jobs write themselves, not through "
                           f"{server.uri}, and this machine cannot write there"), line
    assert client.search_runs([client.get_experiment_by_name("made-locally").experiment_id]) == []
    # one this machine can write to (a shared file system, say), its path percent-encoded: runs
    shared = project.workdir / "My Projects" / "artifacts" / "8"
    client.create_experiment("on-a-shared-disk", artifact_location=shared.as_uri())
    project.job(f"tracking.uri={server.uri}", "tracking.experiment=on-a-shared-disk", check=True)
    assert (shared / client.search_runs([client.get_experiment_by_name(
        "on-a-shared-disk").experiment_id])[0].info.run_id / "artifacts" / "config.yaml").is_file()


@pytest.mark.slow  # up to a minute on the 2-core CPU: make test-full (a default test covers its core)
def test_no_server_at_the_address_is_one_line_in_seconds(project):
    # the time of a process that stops at its first check: imports, on this machine, now
    started = time.monotonic()
    assert project.train("trainer.epochs=0", timeout=120).returncode == 2
    baseline = time.monotonic() - started
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    for sweep in ([], ["-m", "hydra/launcher=basic", "lr.value=0.01,0.02"]):
        started = time.monotonic()
        proc = project.train(*sweep, f"tracking.uri={uri}", timeout=120)
        took = time.monotonic() - started
        assert proc.returncode == 2, proc.stdout + proc.stderr
        # seconds more than that, not MLflow's 4.5 minutes of retries
        assert took < baseline + 15, (took, baseline)
        [line] = error_lines(proc.stdout + proc.stderr)
        assert line.startswith(f"error: tracking.uri={uri}: no tracking server answers there "
                               "(connection refused)"), line
        assert "Traceback" not in proc.stdout + proc.stderr
    assert not project.store.exists() and not (project.workdir / "checkpoints").exists()


@pytest.mark.slow  # two server starts and two runs: about 80 s
def test_server_killed_mid_run_then_the_same_command_continues(project, server):
    run = (f"tracking.uri={server.uri}", "trainer.epochs=6")
    proc = subprocess.Popen([sys.executable, str(TRAIN), *FAST, *run], cwd=project.workdir,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    seen, killed = [], None
    try:
        for line in proc.stdout:
            seen.append(line)
            if "epoch 2/6" in line:
                server.kill()
                killed = time.monotonic()
                break
        assert killed is not None, "".join(seen)
        rest, _ = proc.communicate(timeout=120)
        took = time.monotonic() - killed
    finally:
        proc.kill()
        proc.wait()
    out = "".join(seen) + rest
    assert proc.returncode == 1, out
    assert took < 120, took
    [line] = error_lines(out)
    assert line.startswith(f"error: lost the tracking server {server.uri}: connection refused; "
                           "the run's checkpoint is kept: run the same command again"), line
    assert "Traceback" not in out
    [kept] = list((project.workdir / "checkpoints").rglob("*.pt"))

    server.start()  # the same store, the same address
    again = project.job(*run, check=True)  # the same command again: in this process
    assert "continuing from epoch" in again.stdout
    client, [after] = job_runs(server.uri)
    assert after.info.run_id == kept.stem and after.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(after.info.run_id, "val_accuracy")]
    assert sorted(steps) == list(range(1, 7))  # every epoch logged once
    assert not kept.exists()  # removed once the run finished


@pytest.mark.slow  # two server starts and a 2-job sweep twice: about 2 minutes
def test_server_lost_mid_sweep_stops_it_like_a_full_disk_then_the_same_command_continues(
        project, server):
    """The jobs after the lost server would fail the same way: they do not start, and the sweep
    ends with one line, exit 75 (faults.EXIT_STOPPED), as on a full disk."""
    sweep = ("-m", "hydra/launcher=basic", f"tracking.uri={server.uri}", "trainer.epochs=6",
             "optimizer=sgd,adam")
    proc = subprocess.Popen([sys.executable, str(TRAIN), sweep[0], *FAST, *sweep[1:]],
                            cwd=project.workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if "epoch 2/6" in line:
                server.kill()
                break
        rest, _ = proc.communicate(timeout=180)
    finally:
        proc.kill()
        proc.wait()
    out = "".join(seen) + rest
    assert proc.returncode == 75, out
    assert "Traceback" not in out
    assert "#1 not started: the sweep stopped" in out and "#1 run " not in out
    last = error_lines(out)[-1]
    assert last.startswith(f"error: the sweep stopped early: no answer from the tracking server on "
                           f"{server.uri} (job #0)"), last
    assert f"start the tracking server at {server.uri} again" in last
    [kept] = list((project.workdir / "checkpoints").rglob("*.pt"))

    server.start()
    again = project.train(*sweep, check=True, timeout=400)
    assert "continuing from epoch" in again.stdout + again.stderr
    client, runs = job_runs(server.uri)
    by_optimizer = {r.data.tags["optimizer"]: r for r in runs
                    if r.data.tags.get("cifar_sweep.role") == "job"}
    assert by_optimizer["sgd"].info.run_id == kept.stem
    assert all(r.info.status == "FINISHED" for r in by_optimizer.values())
    steps = [m.step for m in client.get_metric_history(kept.stem, "val_accuracy")]
    assert sorted(steps) == list(range(1, 7))


ADMIN = {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": "admin-Pass-1234"}
BOB = {"MLFLOW_TRACKING_USERNAME": "bob", "MLFLOW_TRACKING_PASSWORD": "bob-Pass-12345"}


@pytest.mark.slow  # a real authenticating server: about 40 s
def test_credentials_a_server_refuses_are_one_line_before_any_run(project, tmp_path):
    pytest.importorskip("flask_wtf", reason="the [server] extra: mlflow[auth]")
    auth = Server(tmp_path / "auth", free_port(), ("--app-name", "basic-auth"),
                  {"MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN["MLFLOW_TRACKING_PASSWORD"],
                   "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-only"})
    auth.start()
    try:
        from mlflow.server import get_app_client

        os.environ.update(ADMIN)  # the admin's client, to set up and read back
        try:
            get_app_client("basic-auth", tracking_uri=auth.uri).create_user(
                BOB["MLFLOW_TRACKING_USERNAME"], BOB["MLFLOW_TRACKING_PASSWORD"])
            admin = MlflowClient(tracking_uri=auth.uri)
            admin.create_experiment("cifar-sweep")  # bob may read it (the default), not write
            cases = [
                ({}, "the server asks who you are (HTTP 401) and no credentials were given"),
                ({**ADMIN, "MLFLOW_TRACKING_PASSWORD": "wrong"},
                 "the server asks who you are (HTTP 401) and user admin was refused"),
                (BOB, "does not let user bob write in this experiment (HTTP 403)"),
            ]
            for env, said in cases:
                # alone: the job in this process; the sweep: through the command
                for sweep in ([], ["-m", "hydra/launcher=basic", "lr.value=0.01,0.02"]):
                    command = project.train if sweep else project.job
                    proc = command(*sweep, f"tracking.uri={auth.uri}",
                                   env={**{k: None for k in ADMIN}, **env})
                    out = proc.stdout + proc.stderr
                    assert proc.returncode == 2, out
                    [line] = error_lines(out)
                    assert said in line, line
                    assert "Traceback" not in out
            experiment = admin.get_experiment_by_name("cifar-sweep")
            assert admin.search_runs([experiment.experiment_id]) == []  # no run, no ghost
            # with an experiment of their own, bob's run goes through
            project.job(f"tracking.uri={auth.uri}", "tracking.experiment=bobs", env=BOB,
                        check=True)
            [run] = admin.search_runs([admin.get_experiment_by_name("bobs").experiment_id])
            assert run.info.status == "FINISHED"
        finally:
            for key in ADMIN:
                os.environ.pop(key, None)
    finally:
        auth.kill()
