"""Runs and sweeps that die: SIGKILL, then the same command again. Read back through MLflow."""

import os
import signal
import subprocess
import sys
import time

import pytest
from mlflow.entities import RunStatus

from conftest import FAST, ROOT, TRAIN

REPORT = ROOT / "src" / "report.py"
CLEAN = ROOT / "src" / "clean_runs.py"


def start(project, *overrides: str) -> subprocess.Popen:
    flags = [o for o in overrides if o.startswith("-")]
    return subprocess.Popen(
        [sys.executable, str(TRAIN), *flags, *FAST, *[o for o in overrides if not o.startswith("-")]],
        cwd=project.workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})


def kill_after(proc: subprocess.Popen, *needles: str, delay: float = 0.0) -> str:
    """SIGKILL the process once each needle has appeared in its output, in order (and `delay`
    seconds more)."""
    seen, waiting = [], list(needles)
    try:
        for line in proc.stdout:
            seen.append(line)
            if waiting and waiting[0] in line:
                waiting.pop(0)
                if not waiting:
                    time.sleep(delay)
                    proc.send_signal(signal.SIGKILL)
                    break
    finally:
        proc.kill()
        proc.wait(timeout=60)
    assert not waiting, "".join(seen)
    return "".join(seen)


def jobs(project, experiment="cifar-sweep"):
    return [r for r in project.runs(experiment) if r.data.tags.get("cifar_sweep.role") == "job"]


def epochs_logged(project, run_id: str) -> list[int]:
    return [m.step for m in project.client.get_metric_history(run_id, "val_accuracy")]


def test_killed_run_continues_and_ends_as_if_never_interrupted(project, tmp_path):
    run = ("trainer.epochs=8", "model=origin_net")
    kill_after(start(project, *run), "epoch 3/8")
    [ghost] = jobs(project)
    assert ghost.info.status == "RUNNING"  # SIGKILL: nothing could close it
    assert list((project.workdir / "checkpoints").rglob("*.pt"))

    proc = project.job(*run, check=True)  # the same command again: in this process
    assert "continuing from epoch" in proc.stdout
    [run_after] = jobs(project)
    assert run_after.info.run_id == ghost.info.run_id  # the same run, continued
    assert run_after.info.status == "FINISHED"
    assert epochs_logged(project, ghost.info.run_id) == list(range(1, 9))  # each epoch once
    assert not list((project.workdir / "checkpoints").rglob("*.pt"))  # removed once finished

    # the same command in a fresh project, never interrupted: the same result
    fresh = type(project)(tmp_path / "fresh")
    fresh.workdir.mkdir()
    fresh.job(*run, check=True)
    [uninterrupted] = jobs(fresh)
    for metric in ("test_accuracy", "test_loss", "best_val_accuracy", "best_epoch"):
        assert abs(run_after.data.metrics[metric] - uninterrupted.data.metrics[metric]) < 1e-6, metric
    # its test predictions: logged once, at its end, and the uninterrupted run's
    from cifar_sweep import results

    logged = [a.path for a in project.client.list_artifacts(run_after.info.run_id)]
    assert logged.count("predictions.npz") == 1
    continued = results.predictions(run_after.info.run_id, str(project.store))
    never = results.predictions(uninterrupted.info.run_id, str(fresh.store))
    assert continued.predicted.tolist() == never.predicted.tolist()
    assert abs(continued.p_0 - never.p_0).max() < 1e-3


