"""Early stopping (`trainer.early_stop`): the rule against an independent formulation, `fit` with
it on real (small) parts, a continued fit that stops where an uninterrupted one does, the config's
checks and identity, and through the entrypoint a SIGKILL in the middle of a patience window."""

from __future__ import annotations

import io
import random

import pytest
import torch
from hydra import compose, initialize_config_dir
from torch import nn

from cifar_sweep.batches import Loader, Normalize
from cifar_sweep.config.validate import check_config
from cifar_sweep.data import SyntheticSource, split_train_val
from cifar_sweep.errors import UserInputError
from cifar_sweep.plan.identity import config_hash, setting_hash
from cifar_sweep.train import checkpoint
from cifar_sweep.train.loop import (
    EarlyStop,
    Parts,
    Progress,
    early_stop,
    fit,
    restore,
    stop_reason,
    training_state,
)
from cifar_sweep.train.runtime import Runtime
from conftest import ROOT
from test_resume import jobs, kill_after, start

CPU = torch.device("cpu")


def stops_at(values: list[float], patience: int) -> int | None:
    """Independently, for min_delta 0: the first epoch e (from 1) at which none of the last
    `patience` epochs beat every epoch before them."""
    for e in range(patience + 1, len(values) + 1):
        if max(values[e - patience:e]) <= max(values[:e - patience]):
            return e
    return None


def rule_stops_at(values: list[float], stop: EarlyStop) -> int | None:
    done = Progress()
    for epoch, value in enumerate(values, 1):
        stop.update(done, value)
        if stop.reached(done):
            return epoch
    return None


@pytest.mark.parametrize("seed", range(30))
def test_the_rule_stops_where_no_epoch_of_the_window_beat_the_best_before_it(seed):
    draw = random.Random(seed)
    values = [round(draw.random(), 2) for _ in range(25)]  # rounded: ties happen
    for patience in (1, 2, 3, 5):
        assert rule_stops_at(values, EarlyStop(patience)) == stops_at(values, patience)


def test_min_delta_counts_only_improvements_larger_than_it():
    rising_slowly = [0.50, 0.505, 0.509, 0.515, 0.52]
    # 0.505 and 0.509 are within 0.01 of 0.50: two epochs without improvement
    assert rule_stops_at(rising_slowly, EarlyStop(2, 0.01)) == 3
    # with patience 3, 0.515 is an improvement over 0.50 (+0.015): counting starts again there
    assert rule_stops_at(rising_slowly, EarlyStop(3, 0.01)) is None
    assert rule_stops_at(rising_slowly, EarlyStop(2, 0.0)) is None  # every epoch better
    # the first epoch always improves on nothing, whatever the margin
    assert rule_stops_at([0.1, 0.1], EarlyStop(1, 0.5)) == 2


def test_the_rule_from_the_config():
    assert early_stop({"early_stop": {"patience": None, "min_delta": 0.3}}) is None
    assert early_stop({}) is None  # a config from before the key existed
    assert early_stop({"early_stop": {"patience": 4, "min_delta": 0.01}}) == EarlyStop(4, 0.01)


# --- fit on real parts: a linear model on generated images ------------------------------------

DATA = SyntheticSource(num_train=400, num_test=50, noise=150.0, seed=3).decode()


def parts(seed: int = 0) -> Parts:
    torch.manual_seed(seed)
    train, val = split_train_val(DATA[0], 0.25, 0)
    rt = Runtime(device=CPU, precision="fp32", channels_last=False, nhwc_train=False,
                 nhwc_eval=False, threads=1, chunk_images=1024)
    normalize = Normalize([0.5] * 3, [0.5] * 3, CPU)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.002, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return Parts(model, optimizer, scheduler, nn.CrossEntropyLoss(),
                 Loader(train, 32, normalize, generator=torch.Generator().manual_seed(seed)),
                 Loader(val, 100, normalize), Loader(val, 100, normalize), rt, rt.grad_scaler())


