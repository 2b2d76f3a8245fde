"""cifar_sweep.job.epoch_hooks, each hook called as `fit` calls it after an epoch: the checkpoint
(a file a continued run restores exactly, with the job's seconds), the metrics and heartbeat in a
real local MLflow store, the progress line and bar, the report to a real Optuna trial, and the
chain that runs them in order. The training parts are real but the smallest: a linear model on
eight 4x4 images; no epoch is trained (each test sets the state a hook must save or show)."""

from __future__ import annotations

import io
import logging
import sys
import time
from types import SimpleNamespace

import optuna
import pytest
import torch
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from torch import nn

from cifar_sweep.batches import Loader, Normalize
from cifar_sweep.data.tensors import Split
from cifar_sweep.errors import Pruned
from cifar_sweep.job import epoch_hooks
from cifar_sweep.search.optuna_study import TrialReporter
from cifar_sweep.search.workers import open_storage
from cifar_sweep.tracking import tags as t
from cifar_sweep.tracking.lifecycle import HEARTBEAT_EPOCHS, HEARTBEAT_FLOOR_S
from cifar_sweep.train import checkpoint
from cifar_sweep.train.loop import HISTORY_KEYS, Parts, Progress, restore
from cifar_sweep.train.runtime import Runtime

CPU = torch.device("cpu")
ROW = {"train_loss": 1.23456, "train_accuracy": 0.5, "val_loss": 0.98765, "val_accuracy": 0.625,
       "lr": 0.005, "epoch_seconds": 12.34}


def parts(seed: int) -> Parts:
    """The smallest real parts: what `loop.build` makes, for 8 images of 3x4x4 and 3 classes."""
    torch.manual_seed(seed)
    split = Split(torch.randint(0, 256, (8, 3, 4, 4), dtype=torch.uint8), torch.arange(8) % 3)
    rt = Runtime(device=CPU, precision="fp32", channels_last=False, nhwc_train=False,
                 nhwc_eval=False, threads=1, chunk_images=1024)
    normalize = Normalize([0.5] * 3, [0.25] * 3, CPU)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    train = Loader(split, 4, normalize, generator=torch.Generator().manual_seed(seed))
    val = Loader(split, 4, normalize)
    return Parts(model, optimizer, scheduler, nn.CrossEntropyLoss(), train, val, val, rt,
                 rt.grad_scaler())


def advanced(p: Parts) -> Parts:
    """State no fresh build has: a momentum buffer, a stepped schedule, a drawn data generator."""
    for param in p.model.parameters():
        param.grad = torch.ones_like(param)
    p.optimizer.step()
    p.scheduler.step()
    torch.rand(5, generator=p.train.generator)
    return p


def progress(epoch: int) -> Progress:
    done = Progress(epoch=epoch, best_epoch=epoch, best_val_accuracy=0.625, train_seconds=3.5,
                    fit_seconds=4.0, images_seen=8 * epoch)
    for key in HISTORY_KEYS:
        done.history[key] = [ROW[key]] * epoch
    return done


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> MlflowClient:
    """One real local store for the file (its schema migrations take seconds)."""
    return MlflowClient(tracking_uri=f"sqlite:///{tmp_path_factory.mktemp('store')}/mlflow.db")


@pytest.fixture
def run_id(client, request) -> str:
    return client.create_run(client.create_experiment(request.node.name)).info.run_id


# --- the checkpoint --------------------------------------------------------------------------------

def test_the_checkpoint_restores_the_parts_and_progress_it_was_saved_from(tmp_path):
    saved = advanced(parts(seed=0))
    path = checkpoint.path_for(str(tmp_path / "checkpoints"), "abc123", "run1")  # folders not made yet
    epoch_hooks.SaveCheckpoint(path, saved, 0.0, time.perf_counter())(progress(2), ROW)

    state = checkpoint.load(path)  # weights_only: plain tensors and numbers
    assert state is not None
    fresh = parts(seed=1)  # other weights, an unstepped optimizer and schedule, another generator
    restored = restore(fresh, state)
    assert restored == progress(2)
    for a, b in zip(saved.model.parameters(), fresh.model.parameters(), strict=True):
        assert torch.equal(a, b)
    momentum = [fresh.optimizer.state[q]["momentum_buffer"] for q in fresh.model.parameters()]
    assert all(torch.equal(m, torch.ones_like(m)) for m in momentum)
    assert fresh.scheduler.last_epoch == 1
    # the next epoch's shuffling and augmentation: the same draws as the saved run's
    assert torch.equal(fresh.train.generator.get_state(), saved.train.generator.get_state())


def test_the_checkpoint_counts_the_seconds_before_and_since_the_job_started(tmp_path):
    path = tmp_path / "run.pt"
    # a continued run: 100 s in earlier attempts, this attempt started 5 s ago
    started = time.perf_counter() - 5
    hook = epoch_hooks.SaveCheckpoint(path, parts(seed=0), 100.0, started)
    hook(progress(1), ROW)
    after = time.perf_counter()
    seconds = checkpoint.load(path)["job_seconds"]
    assert 105 <= seconds <= 100 + after - started


def test_each_epochs_checkpoint_replaces_the_last_and_leaves_no_partial_file(tmp_path):
    path = tmp_path / "abc123" / "run1.pt"
    hook = epoch_hooks.SaveCheckpoint(path, parts(seed=0), 0.0, time.perf_counter())
    for epoch in (1, 2):
        hook(progress(epoch), ROW)
    assert checkpoint.load(path)["progress"]["epoch"] == 2
    assert [f.name for f in path.parent.iterdir()] == ["run1.pt"]