@pytest.mark.slow  # about a minute on the 2-core CPU: make test-full (test_killed_run_continues... covers resuming)
def test_sweep_killed_after_its_first_job_trains_only_the_missing_ones(project):
    sweep = ("-m", "hydra/launcher=basic", "lr.value=0.005,0.01,0.02", "trainer.epochs=3")
    kill_after(start(project, *sweep), "test accuracy", "#1 epoch 1/3")
    before = {r.data.params["lr.value"]: r for r in jobs(project)}
    assert before["0.005"].info.status == "FINISHED" and before["0.01"].info.status == "RUNNING"

    proc = project.train(*sweep, check=True)
    assert proc.stdout.count("already finished") == 1
    assert proc.stdout.count("epoch 3/3") == 2  # job 1 (continued or restarted) and job 2
    runs = project.runs()
    assert not [r for r in runs if r.info.status == "RUNNING"]
    after = {r.data.params["lr.value"]: r for r in jobs(project)}
    assert sorted(after) == ["0.005", "0.01", "0.02"]
    assert all(r.info.status == "FINISHED" for r in after.values())
    assert after["0.005"].info.run_id == before["0.005"].info.run_id  # not trained again
    sweeps = sorted((r for r in runs if r.data.tags["cifar_sweep.role"] == "sweep"),
                    key=lambda r: r.info.start_time)
    assert [s.info.status for s in sweeps] == ["KILLED", "FINISHED"]
    assert "interrupted" in sweeps[0].data.tags["failure_reason"]


@pytest.mark.slow  # in `make test-full`: the default suite stays under about 12 minutes
def test_finished_sweep_again_trains_nothing_and_studies_share_their_baseline(project):
    project.train("-m", "ablation=lr", "lr.value=0.005,0.05", check=True)
    first = {r.data.params["lr.value"]: r.info.run_id for r in jobs(project, "ablation-lr")}

    again = project.train("-m", "ablation=lr", "lr.value=0.005,0.05", check=True)
    assert again.stdout.count("already finished") == 2 and "epoch 1/1" not in again.stdout
    assert len(jobs(project, "ablation-lr")) == 2
    project.run("ablation=lr", script=REPORT, check=True)
    table = (project.sweep_report("lr") / "table.csv").read_text()
    assert all(run_id in table for run_id in first.values())

    # the loss study's baseline is the lr study's lr.value=0.005 run: it trains once for both
    loss = project.train("-m", "ablation=loss", "loss=cross_entropy,label_smoothing", check=True)
    assert f"already finished: run {first['0.005']}" in loss.stdout
    assert loss.stdout.count("epoch 1/1") == 1
    project.run("ablation=loss", script=REPORT, check=True)
    table = (project.sweep_report("loss") / "table.csv").read_text()
    assert first["0.005"] in table and "loss=cross_entropy" in table

    # trainer.rerun=true trains it again (a preset is a sweep: -m, its baseline's value alone)
    rerun = project.train("-m", "ablation=lr", "lr.value=0.005", "trainer.rerun=true", check=True)
    assert "already finished" not in rerun.stdout and "epoch 1/1" in rerun.stdout


@pytest.mark.slow  # three entrypoint runs: about 60 s
def test_ghost_run_of_another_config_is_closed_and_clean_runs_closes_the_rest(project):
    kill_after(start(project, "trainer.epochs=50", "lr.value=0.002"), "epoch 1/50")
    [ghost] = jobs(project)
    assert ghost.info.status == "RUNNING"
    # a stale run from another host, its heartbeat long gone
    client = project.client
    exp = client.get_experiment_by_name("cifar-sweep")
    remote = client.create_run(exp.experiment_id, tags={
        "cifar_sweep.role": "job", "owner.host": "some-other-host", "owner.pid": "1",
        "heartbeat": "1000", "heartbeat.timeout_s": "600"}).info.run_id

    project.job("lr.value=0.003", check=True)  # another config: closes the ghosts, trains anew
    runs = {r.info.run_id: r for r in project.runs()}
    assert runs[ghost.info.run_id].info.status == "KILLED"
    assert "process" in runs[ghost.info.run_id].data.tags["failure_reason"]
    assert runs[remote].info.status == "KILLED"
    assert "no heartbeat from some-other-host" in runs[remote].data.tags["failure_reason"]

    # on demand, for the whole store
    other = client.create_experiment("elsewhere")
    lost = client.create_run(other, tags={"owner.host": os.uname().nodename, "owner.pid": "999999999"})
    proc = project.run(script=CLEAN, check=True)
    assert "closed 1 ghost run(s)" in proc.stdout
    assert client.get_run(lost.info.run_id).info.status == RunStatus.to_string(RunStatus.KILLED)
