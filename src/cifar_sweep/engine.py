"""The one training loop and the one evaluation function; everything that trains or evaluates
(train.py, the benchmark, the presets) goes through these two."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cifar_sweep.errors import NonFiniteLossError


@dataclass
class EpochStats:
    loss: float
    accuracy: float
    images: int
    seconds: float


def autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_one_epoch(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    precision: str = "fp32",
    channels_last: bool = False,
) -> EpochStats:
    """Loss and accuracy stay on the device and are read once, at the end of the epoch: a
    per-step `.item()` would stall a GPU on every batch."""
    start = time.perf_counter()
    model.train()
    device = next(model.parameters()).device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    seen = 0
    for images, labels in batches:
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            logits = model(images)
            loss = criterion(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        loss_sum += loss.detach().float() * len(labels)
        correct += (logits.detach().argmax(1) == labels).sum()
        seen += len(labels)
    mean_loss = (loss_sum / seen).item()
    if not torch.isfinite(torch.tensor(mean_loss)):
        raise NonFiniteLossError(f"training loss became {mean_loss}")
    return EpochStats(mean_loss, correct.item() / seen, seen, time.perf_counter() - start)


@dataclass
class Evaluation:
    loss: float  # plain cross-entropy, whatever the training loss, so that runs compare
    accuracy: float
    logits: torch.Tensor  # on the CPU, in the split's order
    labels: torch.Tensor


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    precision: str = "fp32",
    channels_last: bool = False,
) -> Evaluation:
    model.eval()
    device = next(model.parameters()).device
    all_logits, all_labels = [], []
    for images, labels in batches:
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            all_logits.append(model(images).float())
        all_labels.append(labels)
    logits, labels = torch.cat(all_logits), torch.cat(all_labels)
    loss = F.cross_entropy(logits, labels).item()
    accuracy = (logits.argmax(1) == labels).float().mean().item()
    return Evaluation(loss, accuracy, logits.cpu(), labels.cpu())