# --- the metrics and the heartbeat -----------------------------------------------------------------

def test_the_epochs_metrics_are_logged_at_its_step_with_a_fresh_heartbeat(client, run_id):
    hook = epoch_hooks.LogMetrics(client, run_id)
    before = time.time()
    hook(progress(3), ROW)
    run = client.get_run(run_id)
    assert run.data.metrics == pytest.approx(ROW)
    for key in ROW:
        assert [m.step for m in client.get_metric_history(run_id, key)] == [3]
    # whole seconds, so the tag may read up to a second before `before`
    assert before - 1 <= float(run.data.tags[t.HEARTBEAT]) <= time.time() + 1
    # a quick epoch: the floor, which covers a slow first epoch
    assert run.data.tags[t.HEARTBEAT_TIMEOUT] == str(HEARTBEAT_FLOOR_S)


def test_the_heartbeat_timeout_follows_each_epochs_own_wall_time(client, run_id):
    hook = epoch_hooks.LogMetrics(client, run_id)
    hook.last -= 1000  # as if this epoch had taken 1000 s since the last one ended
    hook(progress(1), ROW)
    timeout = int(client.get_run(run_id).data.tags[t.HEARTBEAT_TIMEOUT])
    # a few epochs' time, over the floor (the epoch took 1000 s and the microseconds since)
    assert HEARTBEAT_EPOCHS * 1000 <= timeout <= HEARTBEAT_EPOCHS * 1000 + 4
    hook(progress(2), ROW)  # the next epoch is timed from the last one's end, not the start
    assert client.get_run(run_id).data.tags[t.HEARTBEAT_TIMEOUT] == str(HEARTBEAT_FLOOR_S)


# --- the progress line and bar ---------------------------------------------------------------------

def test_each_epoch_is_one_log_line_with_its_numbers(caplog):
    shown = epoch_hooks.ShowProgress(epochs=10, done=2)
    with caplog.at_level(logging.INFO, logger="cifar_sweep"):
        shown(progress(3), ROW)
    shown.close()
    assert [r.getMessage() for r in caplog.records if r.name == "cifar_sweep"] == [
        "epoch 3/10  train loss 1.2346 acc 0.5000  val loss 0.9877 acc 0.6250  lr 5.00e-03  12.3s"]


class Terminal(io.StringIO):
    """A stderr that a person watches."""

    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_bar_counting_on_from_a_continued_runs_epochs(monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    shown = epoch_hooks.ShowProgress(epochs=10, done=2)
    shown(progress(3), ROW)
    drawn = terminal.getvalue()
    shown.close()
    # the continued run's 2 epochs, then this one: 3 of 10, with its validation accuracy
    assert "3/10" in drawn and "val acc 0.6250" in drawn, drawn


def test_a_log_file_gets_no_bar(monkeypatch):
    not_a_terminal = io.StringIO()  # isatty() is False: a job's redirected stderr
    monkeypatch.setattr(sys, "stderr", not_a_terminal)
    shown = epoch_hooks.ShowProgress(epochs=10, done=0)
    shown(progress(1), ROW)
    shown.close()
    assert not_a_terminal.getvalue() == ""


# --- a search's trial ------------------------------------------------------------------------------

def test_each_epochs_validation_accuracy_goes_to_the_trial_whose_pruner_may_stop_it(tmp_path):
    url = f"journal:{tmp_path / 'study.log'}"
    study = optuna.create_study(study_name="s", storage=open_storage(url), direction="maximize")
    earlier = study.ask()  # a finished trial far better at every epoch
    for epoch in (1, 2):
        earlier.report(0.9, epoch)
    study.tell(earlier, 0.9)
    trial = study.ask()
    sweeper = SimpleNamespace(storage=url, study_name="s",
                              pruner={"kind": "median", "n_startup_trials": 0, "n_warmup_steps": 2})
    hook = epoch_hooks.ReportToTrial(TrialReporter(sweeper, trial.number))

    # the step is the epoch: Optuna prunes from step n_warmup_steps on, so epoch 1 is reported
    # and goes on, however bad
    hook(progress(1), {**ROW, "val_accuracy": 0.2})
    with pytest.raises(Pruned, match="pruned after epoch 2"):
        hook(progress(2), {**ROW, "val_accuracy": 0.3})
    assert study.trials[trial.number].intermediate_values == {1: 0.2, 2: 0.3}


# --- the chain -------------------------------------------------------------------------------------

def test_the_chain_calls_each_hook_in_order_with_the_epoch_skipping_absent_ones():
    calls = []

    def hook(name):
        return lambda p, row: calls.append((name, p.epoch, row["val_accuracy"]))

    after_epoch = epoch_hooks.chain(hook("a"), None, hook("b"), None)
    after_epoch(progress(4), ROW)
    assert calls == [("a", 4, 0.625), ("b", 4, 0.625)]


def test_a_store_that_fails_the_metrics_still_leaves_the_epochs_checkpoint(client, tmp_path):
    """The checkpoint comes first: the continued run logs what the store lacks."""
    path = tmp_path / "run.pt"
    shown = []
    after_epoch = epoch_hooks.chain(
        epoch_hooks.SaveCheckpoint(path, parts(seed=0), 0.0, time.perf_counter()),
        epoch_hooks.LogMetrics(client, "0" * 32),  # a run the store does not have
        lambda p, row: shown.append(p.epoch))
    with pytest.raises(MlflowException):
        after_epoch(progress(1), ROW)
    assert checkpoint.load(path)["progress"]["epoch"] == 1
    assert shown == []  # a failing hook stops the epoch's later ones
