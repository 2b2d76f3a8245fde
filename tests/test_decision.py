"""decision.py: what a job will do, from its config and a real MLflow store (one SQLite store for
the module, each test's runs under a config hash of their own): reuse a finished run, stand aside
for a live one, continue an interrupted one from its checkpoint, or train; each of these decided
by one job (`decide`) and by a sweep's bulk plan (`bulk_plan.Plan.decide`) alike; the table of
`choose`'s cases; the notes on runs made by other code; the plan's line for each decision; and
the identity a job has, worked out ahead."""

from __future__ import annotations

import logging
import socket
import time
import uuid
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from mlflow.entities import Run, RunData, RunInfo, RunTag
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from cifar_sweep.errors import UserInputError
from cifar_sweep.plan import decision
from cifar_sweep.plan.bulk_plan import JobPlan, Plan
from cifar_sweep.plan.decision import CONTINUE, ELSEWHERE, FINISHED, TRAIN, Decision, Facts
from cifar_sweep.plan.identity import Identity, config_hash, identify, identify_ahead, setting_hash
from cifar_sweep.tracking import lifecycle
from cifar_sweep.tracking import tags as t
from cifar_sweep.train import checkpoint, gpu_slots
from conftest import ROOT

FINGERPRINT = "synthetic-500c68d943a271567435"
PRECISION = "fp32"
CODE = {"augment": "a1", "loss": "l1", "model": "m1", "training": "t1"}
DEAD_PID = "4194305"  # above Linux's largest possible pid (2**22): never a live process
HOST = socket.gethostname()


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> MlflowClient:
    # creating a store's tables takes ~2 s: one store for the module, an experiment per test
    return MlflowClient(tracking_uri=f"sqlite:///{tmp_path_factory.mktemp('store')}/mlflow.db")


@pytest.fixture(scope="module")
def composed():
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=["data=synthetic", "trainer.epochs=5"])


@pytest.fixture
def cfg(composed, tmp_path):
    return OmegaConf.merge(composed, {"checkpoint": {"dir": str(tmp_path / "checkpoints")}})


def settings(cfg, **trainer):
    return OmegaConf.merge(cfg, {"trainer": trainer})


@pytest.fixture
def identity() -> Identity:
    # find_finished looks through every experiment of the store: a config of this test's own
    key = uuid.uuid4().hex[:16]
    return Identity(config_hash=f"c{key}", setting_hash=f"s{key}", code=dict(CODE))


@pytest.fixture
def experiment(client) -> str:
    return client.create_experiment(f"exp-{uuid.uuid4().hex}")


def make_run(client, experiment: str, identity: Identity, status: str, start: int | None = None,
             **tags: str) -> str:
    """A job's run as a job writes it: its identity's tags, its role, then its end (if any)."""
    run = client.create_run(experiment, start_time=start,
                            tags={**identity.tags(), t.ROLE: t.ROLE_JOB,
                                  t.DATA_FINGERPRINT: FINGERPRINT, t.PRECISION: PRECISION, **tags})
    if status != "RUNNING":
        client.set_terminated(run.info.run_id, status)
    return run.info.run_id


def other_code(identity: Identity, **changed: str) -> Identity:
    return Identity(identity.config_hash, identity.setting_hash, {**identity.code, **changed})


def decided(cfg, identity: Identity, client, experiment: str) -> Decision:
    """decide's decision for one job, checked against what a sweep's bulk plan (bulk_plan.Plan.decide,
    what `src/plan.py` prints and the sweep launches by) decides for it on the same store."""
    one = decision.decide(cfg, identity, client, experiment)
    job = JobPlan(0, [], identity=identity, fingerprint=FINGERPRINT, precision=PRECISION,
                   rerun=bool(cfg.trainer.rerun), reuse_other_code=bool(cfg.trainer.reuse_other_code),
                   epochs=int(cfg.trainer.epochs), checkpoint_dir=str(cfg.checkpoint.dir))
    Plan([job], None, None).decide(client, experiment, load_state=True)  # type: ignore[arg-type]
    bulk = job.decision
    assert bulk is not None
    assert ((bulk.action, bulk.run and bulk.run.info.run_id, bulk.note, bulk.epoch)
            == (one.action, one.run and one.run.info.run_id, one.note, one.epoch))
    return one


