"""What happens after each epoch, each piece on its own: the checkpoint, the metrics and the
heartbeat, the progress line, the search's pruning. `fit` calls them in this order through
`after_epoch`: the checkpoint first, so that a kill before the metrics are logged loses no epoch
(the continued run logs what its checkpoint holds and the store lacks)."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from cifar_sweep.tracking import lifecycle
from cifar_sweep.tracking.runs import log_metrics
from cifar_sweep.train import checkpoint
from cifar_sweep.train.loop import Parts, Progress, training_state

log = logging.getLogger("cifar_sweep")
Hook = Callable[[Progress, dict], None]


class SaveCheckpoint:
    """The training state, and the job's seconds so far (a continued run's total counts them)."""

    def __init__(self, path: Path, parts: Parts, seconds_before: float, started: float):
        self.path, self.parts = path, parts
        self.seconds_before, self.started = seconds_before, started

    def __call__(self, p: Progress, row: dict) -> None:
        seconds = self.seconds_before + time.perf_counter() - self.started
        checkpoint.save(self.path, {**training_state(self.parts, p), "job_seconds": seconds})


class LogMetrics:
    """The epoch's metrics, with a heartbeat whose timeout follows the epoch's wall time."""

    def __init__(self, client, run_id: str):
        self.client, self.run_id = client, run_id
        self.last = time.perf_counter()

    def __call__(self, p: Progress, row: dict) -> None:
        now = time.perf_counter()
        heartbeat = lifecycle.epoch_heartbeat(now - self.last)
        self.last = now
        log_metrics(self.client, self.run_id, row, p.epoch, heartbeat)


class ShowProgress:
    """A line per epoch in the log; a progress bar where the terminal is a person's."""

    def __init__(self, epochs: int, done: int):
        self.epochs = epochs
        self.bar = tqdm(total=epochs, initial=done, desc="epochs", leave=False,
                        disable=not sys.stderr.isatty())

    def __call__(self, p: Progress, row: dict) -> None:
        self.bar.update(1)
        self.bar.set_postfix_str(f"val acc {row['val_accuracy']:.4f}")
        log.info(f"epoch {p.epoch}/{self.epochs}  train loss {row['train_loss']:.4f} acc "
                 f"{row['train_accuracy']:.4f}  val loss {row['val_loss']:.4f} acc "
                 f"{row['val_accuracy']:.4f}  lr {row['lr']:.2e}  {row['epoch_seconds']:.1f}s")

    def close(self) -> None:
        self.bar.close()


class ReportToTrial:
    """A search's trial: the epoch's validation accuracy to its pruner, which may stop it (raises
    Pruned)."""

    def __init__(self, reporter):
        self.reporter = reporter

    def __call__(self, p: Progress, row: dict) -> None:
        self.reporter(p.epoch, row["val_accuracy"])


def chain(*hooks: Hook | None) -> Hook:
    active = [h for h in hooks if h is not None]

    def after_epoch(p: Progress, row: dict) -> None:
        for hook in active:
            hook(p, row)

    return after_epoch
