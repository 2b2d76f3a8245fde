"""Run identity: which settings change `config_hash` (and so train again) and which do not, and
the ghost rules of `why_dead` on hand-made runs, with real processes where a pid's life matters."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from types import SimpleNamespace

import pytest
from hydra import compose, initialize_config_dir
from mlflow.entities import Run, RunData, RunInfo, RunTag
from mlflow.tracking import MlflowClient

from cifar_sweep.plan.identity import NOT_RESULT_KEYS, config_hash, setting_hash
from cifar_sweep.tracking import tags as t
from cifar_sweep.tracking.lifecycle import HEARTBEAT_FLOOR_S, close_ghosts, process_start, why_dead
from conftest import ROOT

BASE = ["data=synthetic"]
FINGERPRINT, DEVICE, PRECISION = "synthetic-500c68d943a271567435", "cpu", "fp32"


def compose_config(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=[*BASE, *overrides])


def hashes(*overrides: str, fingerprint=FINGERPRINT, device=DEVICE, precision=PRECISION):
    cfg = compose_config(*overrides)
    return (config_hash(cfg, fingerprint, device, precision),
            setting_hash(cfg, fingerprint, device, precision))


# --- config_hash ---------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides", [
    ["model=origin_net"], ["model.dropout=0.3"], ["optimizer=adam"], ["lr.value=0.01"],
    ["lr=cosine"], ["loss=label_smoothing"], ["augment=none"], ["trainer.batch_size=32"],
    ["trainer.epochs=31"], ["trainer.val_fraction=0.1"], ["data.split_seed=1"],
], ids=lambda o: " ".join(o))
def test_a_result_setting_changes_both_hashes(overrides):
    base, changed = hashes(), hashes(*overrides)
    assert changed[0] != base[0] and changed[1] != base[1]


@pytest.mark.parametrize("argument", [
    {"fingerprint": "synthetic-0000000000000000000"}, {"device": "cuda"}, {"precision": "bf16"},
], ids=lambda a: next(iter(a)))
def test_the_resolved_data_device_and_precision_change_both_hashes(argument):
    base, changed = hashes(), hashes(**argument)
    assert changed[0] != base[0] and changed[1] != base[1]


def test_the_seed_changes_the_config_hash_only():
    base, seeded = hashes(), hashes("trainer.seed=1")
    assert seeded[0] != base[0]
    assert seeded[1] == base[1]  # the same setting: one row of a table, a run per seed


@pytest.mark.parametrize("overrides", [
    ["tracking.uri=http://elsewhere:5000"], ["tracking.experiment=other"], ["tracking.figures=false"],
    ["tracking.predictions_probabilities=false"],
    ["study.name=lr", "study.baseline='lr.value=0.005'", "study.seeds=auto"],
    ["checkpoint.dir=/tmp/elsewhere"], ["checkpoint.keep=true"], ["optuna_trial=7"],
    ["data.title=mine"], ["data.cache_dir=/tmp/cache"],
    ["data.source.num_train=1000"],  # counts through the data fingerprint, an argument here
    ["trainer.device=cpu"],  # counts by the device type it resolves to, an argument here
    ["trainer.num_threads=3"], ["trainer.jobs_per_gpu=2"], ["trainer.eval_batch_size=100"],
    ["trainer.rerun=true"], ["trainer.reuse_other_code=true"],
], ids=lambda o: " ".join(o))
def test_a_setting_that_cannot_change_the_result_changes_no_hash(overrides):
    assert hashes(*overrides) == hashes()


def test_the_data_path_counts_by_the_data_not_by_where_it_is(tmp_path):
    """data.root (and the source's arguments) are replaced by the fingerprint: the same images at
    another path are the same experiment, other images another."""
    def image_folder(root, fingerprint=FINGERPRINT):
        cfg = compose_config("data=image_folder", f"data.root={root}", "data.skip_corrupt=true")
        return config_hash(cfg, fingerprint, DEVICE, PRECISION)
    assert image_folder(tmp_path / "a") == image_folder(tmp_path / "b")
    assert image_folder(tmp_path / "a") != image_folder(tmp_path / "a", "image_folder-other")


def test_every_left_out_key_is_a_setting():
    """A key renamed in conf/ but not in NOT_RESULT_KEYS would silently start to count."""
    configs = [compose_config(), compose_config("data=cifar10"),
               compose_config("data=image_folder", "data.root=x")]
    for key in NOT_RESULT_KEYS:
        assert any(cfg_has(cfg, key) for cfg in configs), key


def cfg_has(cfg, dotted: str) -> bool:
    node = cfg
    for part in dotted.split("."):
        if part not in node:
            return False
        node = node[part]
    return True


# --- why_dead: the ghost rules -------------------------------------------------------------------

HOST = socket.gethostname()


def run_with(**tags: str) -> Run:
    info = RunInfo(run_id="r1", experiment_id="0", user_id="u", status="RUNNING", start_time=0,
                   end_time=None, lifecycle_stage="active")
    return Run(info, RunData(tags=[RunTag(k, v) for k, v in tags.items()]))


def owner(pid: int, start: str | None = None, host: str = HOST) -> dict[str, str]:
    return {t.OWNER_HOST: host, t.OWNER_PID: str(pid),
            t.OWNER_START: process_start(pid) if start is None else start, t.ROLE: t.ROLE_JOB}


@pytest.fixture
def sleeper():
    """A live process of this host, killed and reaped afterwards."""
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture
def no_slurm(monkeypatch):
    for name in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT"):
        monkeypatch.delenv(name, raising=False)


def test_a_live_owner_is_alive(sleeper, no_slurm):
    assert why_dead(run_with(**owner(sleeper.pid))) is None
    assert why_dead(run_with(**owner(os.getpid()))) is None


def test_an_owner_whose_process_ended_is_dead(no_slurm):
    proc = subprocess.Popen(["sleep", "60"])
    tags = owner(proc.pid)  # recorded while it ran
    proc.kill()
    proc.wait()  # reaped: the pid is free
    assert why_dead(run_with(**tags)) == f"its process {proc.pid} on {HOST} is gone"


def test_a_reused_pid_is_not_the_owner(sleeper, no_slurm):
    """The pid is alive, but the process that has it started at another time than the owner."""
    tags = owner(sleeper.pid, start=str(int(process_start(sleeper.pid)) - 1))
    assert why_dead(run_with(**tags)) == (
        f"its process {sleeper.pid} on {HOST} is gone (the pid now belongs to another process)")


def test_an_owner_without_a_recorded_start_is_judged_by_its_pid(sleeper, no_slurm):
    assert why_dead(run_with(**owner(sleeper.pid, start=""))) is None


def test_another_hosts_run_is_judged_by_its_heartbeat(no_slurm):
    now = 1_000_000.0
    other = {**owner(1, start="5", host="elsewhere.invalid"), t.HEARTBEAT_TIMEOUT: "600"}
    fresh = run_with(**other, **{t.HEARTBEAT: f"{now - 599:.0f}"})
    stale = run_with(**other, **{t.HEARTBEAT: f"{now - 601:.0f}"})
    assert why_dead(fresh, now=now) is None
    assert why_dead(stale, now=now) == "no heartbeat from elsewhere.invalid for 601 s"


def test_without_a_timeout_the_floor_applies(no_slurm):
    now = 1_000_000.0
    tags = {**owner(1, start="5", host="elsewhere.invalid")}
    young = run_with(**tags, **{t.HEARTBEAT: f"{now - HEARTBEAT_FLOOR_S + 1:.0f}"})
    old = run_with(**tags, **{t.HEARTBEAT: f"{now - HEARTBEAT_FLOOR_S - 1:.0f}"})
    assert why_dead(young, now=now) is None and why_dead(old, now=now) is not None


def test_a_sweep_parent_on_another_host_is_never_judged(no_slurm):
    """A sweep's parent has no heartbeat: however old, it is not closed from another host."""
    tags = {**owner(1, start="5", host="elsewhere.invalid"), t.ROLE: t.ROLE_SWEEP,
            t.HEARTBEAT: "0"}
    assert why_dead(run_with(**tags), now=1e9) is None
    assert why_dead(SimpleNamespace(data=SimpleNamespace(tags={})), now=1e9) is None


@pytest.mark.parametrize("env, job", [
    ({"SLURM_JOB_ID": "4242"}, "4242"),
    ({"SLURM_ARRAY_JOB_ID": "77", "SLURM_ARRAY_TASK_ID": "3", "SLURM_JOB_ID": "80"}, "77_3"),
])
def test_a_requeued_slurm_job_is_dead_though_its_heartbeat_is_fresh(env, job, monkeypatch, no_slurm,
                                                                   sleeper):
    """SLURM requeued this job (its restart count went up): the run's owner was the job's earlier
    life, whatever its host, pid or heartbeat say; the same life is judged as usual."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    tags = {**owner(sleeper.pid), t.HEARTBEAT: f"{time.time():.0f}", t.OWNER_SLURM_JOB: job}
    assert why_dead(run_with(**tags, **{t.OWNER_SLURM_RESTART: "0"})) == (
        f"its SLURM job {job} was requeued")
    assert why_dead(run_with(**tags, **{t.OWNER_SLURM_RESTART: "1"})) is None
    other_job = {**tags, t.OWNER_SLURM_JOB: "999", t.OWNER_SLURM_RESTART: "0"}
    assert why_dead(run_with(**other_job)) is None


def test_close_ghosts_marks_only_the_dead_killed(tmp_path, sleeper, no_slurm):
    """In a real store: the dead owner's run becomes KILLED with an interrupted reason, which is
    what lets the next job of its config continue it; the live owner's run stays RUNNING."""
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("ghosts", artifact_location=str(tmp_path / "artifacts"))
    proc = subprocess.Popen(["sleep", "60"])
    dead_tags = owner(proc.pid)
    proc.kill()
    proc.wait()
    dead = client.create_run(experiment, tags=dead_tags).info.run_id
    live = client.create_run(experiment, tags=owner(sleeper.pid)).info.run_id
    assert close_ghosts(client, [experiment]) == [dead]
    dead_run, live_run = client.get_run(dead), client.get_run(live)
    assert dead_run.info.status == "KILLED"
    assert dead_run.data.tags[t.FAILURE] == f"{t.INTERRUPTED}: its process {proc.pid} on {HOST} is gone"
    assert live_run.info.status == "RUNNING" and t.FAILURE not in live_run.data.tags