def save_checkpoint(cfg, identity: Identity, run_id: str, epoch: int) -> Path:
    path = decision.checkpoint_path(cfg, identity, run_id)
    checkpoint.save(path, {"progress": {"epoch": epoch}, "model": {"w": torch.ones(3)}})
    return path


def live_owner() -> dict[str, str]:
    return lifecycle.owner_tags()  # this process: alive for as long as the test runs


def dead_owner() -> dict[str, str]:
    return {t.OWNER_HOST: HOST, t.OWNER_PID: DEAD_PID, t.OWNER_START: "1"}


def remote_owner(heartbeat_age_s: float) -> dict[str, str]:
    return {t.OWNER_HOST: "node-7", t.OWNER_PID: "77", t.HEARTBEAT: f"{time.time() - heartbeat_age_s:.0f}",
            t.HEARTBEAT_TIMEOUT: "600"}


def run_with(run_id: str = "r1", **tags: str) -> Run:
    info = RunInfo(run_id=run_id, experiment_id="0", user_id="u", status="FINISHED", start_time=0,
                   end_time=None, lifecycle_stage="active")
    return Run(info, RunData(tags=[RunTag(k, v) for k, v in tags.items()]))


# --- decide: finished before ---------------------------------------------------------------------

def test_a_config_never_run_trains(cfg, identity, client, experiment):
    d = decided(cfg, identity, client, experiment)
    assert (d.action, d.run, d.state, d.note) == (TRAIN, None, None, "")
    assert d.line(5) == "train"


def test_a_finished_run_of_this_config_and_code_is_reused(cfg, identity, client, experiment):
    make_run(client, experiment, other_code(identity, model="m2"), "KILLED")  # not this code's
    done = make_run(client, experiment, identity, "FINISHED")
    d = decided(cfg, identity, client, experiment)
    assert (d.action, d.run.info.run_id, d.note) == (FINISHED, done, "")
    assert d.line(5) == f"already finished: run {done}"


def test_a_finished_run_in_another_experiment_is_reused_too(cfg, identity, client, experiment):
    # the studies of one store share their baseline
    done = make_run(client, client.create_experiment(f"exp-{uuid.uuid4().hex}"), identity, "FINISHED")
    d = decided(cfg, identity, client, experiment)
    assert (d.action, d.run.info.run_id) == (FINISHED, done)


def test_rerun_trains_again_despite_a_finished_run(cfg, identity, client, experiment):
    make_run(client, experiment, identity, "FINISHED")
    d = decided(settings(cfg, rerun=True), identity, client, experiment)
    assert (d.action, d.note) == (TRAIN, "")


def test_a_finished_run_of_other_code_trains_again_and_the_note_says_why(cfg, identity, client,
                                                                          experiment):
    old = make_run(client, experiment, other_code(identity, model="m0"), "FINISHED")
    d = decided(cfg, identity, client, experiment)
    assert d.action == TRAIN
    assert d.note == (f"this config finished before as run {old}, but other code made it "
                      f"(changed: model): training again; trainer.reuse_other_code=true reuses it")
    assert d.line(5) == f"train ({d.note})"


def test_reuse_other_code_reuses_it_with_a_note(cfg, identity, client, experiment):
    old = make_run(client, experiment, other_code(identity, model="m0", loss="l0"), "FINISHED")
    d = decided(settings(cfg, reuse_other_code=True), identity, client, experiment)
    assert (d.action, d.run.info.run_id) == (FINISHED, old)
    assert d.note == "made by other code (loss, model): trainer.reuse_other_code=true"
    assert d.line(5) == f"already finished: run {old} (made by other code (loss, model): " \
                        "trainer.reuse_other_code=true)"


