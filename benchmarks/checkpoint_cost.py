"""What the per-epoch checkpoint costs: the save timed against the epoch it follows (ModifiedNet,
train + validation), in one process (target: at most 3% of an epoch). Epochs with and without
a save alternate, and both medians are printed too.

    python benchmarks/checkpoint_cost.py [--data-root /path/to/cifar10-jpeg] [--repeats 3]

The epochs are the ones `src/train.py` runs (`train.loop.build`, `train.loop.fit`); the checkpoint
is the one it writes (`train.loop.training_state`, `checkpoint.save`), to a temporary folder.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from cifar_sweep.data import load_dataset
from cifar_sweep.train import checkpoint
from cifar_sweep.train.loop import Progress, build, fit, training_state
from cifar_sweep.train.runtime import resolve

CONF = Path(__file__).resolve().parents[1] / "conf"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", help="the extracted CIFAR-10 JPEG copy; else synthetic data")
    parser.add_argument("--model", default="modified_net")
    parser.add_argument("--repeats", type=int, default=3, help="epochs of each kind")
    args = parser.parse_args()
    data = (["data=image_folder", f"data.root={args.data_root}"] if args.data_root else
            ["data=synthetic", "data.source.num_train=50000", "data.source.num_test=1000"])
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"model={args.model}", "trainer.device=cpu",
                                           f"trainer.epochs={2 * args.repeats}", *data])
    dataset = load_dataset(instantiate(cfg.data.source), cfg.data.cache_dir)
    parts = build(cfg, dataset, resolve(cfg.trainer))
    with tempfile.TemporaryDirectory() as tmp:
        path = checkpoint.path_for(tmp, "bench", "run")
        plain, saving, save_only = [], [], []
        last = [time.perf_counter()]

        def after_epoch(p: Progress, row: dict) -> None:
            if p.epoch % 2 == 0:  # every other epoch saves, so both kinds see the same load
                start = time.perf_counter()
                checkpoint.save(path, {**training_state(parts, p), "job_seconds": 0.0})
                save_only.append(time.perf_counter() - start)
            now = time.perf_counter()
            (saving if p.epoch % 2 == 0 else plain).append(now - last[0])
            last[0] = now

        fit(parts, 2 * args.repeats, after_epoch=after_epoch)
        size_kb = path.stat().st_size / 1e3
    a, b = statistics.median(plain), statistics.median(saving)
    save = statistics.median(save_only)
    print(f"{args.model}, {len(parts.train.split)} training images, batch {cfg.trainer.batch_size}, "
          f"{torch.get_num_threads()} threads; checkpoint {size_kb:.0f} kB")
    print(f"  checkpoint save: {save * 1000:.1f} ms (median of {len(save_only)}), "
          f"{save / a * 100:.2f}% of an epoch without it ({a:.2f} s)  (target <= 3%)")
    print(f"  whole epochs with / without a save: {b:.2f} s / {a:.2f} s = {b / a:.3f} "
          "(medians; on a shared machine the epochs' own noise dominates this ratio)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
