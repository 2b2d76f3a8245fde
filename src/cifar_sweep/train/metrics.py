"""Test-set metrics, computed by torchmetrics from the logits of `train.loop.evaluate`."""

import torch
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)


def classification_report(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict:
    """Accuracy; precision, recall and F1 both weighted (the report's Table VII) and macro;
    per-class accuracy; the confusion matrix (rows true, columns predicted)."""
    preds = logits.argmax(1)
    k = dict(num_classes=num_classes)
    metrics = {"test_accuracy": MulticlassAccuracy(average="micro", **k)(preds, labels).item()}
    for average in ("weighted", "macro"):
        metrics[f"test_precision_{average}"] = MulticlassPrecision(average=average, **k)(preds, labels).item()
        metrics[f"test_recall_{average}"] = MulticlassRecall(average=average, **k)(preds, labels).item()
        metrics[f"test_f1_{average}"] = MulticlassF1Score(average=average, **k)(preds, labels).item()
    per_class = MulticlassAccuracy(average=None, **k)(preds, labels)
    confusion = MulticlassConfusionMatrix(**k)(preds, labels)
    return {"scalars": metrics, "per_class_accuracy": per_class.tolist(),
            "confusion": confusion.tolist()}