def test_this_codes_finished_run_wins_over_a_newer_one_of_other_code(cfg, identity, client, experiment):
    mine = make_run(client, experiment, identity, "FINISHED")
    make_run(client, experiment, other_code(identity, model="m0"), "FINISHED")
    d = decided(settings(cfg, reuse_other_code=True), identity, client, experiment)
    assert (d.action, d.run.info.run_id, d.note) == (FINISHED, mine, "")


def test_a_run_from_before_code_parts_were_recorded_says_so(cfg, identity, client, experiment):
    run = client.create_run(experiment, tags={t.CONFIG_HASH: identity.config_hash, t.ROLE: t.ROLE_JOB,
                                              t.CODE_VERSION: "0ld", t.DATA_FINGERPRINT: FINGERPRINT,
                                              t.PRECISION: PRECISION})
    client.set_terminated(run.info.run_id, "FINISHED")
    d = decided(cfg, identity, client, experiment)
    assert d.action == TRAIN
    assert "other code made it (changed: code versions not recorded then)" in d.note


# --- decide: elsewhere ---------------------------------------------------------------------------

def test_a_live_run_of_this_config_is_left_to_its_owner(cfg, identity, client, experiment):
    live = make_run(client, experiment, identity, "RUNNING", **live_owner())
    d = decided(cfg, identity, client, experiment)
    assert (d.action, d.run.info.run_id) == (ELSEWHERE, live)
    assert d.line(5) == f"being trained by {HOST} pid {live_owner()[t.OWNER_PID]} as run {live}"


def test_a_jobs_own_run_is_never_elsewhere(cfg, identity, client, experiment):
    mine = make_run(client, experiment, identity, "RUNNING", **live_owner())
    assert decision.decide(cfg, identity, client, experiment, me=mine).action == TRAIN


def test_a_live_run_on_another_host_with_a_fresh_heartbeat_is_elsewhere(cfg, identity, client,
                                                                        experiment):
    live = make_run(client, experiment, identity, "RUNNING", **remote_owner(heartbeat_age_s=5))
    d = decided(cfg, identity, client, experiment)
    assert d.action == ELSEWHERE
    assert d.line(5) == f"being trained by node-7 pid 77 as run {live}"


def test_a_finished_run_is_reused_before_a_live_one_is_waited_for(cfg, identity, client, experiment):
    done = make_run(client, experiment, identity, "FINISHED")
    make_run(client, experiment, identity, "RUNNING", **live_owner())
    d = decided(cfg, identity, client, experiment)
    assert (d.action, d.run.info.run_id) == (FINISHED, done)


def test_a_live_run_goes_before_continuing_an_interrupted_one(cfg, identity, client, experiment):
    killed = make_run(client, experiment, identity, "KILLED")
    save_checkpoint(cfg, identity, killed, epoch=2)
    live = make_run(client, experiment, identity, "RUNNING", **live_owner())
    d = decided(cfg, identity, client, experiment)
    assert (d.action, d.run.info.run_id) == (ELSEWHERE, live)


def test_a_live_run_of_other_code_is_not_waited_for(cfg, identity, client, experiment):
    make_run(client, experiment, other_code(identity, training="t0"), "RUNNING", **live_owner())
    assert decided(cfg, identity, client, experiment).action == TRAIN


# --- decide: continue ----------------------------------------------------------------------------

@pytest.mark.parametrize(("status", "tags"), [
    ("KILLED", {}),
    ("FAILED", {t.FAILURE: f"{t.INTERRUPTED}: stopped by the environment: no space left"}),
    ("RUNNING", dead_owner()),                            # its process on this host is gone
    ("RUNNING", remote_owner(heartbeat_age_s=3600)),      # no heartbeat for an hour
], ids=["killed", "failed interrupted", "owner gone", "heartbeat stale"])
def test_an_interrupted_run_with_a_checkpoint_is_continued(cfg, identity, client, experiment,
                                                           status, tags):
    run = make_run(client, experiment, identity, status, **tags)
    save_checkpoint(cfg, identity, run, epoch=2)
    d = decided(cfg, identity, client, experiment)
    assert (d.action, d.run.info.run_id, d.epoch) == (CONTINUE, run, 2)
    assert d.state["model"]["w"].tolist() == [1.0, 1.0, 1.0]  # the checkpoint, loaded
    assert d.line(5) == f"continue run {run} from epoch 3"


