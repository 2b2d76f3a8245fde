"""From a composed config to a trained model: build the parts with Hydra, run the epochs,
keep the weights with the best validation accuracy."""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from cifar_sweep.batches import (
    Augment,
    Normalize,
    batches_per_epoch,
    evaluation_batches,
    training_batches,
)
from cifar_sweep.data import Dataset, Split, split_train_val
from cifar_sweep.engine import EpochStats, Evaluation, evaluate, train_one_epoch


@dataclass
class Setup:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    criterion: nn.Module
    train: Split
    val: Split
    test: Split
    normalize: Normalize
    augment: Augment | None
    generator: torch.Generator
    batch_size: int
    eval_batch_size: int
    precision: str
    channels_last: bool
    chunk_images: int


def configure_threads(num_threads: int | None, concurrent_jobs: int = 1) -> int:
    """Jobs x threads = cores: concurrent jobs share the cores instead of fighting over them."""
    threads = num_threads or max(1, (os.cpu_count() or 1) // max(1, concurrent_jobs))
    torch.set_num_threads(threads)
    return threads


def prepare(cfg: DictConfig, dataset: Dataset, device: torch.device) -> Setup:
    t = cfg.trainer
    torch.manual_seed(t.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    train, val = split_train_val(dataset.train, t.val_fraction, cfg.data.split_seed)
    train, val, test = train.to(device), val.to(device), dataset.test.to(device)

    precision = t.precision
    if precision == "auto":  # emulated bf16 (pre-Ampere GPUs) is slower than fp32
        native_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False)
        precision = "bf16" if native_bf16 else "fp32"
    channels_last = device.type == "cuda"

    model = instantiate(cfg.model, num_classes=len(dataset.classes)).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = instantiate(cfg.optimizer)(model.parameters(), lr=cfg.lr.value)
    steps_per_epoch = batches_per_epoch(len(train), t.batch_size)
    scheduler = instantiate(cfg.lr.schedule)(optimizer, t.epochs, steps_per_epoch)
    criterion = instantiate(cfg.loss)(train.labels, len(dataset.classes))
    if t.compile:
        model = torch.compile(model)
    augment = instantiate(cfg.augment)
    return Setup(
        model=model, optimizer=optimizer, scheduler=scheduler, criterion=criterion,
        train=train, val=val, test=test,
        normalize=Normalize(cfg.data.mean, cfg.data.std, device),
        augment=augment if augment.changes_images else None,
        generator=torch.Generator(device=device).manual_seed(t.seed),
        batch_size=t.batch_size, eval_batch_size=t.eval_batch_size,
        precision=precision, channels_last=channels_last,
        chunk_images=16384 if device.type == "cuda" else 1024,
    )


def run_epoch(s: Setup) -> EpochStats:
    batches = training_batches(s.train, s.batch_size, s.normalize, s.augment, s.generator,
                               s.chunk_images)
    return train_one_epoch(s.model, batches, s.optimizer, s.scheduler, s.criterion,
                           s.precision, s.channels_last)


def evaluate_split(s: Setup, split: Split) -> Evaluation:
    batches = evaluation_batches(split, s.eval_batch_size, s.normalize)
    return evaluate(s.model, batches, s.precision, s.channels_last)


HISTORY_KEYS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "epoch_seconds")


@dataclass
class Progress:
    """Where training stands after an epoch: what a checkpoint keeps and a resumed run restores."""

    epoch: int = 0
    best_epoch: int = 0
    best_val_accuracy: float = -1.0
    best_state: dict | None = None
    train_seconds: float = 0.0  # the training steps alone: images per second
    fit_seconds: float = 0.0    # training and validation: the run's `train_seconds` metric
    images_seen: int = 0
    history: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in HISTORY_KEYS})


def training_state(s: Setup, p: Progress) -> dict:
    """Everything that decides the next epochs: with it, a resumed run continues exactly as an
    uninterrupted one (on a CPU, bit for bit), including the shuffling and augmentation."""
    state = {"model": s.model.state_dict(), "optimizer": s.optimizer.state_dict(),
             "scheduler": s.scheduler.state_dict(), "torch_rng": torch.get_rng_state(),
             "data_rng": s.generator.get_state(), "progress": asdict(p)}
    if torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    return state


def restore(s: Setup, state: dict) -> Progress:
    s.model.load_state_dict(state["model"])
    s.optimizer.load_state_dict(state["optimizer"])
    s.scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    s.generator.set_state(state["data_rng"])  # a CPU byte tensor, whatever the generator's device
    if "cuda_rng" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return Progress(**state["progress"])


def fit(s: Setup, epochs: int, progress: Progress | None = None,
        after_epoch: Callable[[Progress, dict], None] | None = None) -> Progress:
    """Train up to `epochs` (from where `progress` stands), validate after each, and leave the
    best-on-validation weights loaded."""
    p = progress or Progress()
    for epoch in range(p.epoch + 1, epochs + 1):
        start = time.perf_counter()
        lr = s.optimizer.param_groups[0]["lr"]
        stats = run_epoch(s)
        val = evaluate_split(s, s.val)
        row = {"train_loss": stats.loss, "train_accuracy": stats.accuracy, "val_loss": val.loss,
               "val_accuracy": val.accuracy, "lr": lr, "epoch_seconds": stats.seconds}
        p.epoch = epoch
        p.train_seconds += stats.seconds
        p.fit_seconds += time.perf_counter() - start
        p.images_seen += stats.images
        for key, value in row.items():
            p.history[key].append(value)
        if val.accuracy > p.best_val_accuracy:
            p.best_epoch, p.best_val_accuracy = epoch, val.accuracy
            p.best_state = copy.deepcopy(s.model.state_dict())
        if after_epoch is not None:
            after_epoch(p, row)
    s.model.load_state_dict(p.best_state)
    return p
