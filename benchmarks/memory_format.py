"""NCHW against NHWC (channels_last) batches on this CPU: what runtime.py's choice rests on.

    python benchmarks/memory_format.py [--models modified_net ...] [--threads 1 2]

For each model and torch thread count, in one process, on the same random tensors:
- training: forward + backward + SGD step at batch 64, the batches NCHW (the reference) or NHWC,
  the model's weights NCHW in both (as `train.loop.build` leaves them on a CPU);
- evaluation: 10,000 images without gradients, NCHW at batch 1000 (the reference: the old
  default), NCHW at batch 250 (the batch size alone) and NHWC at batch 250 (the default now).
Each figure is the fastest of 3 repeats; the ratio is reference time / new time (>1: faster).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

CONF = Path(__file__).resolve().parents[1] / "conf"


def model_of(name: str) -> torch.nn.Module:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"model={name}"])
    torch.manual_seed(0)
    return instantiate(cfg.model, num_classes=10)


def nhwc(x: torch.Tensor, on: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if on else x


def train_seconds(model, images, labels, channels_last: bool) -> float:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.005, momentum=0.9)
    model.train()
    start = time.perf_counter()
    for b in range(0, len(labels), 64):
        loss = F.cross_entropy(model(nhwc(images[b:b + 64], channels_last)), labels[b:b + 64])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


@torch.no_grad()
def eval_seconds(model, images, batch: int, channels_last: bool) -> float:
    model.eval()
    start = time.perf_counter()
    for b in range(0, len(images), batch):
        model(nhwc(images[b:b + batch], channels_last))
    return time.perf_counter() - start


def best_of(fn, repeats: int = 3) -> float:
    fn()  # warm-up: first-call allocations and kernel selection
    return min(fn() for _ in range(repeats))


def measure(name, train_x, train_y, test_x) -> tuple[float, ...]:
    t_ref = best_of(lambda: train_seconds(model_of(name), train_x, train_y, False))
    t_new = best_of(lambda: train_seconds(model_of(name), train_x, train_y, True))
    model = model_of(name)
    e_ref = best_of(lambda: eval_seconds(model, test_x, 1000, False))
    e_batch = best_of(lambda: eval_seconds(model, test_x, 250, False))
    e_new = best_of(lambda: eval_seconds(model, test_x, 250, True))
    return t_ref, t_new, e_ref, e_batch, e_new


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+",
                        default=["modified_net", "origin_net", "modified_net_ds"])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--train-images", type=int, default=6400)
    args = parser.parse_args()
    gen = torch.Generator().manual_seed(0)
    train_x = torch.randn(args.train_images, 3, 32, 32, generator=gen)
    train_y = torch.randint(0, 10, (args.train_images,), generator=gen)
    test_x = torch.randn(10_000, 3, 32, 32, generator=gen)
    print(f"torch {torch.__version__}; training on {args.train_images} images at batch 64, "
          "evaluation on 10,000; seconds, fastest of 3")
    print(f"{'model':<16}{'threads':>8}{'train NCHW':>12}{'train NHWC':>12}{'ratio':>7}"
          f"{'eval NCHW/1000':>16}{'NCHW/250':>10}{'NHWC/250':>10}{'ratio':>7}")
    for name in args.models:
        for threads in args.threads:
            torch.set_num_threads(threads)
            t_ref, t_new, e_ref, e_batch, e_new = measure(name, train_x, train_y, test_x)
            print(f"{name:<16}{threads:>8}{t_ref:>12.3f}{t_new:>12.3f}{t_ref / t_new:>7.2f}"
                  f"{e_ref:>16.3f}{e_batch:>10.3f}{e_new:>10.3f}{e_ref / e_new:>7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