def test_a_run_whose_loss_became_nan_is_not_continued(cfg, identity, client, experiment):
    run = make_run(client, experiment, identity, "FAILED", **{t.FAILURE: "loss became NaN at epoch 2"})
    save_checkpoint(cfg, identity, run, epoch=2)
    assert decided(cfg, identity, client, experiment).action == TRAIN


def test_an_interrupted_run_without_its_checkpoint_starts_over(cfg, identity, client, experiment):
    run = make_run(client, experiment, identity, "KILLED")
    # a checkpoint of the same run id under another config's folder is not this one's
    save_checkpoint(cfg, other := Identity("c-other", "s-other", CODE), run, epoch=2)
    assert other.config_hash != identity.config_hash
    assert decided(cfg, identity, client, experiment).action == TRAIN


def test_the_newest_interrupted_run_that_has_a_checkpoint_is_the_one_continued(cfg, identity, client,
                                                                               experiment):
    now_ms = int(time.time() * 1000)
    older = make_run(client, experiment, identity, "KILLED", start=now_ms - 60_000)
    save_checkpoint(cfg, identity, older, epoch=3)
    # started a minute later, killed before its first checkpoint: the newest, with nothing to load
    make_run(client, experiment, identity, "KILLED", start=now_ms)
    d = decided(cfg, identity, client, experiment)
    assert (d.action, d.run.info.run_id, d.epoch) == (CONTINUE, older, 3)


def test_an_unreadable_checkpoint_starts_the_run_over(cfg, identity, client, experiment, caplog):
    run = make_run(client, experiment, identity, "KILLED")
    path = save_checkpoint(cfg, identity, run, epoch=2)
    path.write_bytes(path.read_bytes()[:100])  # truncated
    with caplog.at_level(logging.WARNING):
        d = decided(cfg, identity, client, experiment)
    assert (d.action, d.run, d.state) == (TRAIN, None, None)
    assert any(str(path) in r.getMessage() for r in caplog.records)


def test_another_codes_interrupted_run_is_not_continued(cfg, identity, client, experiment):
    old = other_code(identity, model="m0")
    run = make_run(client, experiment, old, "KILLED")
    save_checkpoint(cfg, old, run, epoch=2)  # the same config hash: the same folder
    assert decision.checkpoint_path(cfg, old, run) == decision.checkpoint_path(cfg, identity, run)
    assert decided(cfg, identity, client, experiment).action == TRAIN


def test_an_interrupted_run_of_another_experiment_is_not_continued(cfg, identity, client, experiment):
    run = make_run(client, client.create_experiment(f"exp-{uuid.uuid4().hex}"), identity, "KILLED")
    save_checkpoint(cfg, identity, run, epoch=2)
    assert decided(cfg, identity, client, experiment).action == TRAIN


def test_continuing_keeps_the_note_on_other_codes_finished_run(cfg, identity, client, experiment):
    old = make_run(client, experiment, other_code(identity, model="m0"), "FINISHED")
    run = make_run(client, experiment, identity, "KILLED")
    save_checkpoint(cfg, identity, run, epoch=4)
    d = decided(cfg, identity, client, experiment)
    assert (d.action, d.run.info.run_id) == (CONTINUE, run)
    assert d.note.startswith(f"this config finished before as run {old}, but other code made it")
    assert d.line(5) == f"continue run {run} from epoch 5 ({d.note})"


def test_the_checkpoint_path_is_the_configs_checkpoint_dir_hash_and_run(cfg, identity):
    assert decision.checkpoint_path(cfg, identity, "r7") == (
        Path(cfg.checkpoint.dir) / identity.config_hash / "r7.pt")


# --- Decision.line and epoch ---------------------------------------------------------------------

