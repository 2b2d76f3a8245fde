"""A trained run's outcome: its best-on-validation weights evaluated on the test set, its summary
metrics, figures and artifacts, logged to the run."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from cifar_sweep.data import Dataset, subsets
from cifar_sweep.models import parameter_count, state_dict_fp32_mb
from cifar_sweep.tracking import lineage, predictions, test_images
from cifar_sweep.tracking import tags as t
from cifar_sweep.train import checkpoint
from cifar_sweep.train.loop import Parts, Progress, evaluate
from cifar_sweep.train.resources import peak_rss_mb


def peak_memory(device: torch.device) -> tuple[float, str]:
    """(peak MB, what was measured): on a GPU the peak of tensor memory allocated by torch; on a
    CPU this process's peak resident memory since the job started, the data in memory included."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e6, "gpu_allocated"
    return peak_rss_mb(), "process_rss"


def test_and_log(cfg: DictConfig, parts: Parts, dataset: Dataset, result: Progress, client,
                 run_id: str) -> dict[str, float]:
    """Evaluate the loaded (best) weights on the test set; log the summary (at the last epoch's
    step) and the artifacts. Returns the summary, but `total_seconds` (the caller's to add)."""
    # imported here, not at the top: torchmetrics pulls in torchvision's models and torch._dynamo
    # (5-7 s per process, measured with python -X importtime), matplotlib 1.6 s; a process that
    # tests nothing (a sweep's parent, a bad value, a job finished before) never pays them
    from cifar_sweep.train.metrics import classification_report

    test = evaluate(parts, parts.test)
    peak_mb, peak_kind = peak_memory(parts.runtime.device)
    client.set_tag(run_id, t.PEAK_MEMORY, peak_kind)
    report = classification_report(test.logits, test.labels, len(dataset.classes))
    summary = {
        **report["scalars"],
        "test_loss": test.loss,
        "best_epoch": result.best_epoch,
        "best_val_accuracy": result.best_val_accuracy,
        "parameters": parameter_count(parts.model),
        "model_size_fp32_mb": state_dict_fp32_mb(parts.model),
        "peak_memory_mb": peak_mb,
        "train_seconds": result.fit_seconds,
        "train_images_per_second": result.images_seen / result.train_seconds,
        **{f"test_accuracy_{c}": a for c, a in zip(dataset.classes, report["per_class_accuracy"])},
    }
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        if cfg.tracking.figures:  # about 3 s a run on a CPU: searches turn them off
            _figures(result, report, test, dataset, run_id, out)
        # every example's label, prediction and probabilities: the table's per-example evidence
        # (index: the examples' positions in the full test set, None = all of it in order)
        kept = predictions.arrays(test.logits, test.labels, dataset.classes,
                                  index=subsets.full_test_positions(dataset),
                                  probabilities=cfg.tracking.predictions_probabilities)
        (out / predictions.ARTIFACT).write_bytes(predictions.to_bytes(kept))
        (out / "evaluation.json").write_text(json.dumps({
            "classes": dataset.classes, "confusion": report["confusion"],
            "per_class_accuracy": report["per_class_accuracy"], **report["scalars"]}, indent=1))
        plain = getattr(parts.model, "_orig_mod", parts.model)  # torch.compile's wrapper
        checkpoint.write_file(out / "best_weights.pt",
                              {k: v.cpu() for k, v in plain.state_dict().items()})
        client.log_artifacts(run_id, str(out))
    client.set_tag(run_id, t.PREDICTIONS, predictions.ARTIFACT)  # once the file is there
    # once per data fingerprint in the store: a report's figures draw the images from there
    test_images.log_once(client, str(cfg.tracking.uri), dataset.fingerprint,
                         dataset.test.images.cpu().numpy(), dataset.test.labels.cpu().numpy(),
                         dataset.classes, index=kept["index"])
    if cfg.tracking.log_model:  # the run's `model` (docs/mlflow.md); searches turn it off
        lineage.log_model(client, run_id, plain, cfg, dataset, cfg.trainer.epochs)
    return summary


def _figures(result: Progress, report: dict, test, dataset: Dataset, run_id: str,
             out: Path) -> None:
    from cifar_sweep.report import run_figures  # matplotlib: only where figures are drawn

    run_figures.learning_curves(result.history, out / "curves.png", title=run_id)
    run_figures.confusion_matrix(report["confusion"], dataset.classes, out / "confusion_matrix.png")
    probs = test.logits.softmax(1)
    images = dataset.test.images.float() / 255
    for correct, name in ((True, "correct.png"), (False, "wrong.png")):
        run_figures.prediction_grid(images, test.labels, probs, dataset.classes, correct, out / name)


def validation_only(cfg: DictConfig, parts: Parts, result: Progress, client,
                    run_id: str) -> dict[str, float]:
    """A tuned study's trial (`trainer.skip_test`): the summary without the test set, which is
    never evaluated, so that nothing a trial chooses by has seen it; its config as the artifact
    (no weights, figures or model: a search is many short runs)."""
    peak_mb, peak_kind = peak_memory(parts.runtime.device)
    client.set_tag(run_id, t.PEAK_MEMORY, peak_kind)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        client.log_artifacts(run_id, tmp)
    return {"best_epoch": result.best_epoch, "best_val_accuracy": result.best_val_accuracy,
            "parameters": parameter_count(parts.model),
            "model_size_fp32_mb": state_dict_fp32_mb(parts.model), "peak_memory_mb": peak_mb,
            "train_seconds": result.fit_seconds,
            "train_images_per_second": result.images_seen / result.train_seconds}
