"""From a composed config to a trained model: build the parts with Hydra, run the epochs,
keep the weights with the best validation accuracy."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from dataclasses import dataclass, field

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
        augment=augment if augment.enabled else None,
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


@dataclass
class FitResult:
    best_epoch: int
    best_val_accuracy: float
    train_seconds: float
    images_seen: int
    history: dict[str, list[float]] = field(default_factory=dict)


def fit(s: Setup, epochs: int, on_epoch: Callable[[int, dict], None] | None = None) -> FitResult:
    """Train for `epochs`, validate after each, and leave the best-on-validation weights loaded."""
    history: dict[str, list[float]] = {k: [] for k in (
        "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "epoch_seconds")}
    best_state, best_epoch, best_accuracy = None, 0, -1.0
    train_seconds, images = 0.0, 0
    for epoch in range(1, epochs + 1):
        lr = s.optimizer.param_groups[0]["lr"]
        stats = run_epoch(s)
        val = evaluate_split(s, s.val)
        train_seconds += stats.seconds
        images += stats.images
        row = {"train_loss": stats.loss, "train_accuracy": stats.accuracy, "val_loss": val.loss,
               "val_accuracy": val.accuracy, "lr": lr, "epoch_seconds": stats.seconds}
        for key, value in row.items():
            history[key].append(value)
        if val.accuracy > best_accuracy:
            best_epoch, best_accuracy = epoch, val.accuracy
            best_state = copy.deepcopy(s.model.state_dict())
        if on_epoch is not None:
            on_epoch(epoch, row)
    s.model.load_state_dict(best_state)
    return FitResult(best_epoch, best_accuracy, train_seconds, images, history)