def test_a_checkpoint_with_every_epoch_trained_is_evaluated_and_logged_not_trained():
    d = Decision(CONTINUE, run_with("r1"), {"progress": {"epoch": 5}})
    assert d.line(5) == "evaluate and log run r1 from its checkpoint (5 epochs trained)"
    # trainer.epochs lowered below what the checkpoint holds: nothing left to train either
    assert d.line(3) == "evaluate and log run r1 from its checkpoint (5 epochs trained)"
    assert d.line(6) == "continue run r1 from epoch 6"


def test_a_live_run_without_owner_tags_is_shown_with_question_marks():
    assert Decision(ELSEWHERE, run_with("r2")).line(5) == "being trained by ? pid ? as run r2"


def test_a_decision_without_a_checkpoint_is_at_epoch_0():
    assert Decision(TRAIN).epoch == 0 and Decision(FINISHED, run_with()).epoch == 0


# --- choose: the table of its cases -------------------------------------------------------------

SAME = run_with("same", **{t.CODE_PART + k: v for k, v in CODE.items()})
OTHER = run_with("other", **{t.CODE_PART + k: v for k, v in {**CODE, "model": "m0"}.items()})
LIVE, LIVE_LATER, STOPPED = run_with("live"), run_with("live-later"), run_with("stopped")
NOT_AGAIN = ("this config finished before as run other, but other code made it (changed: model): "
             "training again; trainer.reuse_other_code=true reuses it")
REUSED = "made by other code (model): trainer.reuse_other_code=true"


@pytest.mark.parametrize(
    ("rerun", "reuse", "same", "other", "live", "continuable", "expected"), [
        # nothing in the store: train
        (False, False, None, None, [], None, (TRAIN, None, "")),
        # finished by this code: reused, whatever else there is
        (False, False, SAME, None, [], None, (FINISHED, "same", "")),
        (False, False, SAME, None, [LIVE], STOPPED, (FINISHED, "same", "")),
        (False, True, SAME, OTHER, [], None, (FINISHED, "same", "")),
        # finished by other code only: trained again with a note, reused where allowed
        (False, False, None, OTHER, [], None, (TRAIN, None, NOT_AGAIN)),
        (False, True, None, OTHER, [LIVE], STOPPED, (FINISHED, "other", REUSED)),
        # trainer.rerun: a finished run is not looked at, no note
        (True, False, SAME, None, [], None, (TRAIN, None, "")),
        (True, True, None, OTHER, [], None, (TRAIN, None, "")),
        # a live run: the first claim wins, before continuing an interrupted one
        (False, False, None, None, [LIVE, LIVE_LATER], STOPPED, (ELSEWHERE, "live", "")),
        (True, False, SAME, None, [LIVE], None, (ELSEWHERE, "live", "")),
        (False, False, None, OTHER, [LIVE], None, (ELSEWHERE, "live", "")),
        # an interrupted run with its checkpoint: continued, keeping the other-code note
        (False, False, None, None, [], STOPPED, (CONTINUE, "stopped", "")),
        (True, False, SAME, None, [], STOPPED, (CONTINUE, "stopped", "")),
        (False, False, None, OTHER, [], STOPPED, (CONTINUE, "stopped", NOT_AGAIN)),
    ])
def test_choose_decides_from_the_facts_alone(rerun, reuse, same, other, live, continuable,
                                             expected):
    identity = Identity("c", "s", CODE)
    d = decision.choose(rerun, reuse, identity, Facts(same, other, live, continuable))
    assert (d.action, d.run.info.run_id if d.run else None, d.note) == expected
    assert d.state is None  # the checkpoint is read afterwards (with_checkpoint)


def test_with_checkpoint_reads_a_continued_runs_state_or_trains_over(tmp_path):
    good, bad = tmp_path / "good.pt", tmp_path / "bad.pt"
    checkpoint.save(good, {"progress": {"epoch": 4}, "model": {"w": torch.ones(1)}})
    bad.write_bytes(b"not a checkpoint")
    continued = Decision(CONTINUE, STOPPED, note="n")
    assert decision.with_checkpoint(continued, good).epoch == 4
    assert (decision.with_checkpoint(continued, bad).action,
            decision.with_checkpoint(continued, bad).note) == (TRAIN, "n")
    assert decision.with_checkpoint(Decision(TRAIN), tmp_path / "none.pt").action == TRAIN


