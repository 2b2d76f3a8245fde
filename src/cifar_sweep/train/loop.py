"""From a composed config to a trained model: build the parts with Hydra, the one training loop,
the one evaluation, and `fit`, which keeps the best-on-validation weights and can continue from
a checkpoint. Everything that trains or evaluates (jobs, the benchmarks) goes through here."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from cifar_sweep.batches import Loader, Normalize
from cifar_sweep.data import Dataset, split_train_val
from cifar_sweep.errors import NonFiniteLossError
from cifar_sweep.tracking import tags as t
from cifar_sweep.train.runtime import Runtime


@dataclass
class Parts:
    """What a config builds for one run."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    criterion: nn.Module
    train: Loader
    val: Loader
    test: Loader
    runtime: Runtime
    scaler: torch.amp.GradScaler  # fp16's loss scaling; disabled (a plain step) otherwise


def build(cfg: DictConfig, dataset: Dataset, rt: Runtime) -> Parts:
    t = cfg.trainer
    torch.manual_seed(t.seed)
    train, val = split_train_val(dataset.train, t.val_fraction, cfg.data.split_seed)
    train, val, test = train.to(rt.device), val.to(rt.device), dataset.test.to(rt.device)
    normalize = Normalize(cfg.data.mean, cfg.data.std, rt.device)
    train_loader = Loader(train, t.batch_size, normalize, instantiate(cfg.augment),
                          torch.Generator(device=rt.device).manual_seed(t.seed),
                          rt.chunk_images, rt.nhwc_train)

    def evaluation(split) -> Loader:
        return Loader(split, t.eval_batch_size, normalize, chunk_images=rt.chunk_images,
                      channels_last=rt.nhwc_eval)

    model = instantiate(cfg.model, num_classes=len(dataset.classes)).to(rt.device)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = instantiate(cfg.optimizer)(model.parameters(), lr=cfg.lr.value)
    scheduler = instantiate(cfg.lr.schedule)(optimizer, t.epochs, len(train_loader))
    criterion = instantiate(cfg.loss)(train.labels, len(dataset.classes))
    if t.compile:
        model = torch.compile(model)
    return Parts(model, optimizer, scheduler, criterion, train_loader, evaluation(val),
                 evaluation(test), rt, rt.grad_scaler())


@dataclass
class EpochStats:
    loss: float
    accuracy: float
    images: int
    seconds: float


def train_epoch(p: Parts) -> EpochStats:
    """Loss and accuracy stay on the device and are read once, at the end of the epoch: a
    per-step `.item()` would stall a GPU on every batch."""
    start = time.perf_counter()
    p.model.train()
    loss_sum = torch.zeros((), device=p.runtime.device)
    correct = torch.zeros((), device=p.runtime.device, dtype=torch.int64)
    seen = 0
    for images, labels in p.train:
        with p.runtime.autocast():
            logits = p.model(images)
            loss = p.criterion(logits, labels)
        p.optimizer.zero_grad(set_to_none=True)
        p.scaler.scale(loss).backward()
        p.scaler.step(p.optimizer)  # fp16: skipped when the scaled gradients overflowed
        p.scaler.update()
        p.scheduler.step()
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
def evaluate(p: Parts, loader: Loader) -> Evaluation:
    p.model.eval()
    all_logits, all_labels = [], []
    for images, labels in loader:
        with p.runtime.autocast():
            all_logits.append(p.model(images).float())
        all_labels.append(labels)
    logits, labels = torch.cat(all_logits), torch.cat(all_labels)
    loss = F.cross_entropy(logits, labels).item()
    accuracy = (logits.argmax(1) == labels).float().mean().item()
    return Evaluation(loss, accuracy, logits.cpu(), labels.cpu())


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
    # early stopping's count, kept by the checkpoint so that a continued run stops where an
    # uninterrupted one does: the validation accuracy an improvement is measured against, and
    # the epochs since the last improvement by more than min_delta (EarlyStop)
    stop_reference: float = -1.0
    epochs_without_improvement: int = 0


