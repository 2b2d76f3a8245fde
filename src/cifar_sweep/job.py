"""One job of `src/train.py`: check, load, train, evaluate on the test set, log it all to MLflow."""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from mlflow.entities import Metric, Param
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from cifar_sweep import plots
from cifar_sweep.data import load_dataset
from cifar_sweep.errors import NonFiniteLossError, UserInputError
from cifar_sweep.metrics import classification_report
from cifar_sweep.models import parameter_count, state_dict_fp32_mb
from cifar_sweep.resources import peak_rss_mb, reset_peak_rss
from cifar_sweep.tracking import GROUPS, flatten, git_commit, open_experiment, parent_run_id
from cifar_sweep.trainer import configure_threads, evaluate_split, fit, prepare
from cifar_sweep.validate import check_config, resolve_device

log = logging.getLogger("cifar_sweep")


def _metrics(values: dict, step: int = 0) -> list[Metric]:
    now = int(time.time() * 1000)
    return [Metric(k, float(v), now, step) for k, v in values.items()]


def _peak_memory_metrics(device: torch.device) -> dict[str, float]:
    if device.type == "cuda":
        return {"peak_gpu_memory_mb": torch.cuda.max_memory_allocated(device) / 1e6}
    # this process's peak since the job started (reset there), the data in memory included
    return {"peak_rss_mb": peak_rss_mb()}


def run_job(cfg: DictConfig) -> float | None:
    """Returns the test accuracy, or None when the job failed inside a sweep (already logged)."""
    started = time.perf_counter()
    reset_peak_rss()  # a worker process runs several jobs: each reports its own peak
    hydra = HydraConfig.get()
    multirun = hydra.mode == RunMode.MULTIRUN
    try:
        check_config(cfg)
        device = resolve_device(str(cfg.trainer.device))
        concurrent = int(hydra.launcher.get("n_jobs") or 1) if multirun else 1
        threads = configure_threads(cfg.trainer.num_threads, concurrent)
        dataset = load_dataset(instantiate(cfg.data.source), cfg.data.cache_dir)
        client, experiment_id = open_experiment(cfg.tracking)
    except UserInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if multirun:  # let the other jobs run; the sweep's exit status reports this one
            return None
        sys.exit(2)

    choices = {g: str(hydra.runtime.choices.get(g)) for g in GROUPS}
    tags = {**choices, "git_commit": git_commit(), "data_fingerprint": dataset.fingerprint,
            "data_cache": dataset.cache, "device": str(device), "num_threads": str(threads),
            "cifar_sweep.role": "job", "mlflow.source.name": "src/train.py",
            "job.overrides": " ".join(hydra.overrides.task), "study.name": str(cfg.study.name or "")}
    parent = parent_run_id(hydra.sweep.dir) if multirun else None
    if parent:
        tags["mlflow.parentRunId"] = parent
        tags["job.num"] = str(hydra.job.num)
    if multirun:
        run_name = f"#{hydra.job.num} {hydra.job.override_dirname or 'defaults'}"
    else:
        run_name = f"{choices['model']} {choices['optimizer']} lr={cfg.lr.value}"
    run_id = client.create_run(experiment_id, run_name=run_name[:250], tags=tags).info.run_id
    client.log_batch(run_id, params=[
        Param(k, v[:6000]) for k, v in flatten(OmegaConf.to_container(cfg, resolve=True)).items()])
    log.info("run %s (%s) on %s, %d threads, data %s (%s)", run_id, run_name, device, threads,
             dataset.fingerprint, dataset.cache)
    try:
        accuracy = _train_and_log(cfg, dataset, device, client, run_id, started)
    except (KeyboardInterrupt, SystemExit):
        client.set_tag(run_id, "failure_reason", "interrupted")
        client.set_terminated(run_id, "KILLED")
        raise
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
        client.set_tag(run_id, "failure_reason", reason[:5000])
        client.set_terminated(run_id, "FAILED")
        if multirun:  # the other jobs still run; the sweep's exit status reports the failure
            log.error("run %s failed: %s", run_id, reason)
            return None
        if isinstance(exc, NonFiniteLossError):
            print(f"error: run {run_id} failed: {reason}", file=sys.stderr)
            sys.exit(1)
        raise
    client.set_terminated(run_id, "FINISHED")
    return accuracy


def _train_and_log(cfg, dataset, device, client, run_id, started) -> float:
    setup = prepare(cfg, dataset, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    epochs = cfg.trainer.epochs
    show_bar = sys.stderr.isatty()
    bar = tqdm(total=epochs, desc="epochs", disable=not show_bar, leave=False)

    def on_epoch(epoch: int, row: dict) -> None:
        client.log_batch(run_id, metrics=_metrics(row, step=epoch))
        line = (f"epoch {epoch}/{epochs}  train loss {row['train_loss']:.4f} acc "
                f"{row['train_accuracy']:.4f}  val loss {row['val_loss']:.4f} acc "
                f"{row['val_accuracy']:.4f}  lr {row['lr']:.2e}  {row['epoch_seconds']:.1f}s")
        if show_bar:
            bar.update(1)
            bar.set_postfix_str(f"val acc {row['val_accuracy']:.4f}")
        log.info(line)

    fit_start = time.perf_counter()
    result = fit(setup, epochs, on_epoch)
    fit_seconds = time.perf_counter() - fit_start
    bar.close()

    test = evaluate_split(setup, setup.test)
    report = classification_report(test.logits, test.labels, len(dataset.classes))
    summary = {
        **report["scalars"],
        "test_loss": test.loss,
        "best_epoch": result.best_epoch,
        "best_val_accuracy": result.best_val_accuracy,
        "parameters": parameter_count(setup.model),
        "model_size_fp32_mb": state_dict_fp32_mb(setup.model),
        **_peak_memory_metrics(device),
        "train_seconds": fit_seconds,
        "train_images_per_second": result.images_seen / result.train_seconds,
        **{f"test_accuracy_{c}": a for c, a in zip(dataset.classes, report["per_class_accuracy"])},
    }
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        plots.learning_curves(result.history, out / "curves.png", title=run_id)
        plots.confusion_matrix(report["confusion"], dataset.classes, out / "confusion_matrix.png")
        probs = test.logits.softmax(1)
        images = dataset.test.images.float() / 255
        plots.prediction_grid(images, test.labels, probs, dataset.classes, True, out / "correct.png")
        plots.prediction_grid(images, test.labels, probs, dataset.classes, False, out / "wrong.png")
        (out / "evaluation.json").write_text(json.dumps({
            "classes": dataset.classes, "confusion": report["confusion"],
            "per_class_accuracy": report["per_class_accuracy"], **report["scalars"]}, indent=1))
        plain = getattr(setup.model, "_orig_mod", setup.model)  # torch.compile's wrapper
        torch.save({k: v.cpu() for k, v in plain.state_dict().items()}, out / "best_weights.pt")
        client.log_artifacts(run_id, str(out))
    summary["total_seconds"] = time.perf_counter() - started
    client.log_batch(run_id, metrics=_metrics(summary, step=epochs))
    log.info("test accuracy %.4f  (best epoch %d, %.1f s, %.0f images/s)", summary["test_accuracy"],
             result.best_epoch, summary["total_seconds"], summary["train_images_per_second"])
    return summary["test_accuracy"]