# --- choose_finished -----------------------------------------------------------------------------

def test_choose_finished_without_any_run_is_none_and_no_note():
    identity = Identity("c", "s", CODE)
    assert decision.choose_finished(False, identity, None, None) == (None, "")
    assert decision.choose_finished(True, identity, None, None) == (None, "")


def test_choose_finished_lists_every_changed_part_sorted_a_part_not_recorded_included():
    identity = Identity("c", "s", CODE)
    # the old run recorded no augment part (older code had none): that part counts as changed
    old = run_with("old", **{t.CODE_PART + "loss": "l1", t.CODE_PART + "model": "m0",
                             t.CODE_PART + "training": "t0", t.CONFIG_HASH: "c"})
    run, note = decision.choose_finished(True, identity, None, old)
    assert run is old
    assert note == "made by other code (augment, model, training): trainer.reuse_other_code=true"


def test_choose_finished_names_a_part_no_longer_hashed():
    """Every part of today's code agrees with the old run's, but the old run had one more: its
    version differs, and the note says which part it was, not an empty list."""
    identity = Identity("c", "s", CODE)
    old = run_with("old", **{t.CODE_PART + k: v for k, v in CODE.items()},
                   **{t.CODE_PART + "tokenizer": "x1", t.CONFIG_HASH: "c"})
    run, note = decision.choose_finished(True, identity, None, old)
    assert run is old
    assert note == ("made by other code (a part no longer hashed: tokenizer): "
                    "trainer.reuse_other_code=true")


def test_choose_finished_prefers_this_codes_run_without_a_note():
    identity = Identity("c", "s", CODE)
    mine, other = run_with("mine"), run_with("other", **{t.CODE_PART + "model": "m0"})
    assert decision.choose_finished(False, identity, mine, other) == (mine, "")


# --- Identity, identify_ahead --------------------------------------------------------------------

def test_a_changed_code_part_changes_the_code_version_and_that_tag_only():
    a, b = Identity("c", "s", CODE), Identity("c", "s", {**CODE, "loss": "l2"})
    assert a.code_version != b.code_version
    changed = {k for k in a.tags() if a.tags()[k] != b.tags()[k]}
    assert changed == {t.CODE_VERSION, t.CODE_PART + "loss"}
    assert a.tags()[t.TORCH_VERSION] == torch.__version__


def test_identify_ahead_resolves_device_and_precision_as_the_job_will(composed):
    cfg = settings(composed, device="cpu", precision="auto")
    ahead = identify_ahead(cfg, FINGERPRINT)
    assert ahead == identify(cfg, FINGERPRINT, "cpu", "fp32")
    assert (ahead.config_hash, ahead.setting_hash) == (config_hash(cfg, FINGERPRINT, "cpu", "fp32"),
                                                       setting_hash(cfg, FINGERPRINT, "cpu", "fp32"))
    assert ahead.config_hash != identify(cfg, FINGERPRINT, "cpu", "bf16").config_hash
    bf16 = settings(composed, device="cpu", precision="bf16")
    assert identify_ahead(bf16, FINGERPRINT) == identify(bf16, FINGERPRINT, "cpu", "bf16")


def test_identify_ahead_on_a_gpu_takes_no_gpu_slot(composed, monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)

    def no_set_device(device):
        raise AssertionError(f"identify_ahead made {device} the current device")

    monkeypatch.setattr(torch.cuda, "set_device", no_set_device)
    monkeypatch.setattr(gpu_slots, "default_folder", lambda: tmp_path / "slots")
    cfg = settings(composed, device="cuda", precision="auto")
    assert identify_ahead(cfg, FINGERPRINT) == identify(cfg, FINGERPRINT, "cuda", "bf16")
    assert not (tmp_path / "slots").exists()


def test_identify_ahead_for_a_device_this_machine_lacks_is_one_line(composed, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserInputError, match=r"^trainer\.device=cuda:1 is invalid: CUDA is not available"):
        identify_ahead(settings(composed, device="cuda:1"), FINGERPRINT)