STOP = EarlyStop(patience=3)
CAP = 40


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """As a job on this CPU: one thread (torch's default pool is slower here, not different)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def uninterrupted() -> tuple[Progress, dict]:
    p = parts()
    done = fit(p, CAP, stop=STOP)
    return done, {k: v.clone() for k, v in p.model.state_dict().items()}


def test_fit_stops_where_the_rule_says_and_keeps_the_best_weights(uninterrupted):
    done, weights = uninterrupted
    val = done.history["val_accuracy"]
    assert len(val) == done.epoch < CAP  # it stopped before the cap (else this test shows nothing)
    assert stops_at(val, STOP.patience) == done.epoch
    assert stop_reason(done, STOP) == "early_stop"
    assert done.best_epoch == val.index(max(val)) + 1
    assert all(torch.equal(weights[k], done.best_state[k]) for k in weights)
    assert done.epochs_without_improvement == STOP.patience


def test_without_the_rule_fit_trains_to_the_cap():
    done = fit(parts(), 6)
    assert done.epoch == 6 and stop_reason(done, None) == "epochs"


class Killed(Exception):
    pass


def test_a_fit_continued_from_the_middle_of_a_patience_window_stops_where_it_would_have(
        uninterrupted):
    done, weights = uninterrupted
    # the epoch after which one epoch of the final window had passed without improvement
    kill_at = done.epoch - STOP.patience + 1
    saved = {}

    def kill(progress: Progress, row: dict) -> None:
        if progress.epoch == kill_at:  # as SaveCheckpoint writes it, then the process dies
            buffer = io.BytesIO()
            torch.save(training_state(first, progress), buffer)
            saved["state"] = buffer.getvalue()
            raise Killed

    first = parts()
    with pytest.raises(Killed):
        fit(first, CAP, after_epoch=kill, stop=STOP)
    state = torch.load(io.BytesIO(saved["state"]), weights_only=False)
    assert 0 < state["progress"]["epochs_without_improvement"] < STOP.patience
    continued = parts(seed=99)  # another initialisation: the checkpoint must decide everything
    resumed = fit(continued, CAP, restore(continued, state), stop=STOP)
    assert resumed.epoch == done.epoch
    timed = "epoch_seconds"  # wall time: the one thing a continued run may not repeat
    assert {k: v for k, v in resumed.history.items() if k != timed} == \
        {k: v for k, v in done.history.items() if k != timed}
    assert all(torch.equal(weights[k], v) for k, v in continued.model.state_dict().items())


def test_a_checkpoint_of_a_stopped_run_trains_no_more():
    done = fit(parts(), CAP, stop=EarlyStop(1))
    again = fit(parts(), CAP, done, stop=EarlyStop(1))
    assert again.epoch == done.epoch


# --- the config: checks and identity --------------------------------------------------------

FAST = ["data=synthetic", "trainer.epochs=1", "trainer.num_threads=1", "trainer.device=cpu"]


def compose_config(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=[*FAST, *overrides])


@pytest.mark.parametrize("override, allowed", [
    ("trainer.early_stop.patience=0", "trainer.early_stop.patience=0 is invalid: must be null "
     "(off) or an integer >= 1 (epochs without improvement)"),
    ("trainer.early_stop.patience=2.5",
     "trainer.early_stop.patience=2.5 is invalid: must be an integer or null"),
    ("trainer.early_stop.min_delta=-0.1", "trainer.early_stop.min_delta=-0.1 is invalid: must "
     "be a number >= 0 and < 1 (validation accuracy, 0-1)"),
    ("trainer.early_stop.min_delta=1", "trainer.early_stop.min_delta=1 is invalid: must "
     "be a number >= 0 and < 1 (validation accuracy, 0-1)"),
    ("+trainer.early_stop.patiense=3",
     "trainer.early_stop.patiense is not a setting here; allowed: patience, min_delta"),
    ("trainer.early_stop=5", "trainer.early_stop is a section, not a value: set its keys "
     "(patience, min_delta), e.g. trainer.early_stop.patience=..."),
])
def test_bad_values_are_one_line(override, allowed):
    with pytest.raises(UserInputError) as raised:
        check_config(compose_config(override))
    assert str(raised.value) == allowed


def test_off_keeps_the_identity_on_changes_it():
    def identity(*overrides):
        cfg = compose_config(*overrides)
        return config_hash(cfg, "fp", "cpu", "fp32"), setting_hash(cfg, "fp", "cpu", "fp32")

    off = identity()
    assert identity("trainer.early_stop.min_delta=0.05") == off  # no rule: the margin is moot
    on = identity("trainer.early_stop.patience=10")
    assert on[0] != off[0] and on[1] != off[1]
    assert identity("trainer.early_stop.patience=10", "trainer.early_stop.min_delta=0.01") != on
    assert identity("trainer.early_stop.patience=5") != on


# --- a job (in this process), and through the entrypoint -----------------------------------------

def test_a_run_stops_early_and_says_when_and_why(project):
    proc = project.job("trainer.epochs=30", "trainer.early_stop.patience=2",
                       "tracking.figures=false", "tracking.log_model=false", check=True)
    [run] = jobs(project)
    history = [m.value for m in sorted(project.client.get_metric_history(
        run.info.run_id, "val_accuracy"), key=lambda m: m.step)]
    expected = stops_at(history, 2)
    assert expected is not None and expected == len(history) < 30
    assert run.data.metrics["stopped_epoch"] == expected
    assert run.data.tags["stop_reason"] == "early_stop"
    assert run.data.params["trainer.early_stop.patience"] == "2"
    assert f"early-stopped after epoch {expected}:" in proc.stdout
    # the summary at the last epoch trained, not at the cap
    assert [m.step for m in project.client.get_metric_history(run.info.run_id,
                                                              "test_accuracy")] == [expected]



# noisy generated data on which validation accuracy stops improving at epoch 14 (1.0): with
# patience 3 the uninterrupted run stops at 17; killed after 15, the window is one epoch old
RUN = ("trainer.epochs=40", "trainer.early_stop.patience=3", "data.source.noise=100",
       "data.source.num_train=1000", "data.source.num_test=200", "tracking.figures=false",
       "tracking.log_model=false")


@pytest.mark.slow  # three entrypoint runs, about a minute here; in the default suite the
# in-process test_a_fit_continued_from_the_middle_of_a_patience_window... holds the same rule
def test_killed_in_a_patience_window_the_same_command_stops_at_the_same_epoch(project, tmp_path):
    kill_after(start(project, *RUN), "epoch 15/40")
    [ghost] = jobs(project)
    [saved] = (project.workdir / "checkpoints").rglob("*.pt")
    window = checkpoint.load(saved)["progress"]["epochs_without_improvement"]
    assert 0 < window < 3, f"killed outside the window ({window}): the test shows nothing"

    proc = project.job(*RUN, check=True)  # the kill above needs a process; this needs none
    assert "continuing from epoch" in proc.stdout
    [run] = jobs(project)
    assert run.info.run_id == ghost.info.run_id and run.info.status == "FINISHED"

    fresh = type(project)(tmp_path / "fresh")
    fresh.workdir.mkdir()
    fresh.job(*RUN, check=True)
    [uninterrupted] = jobs(fresh)
    history = [m.value for m in sorted(fresh.client.get_metric_history(
        uninterrupted.info.run_id, "val_accuracy"), key=lambda m: m.step)]
    expected = stops_at(history, 3)
    assert expected is not None and expected < 40
    for r in (run, uninterrupted):
        assert r.data.metrics["stopped_epoch"] == expected
        assert r.data.tags["stop_reason"] == "early_stop"
    assert [m.step for m in project.client.get_metric_history(run.info.run_id, "val_accuracy")] \
        == list(range(1, expected + 1))
    assert run.data.metrics["test_accuracy"] == uninterrupted.data.metrics["test_accuracy"]


# --- the tables: off is as absent -----------------------------------------------------------

def test_a_table_mixes_runs_with_early_stopping_off_and_runs_from_before_it_only():
    """Runs logged before the keys existed and runs with them off are one setting (as their
    config hash says): a table of a newer sweep takes the older runs in; a run with a patience
    is a row of its own, named by it."""
    import pandas as pd

    from cifar_sweep.report.selection import choose
    from cifar_sweep.results import _frame

    keys = {"lr.value", "trainer.seed", "trainer.early_stop.patience", "trainer.early_stop.min_delta"}

    def job(run_id, seed, sweep, setting="s", **early):
        return {"run_id": run_id, "status": "FINISHED", "sweeps": sweep, "seed": str(seed),
                "start_time": pd.Timestamp("2026-01-01") + pd.Timedelta(seconds=seed),
                "role": "job", "setting_hash": setting, "code_version": "c",
                "data_fingerprint": "fp", "precision": "fp32", "device": "cpu",
                "overrides": f"trainer.seed={seed}", "lr.value": "0.005", "trainer.seed": str(seed),
                "test_accuracy": 0.5, **early}

    off = {"trainer.early_stop.patience": "None", "trainer.early_stop.min_delta": "0.0"}
    on = {**off, "trainer.early_stop.patience": "10"}
    frame = _frame([job("old", 0, "B"), job("off1", 1, "A", **off), job("off2", 2, "A", **off),
                    job("on", 3, "C", "s-on", **on)], keys, {"test_accuracy"})
    sweeps = pd.DataFrame([{"run_id": s, "start_time": pd.Timestamp(f"2026-01-0{d}"),
                            "varying": "trainer.seed"} for s, d in (("B", 1), ("A", 2), ("C", 1))])
    selection = choose(frame, sweeps, sweep="A")
    rows = {r.label: sorted(r.run_ids) for r in selection.rows}
    assert sorted(rows.values()) == [["off1", "off2", "old"], ["on"]]
    assert "trainer.early_stop.patience=10" in next(k for k, v in rows.items() if v == ["on"])
    assert not selection.left_out
