"""Side by side, in one process: the report's input pipeline, ours, and the compute floor.

    python benchmarks/bench.py [--data-root /path/to/cifar10-jpeg] [--models modified_net origin_net]

(a) reference: the report's pipeline: a dataset that hands out PIL images as torchvision's CIFAR10
    does, RandomHorizontalFlip + RandomRotation(10) + ToTensor + Normalize, a DataLoader with one
    worker per core, batch 64, and a plain SGD step;
(b) ours: `train.loop.train_epoch`, the very code `src/train.py` runs, set up by `train.loop.build`
    from the composed Hydra config;
(c) floor: forward + backward + step on prebuilt, normalised tensors, no augmentation.
Every variant trains the same model on the same images (80% of the training set).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import transforms

from cifar_sweep.data import load_dataset, split_train_val
from cifar_sweep.train.loop import build, train_epoch
from cifar_sweep.train.resources import peak_rss_mb, reset_peak_rss
from cifar_sweep.train.runtime import resolve

CONF = Path(__file__).resolve().parents[1] / "conf"


class ReportStyleDataset(torch.utils.data.Dataset):
    """What torchvision.datasets.CIFAR10 does per item: uint8 HWC array -> PIL image -> transform."""

    def __init__(self, images_uint8: torch.Tensor, labels: torch.Tensor, transform):
        self.data = images_uint8.permute(0, 2, 3, 1).contiguous().numpy()
        self.targets = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.data[i])), self.targets[i]


def config(model: str, data_overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=[f"model={model}", "trainer.batch_size=64",
                                            "trainer.device=cpu", *data_overrides])


def timed(label: str, fn) -> dict:
    reset_peak_rss()
    start = time.perf_counter()
    images = fn()
    seconds = time.perf_counter() - start
    return {"variant": label, "images": images, "seconds": seconds,
            "images_per_second": images / seconds, "peak_rss_mb": peak_rss_mb()}


def reference(cfg, train, limit: int) -> int:
    model = instantiate(cfg.model, num_classes=10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.005, momentum=0.9)
    transform = transforms.Compose([
        transforms.RandomHorizontalFlip(), transforms.RandomRotation(10), transforms.ToTensor(),
        transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
    loader = DataLoader(ReportStyleDataset(train.images[:limit], train.labels[:limit], transform),
                        batch_size=64, shuffle=True, num_workers=os.cpu_count() or 1)
    model.train()
    seen = 0
    for x, y in loader:
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        seen += len(y)
    return seen


def ours(cfg, dataset, limit: int) -> int:
    parts = build(cfg, dataset, resolve(cfg.trainer))
    parts.train.split = parts.train.split.subset(torch.arange(min(limit, len(parts.train.split))))
    return train_epoch(parts).images


def prebuilt(train, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    return (train.images[:limit].float() / 255 - 0.5) / 0.5, train.labels[:limit]


def floor(cfg, tensors: tuple[torch.Tensor, torch.Tensor]) -> int:
    model = instantiate(cfg.model, num_classes=10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.005, momentum=0.9)
    images, labels = tensors
    model.train()
    for b in range(0, len(labels), 64):
        loss = F.cross_entropy(model(images[b:b + 64]), labels[b:b + 64])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return len(labels)


def compare(model: str, data_overrides: list[str], dataset, train, n_images: int) -> dict:
    cfg = config(model, data_overrides)
    tensors = prebuilt(train, n_images)  # built before the clock starts
    floor(cfg, (tensors[0][:640], tensors[1][:640]))  # warm-up: first-call allocations and kernel selection
    ours(cfg, dataset, 640)
    rows = [timed("(a) reference", lambda: reference(cfg, train, n_images)),
            timed("(b) ours", lambda: ours(cfg, dataset, n_images)),
            timed("(c) floor", lambda: floor(cfg, tensors))]
    a, b, c = (r["images_per_second"] for r in rows)
    print(f"\n{model}")
    print(f"  {'variant':<15}{'images/s':>10}{'seconds':>10}{'peak RSS MB':>13}")
    for r in rows:
        print(f"  {r['variant']:<15}{r['images_per_second']:>10.0f}{r['seconds']:>10.1f}"
              f"{r['peak_rss_mb']:>13.0f}")
    print(f"  (b)/(a) = {b / a:.2f}x faster than the report's pipeline (target >= 4)")
    print(f"  (c)/(b) = {c / b:.2f} (target <= 1.25: ours within 25% of the floor)")
    return {"model": model, "rows": rows, "b_over_a": b / a, "c_over_b": c / b}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", help="the extracted CIFAR-10 JPEG copy; else synthetic data")
    parser.add_argument("--cache-dir", default="data/.cache")
    parser.add_argument("--models", nargs="+", default=["modified_net", "origin_net"])
    parser.add_argument("--images", type=int, default=40_000, help="training images per variant")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    if args.data_root:
        data_overrides = ["data=image_folder", f"data.root={args.data_root}",
                          f"data.cache_dir={args.cache_dir}"]
        data_name = "CIFAR-10 (JPEG copy)"
    else:  # synthetic images of CIFAR-10's shape and size
        data_overrides = ["data=synthetic", "data.source.num_train=50000",
                          "data.source.num_test=1000"]
        data_name = "synthetic, CIFAR-10 shape"
    cfg0 = config(args.models[0], data_overrides)
    dataset = load_dataset(instantiate(cfg0.data.source), cfg0.data.cache_dir)
    train, _ = split_train_val(dataset.train, cfg0.trainer.val_fraction, cfg0.data.split_seed)
    threads = torch.get_num_threads()
    print(f"data: {data_name}; {args.images} training images per variant, batch 64, "
          f"{threads} torch threads, {os.cpu_count()} cores, torch {torch.__version__}")
    results = [compare(model, data_overrides, dataset, train, args.images) for model in args.models]
    print("\npeak RSS: this process's peak during each variant (DataLoader workers of (a) not "
          "included; they hold their own copy of the dataset).")
    if args.json:
        Path(args.json).write_text(json.dumps({"data": data_name, "threads": threads,
                                               "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
