"""What the progress inside an epoch costs (job/batch_progress.py): its overhead per batch, with
the tqdm bar (a terminal) and with the line every 30 s (a log), against a ModifiedNet training
step's time on this CPU (batch 64, one thread, the report's augmentation).

    python benchmarks/progress_cost.py [--batches 20000] [--steps 60]

The overhead is timed on batches that cost nothing (the same tensors yielded again), so that it
is not lost in the noise of a training step; the step is timed on `train_epoch`'s own work
(forward, backward, optimizer step) over the loader `loop.build` makes.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from cifar_sweep.data import subsets
from cifar_sweep.job.batch_progress import BatchProgress
from cifar_sweep.train.loop import build, train_epoch
from cifar_sweep.train.runtime import resolve

CONF = Path(__file__).resolve().parents[1] / "conf"


class Free:
    """A loader whose batches cost nothing: `n` times the same 64 images."""

    def __init__(self, n: int):
        self.batch = (torch.zeros(64, 3, 32, 32), torch.zeros(64, dtype=torch.long))
        self.n, self.batch_size = n, 64
        self.split = torch.zeros(n * 64)

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        for _ in range(self.n):
            yield self.batch


def per_batch_us(loader, repeats: int = 5) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in loader:
            pass
        best = min(best, time.perf_counter() - start)
    return best / len(loader) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=20000)
    parser.add_argument("--steps", type=int, default=60, help="ModifiedNet steps to time")
    args = parser.parse_args()
    torch.set_num_threads(1)
    free = Free(args.batches)
    plain = per_batch_us(free)
    with contextlib.redirect_stderr(io.StringIO()):  # the bar drawn, into memory
        bar = per_batch_us(BatchProgress(free, 1, 0, terminal=True)) - plain
    lines = per_batch_us(BatchProgress(free, 1, 0, terminal=False)) - plain

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[
            "data=synthetic", f"data.source.num_train={args.steps * 64 * 5 // 4 + 64}",
            "trainer.device=cpu", "trainer.num_threads=1"])
    parts = build(cfg, subsets.load(cfg.data), resolve(cfg.trainer))
    train_epoch(parts)  # warm-up
    epochs = [train_epoch(parts) for _ in range(3)]
    step_ms = statistics.median(e.seconds / (e.images / 64) for e in epochs) * 1e3
    print(f"ModifiedNet training step (batch 64, 1 thread): {step_ms:.2f} ms "
          f"({statistics.median(e.images / e.seconds for e in epochs):.0f} images/s)")
    for name, cost in (("tqdm bar (terminal)", bar), ("a line every 30 s (log)", lines)):
        print(f"{name}: {cost:.2f} µs per batch = {cost / (step_ms * 1e3) * 100:.3f}% of a step")
    return 0


if __name__ == "__main__":
    sys.exit(main())
