"""Progress inside an epoch: the training batches wrapped from the job's side, so that no
definition a run's code version hashes changes (`fit` iterates `parts.train` as before).

On a terminal, a tqdm bar under the epochs' bar: images done, images/s and the epoch's time left.
Elsewhere (a SLURM log, a pipe, the tests), a log line every 30 s ($CIFAR_SWEEP_PROGRESS_SECONDS)
and nothing for an epoch shorter than that. Per batch it costs a clock read and a counter, and on
a terminal tqdm's update (docs/speed.md: measured against ModifiedNet's batches)."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from tqdm import tqdm

from cifar_sweep.batches import Loader

log = logging.getLogger("cifar_sweep")

INTERVAL_S = 30.0  # between two lines where the output is not a terminal (a SLURM log)
INTERVAL_ENV = "CIFAR_SWEEP_PROGRESS_SECONDS"  # another interval, e.g. 300 for a quieter log


def interval_s() -> float:
    """The seconds between two progress lines: $CIFAR_SWEEP_PROGRESS_SECONDS, else 30."""
    text = os.environ.get(INTERVAL_ENV)
    if text is None:
        return INTERVAL_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value < 0 or value != value:
        log.warning("%s=%s is not a number of seconds >= 0: progress lines every %g s",
                    INTERVAL_ENV, text, INTERVAL_S)
        return INTERVAL_S
    return value


class BatchProgress:
    """A training `Loader` that shows its progress as `fit` draws its batches; anything else
    (its generator, its length, its split) is the loader's own."""

    def __init__(self, loader: Loader, epochs: int, done: int, terminal: bool | None = None,
                 interval: float | None = None, interrupted: Callable[[], None] | None = None):
        self.loader, self.epochs, self.epoch = loader, epochs, done
        # raises a signal's exception its handler lost, at every batch (commands/interrupted.py)
        self.interrupted = interrupted or _nothing
        self.terminal = sys.stderr.isatty() if terminal is None else terminal
        self.interval = interval_s() if interval is None else interval
        # the images one pass yields: a final batch of one image is dropped (Loader)
        n, size = len(loader.split), loader.batch_size
        self.images = n - (1 if n % size == 1 else 0)

    def __getattr__(self, name: str) -> Any:  # generator, split, batch_size, ...: the loader's
        if name == "loader":  # not set yet (a copy being made): not the loader's to answer
            raise AttributeError(name)
        return getattr(self.loader, name)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        self.epoch += 1
        if self.terminal:
            yield from self._bar()
        else:
            yield from self._lines()

    def _bar(self) -> Iterator[tuple[Any, Any]]:
        bar = tqdm(total=self.images, desc=f"epoch {self.epoch}/{self.epochs}", unit="img",
                   unit_scale=True, leave=False, position=1, dynamic_ncols=True)
        try:
            for batch in self.loader:
                self.interrupted()
                yield batch
                bar.update(len(batch[1]))
        finally:
            bar.close()

    def _lines(self) -> Iterator[tuple[Any, Any]]:
        start = last = time.monotonic()
        seen = 0
        for batch in self.loader:
            self.interrupted()
            yield batch
            seen += len(batch[1])
            now = time.monotonic()
            if now - last >= self.interval and seen < self.images:
                last = now
                rate = seen / (now - start)
                log.info("epoch %d/%d: %d of %d images, %.0f images/s, about %.0f s left in the "
                         "epoch", self.epoch, self.epochs, seen, self.images, rate,
                         (self.images - seen) / rate)


def _nothing() -> None:
    pass