@dataclass(frozen=True)
class EarlyStop:
    """Stop once validation accuracy has not risen by more than `min_delta` over the reference
    for `patience` epochs in a row (the rule of Keras' and Lightning's EarlyStopping on a
    maximised metric). The weights kept are still the best on validation, whatever the margin."""

    patience: int
    min_delta: float = 0.0

    def update(self, done: Progress, val_accuracy: float) -> None:
        if val_accuracy - self.min_delta > done.stop_reference:
            done.stop_reference, done.epochs_without_improvement = val_accuracy, 0
        else:
            done.epochs_without_improvement += 1

    def reached(self, done: Progress) -> bool:
        return done.epochs_without_improvement >= self.patience


def early_stop(trainer: DictConfig) -> EarlyStop | None:
    """The run's stopping rule, from `trainer.early_stop`; None where its patience is null (off)."""
    settings = trainer.get("early_stop") or {}
    patience = settings.get("patience")
    return None if patience is None else EarlyStop(int(patience),
                                                   float(settings.get("min_delta") or 0.0))


def stop_reason(done: Progress, stop: EarlyStop | None) -> str:
    """Why training ended: the `stop_reason` tag's value (docs/runs.md)."""
    return t.STOPPED_EARLY if stop is not None and stop.reached(done) else t.REACHED_EPOCHS


def training_state(p: Parts, progress: Progress) -> dict:
    """Everything that decides the next epochs: with it, a resumed run continues exactly as an
    uninterrupted one (on a CPU, bit for bit), including the shuffling and augmentation."""
    state = {"model": p.model.state_dict(), "optimizer": p.optimizer.state_dict(),
             "scheduler": p.scheduler.state_dict(), "torch_rng": torch.get_rng_state(),
             "data_rng": p.train.generator.get_state(), "progress": asdict(progress),
             "scaler": p.scaler.state_dict()}  # fp16's loss scale and growth count; else {}
    # the run's own GPU only: asking for every GPU's state would open a CUDA context on each
    # (and in a CPU run on a GPU host, on all of them)
    if p.runtime.device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state(p.runtime.device)
    return state


def restore(p: Parts, state: dict) -> Progress:
    p.model.load_state_dict(state["model"])
    p.optimizer.load_state_dict(state["optimizer"])
    p.scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    p.train.generator.set_state(state["data_rng"])  # a CPU byte tensor, whatever the device
    if state.get("scaler"):
        p.scaler.load_state_dict(state["scaler"])
    if "cuda_rng" in state and p.runtime.device.type == "cuda":
        # onto the GPU this run has now, whichever it had: a continued run may get another one.
        # Older checkpoints hold a list, one state per GPU visible then: this GPU's, if there
        # were as many, else the last (fewer GPUs visible now must not fail the run)
        saved = state["cuda_rng"]
        if isinstance(saved, list):
            saved = saved[min(p.runtime.device.index or 0, len(saved) - 1)]
        torch.cuda.set_rng_state(saved, p.runtime.device)
    return Progress(**state["progress"])


def fit(p: Parts, epochs: int, progress: Progress | None = None,
        after_epoch: Callable[[Progress, dict], None] | None = None,
        stop: EarlyStop | None = None) -> Progress:
    """Train up to `epochs` (from where `progress` stands) or until `stop` says so, validate
    after each, and leave the best-on-validation weights loaded."""
    done = progress or Progress()
    while done.epoch < epochs and not (stop is not None and stop.reached(done)):
        epoch = done.epoch + 1
        start = time.perf_counter()
        lr = p.optimizer.param_groups[0]["lr"]
        stats = train_epoch(p)
        val = evaluate(p, p.val)
        row = {"train_loss": stats.loss, "train_accuracy": stats.accuracy, "val_loss": val.loss,
               "val_accuracy": val.accuracy, "lr": lr, "epoch_seconds": stats.seconds}
        done.epoch = epoch
        done.train_seconds += stats.seconds
        done.fit_seconds += time.perf_counter() - start
        done.images_seen += stats.images
        for key, value in row.items():
            done.history[key].append(value)
        if val.accuracy > done.best_val_accuracy:
            done.best_epoch, done.best_val_accuracy = epoch, val.accuracy
            done.best_state = copy.deepcopy(p.model.state_dict())
        if stop is not None:  # before after_epoch: the checkpoint holds the count
            stop.update(done, val.accuracy)
        if after_epoch is not None:
            after_epoch(done, row)
    p.model.load_state_dict(done.best_state)
    return done
