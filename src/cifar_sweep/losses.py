"""Training criteria, built by Hydra from `conf/loss/*.yaml` as partials taking the train labels."""

import torch
from torch import nn


def cross_entropy(
    train_labels: torch.Tensor, num_classes: int,
    label_smoothing: float = 0.0, class_weighted: bool = False,
) -> nn.CrossEntropyLoss:
    """Cross-entropy; `label_smoothing` is the real thing (the report used SmoothL1Loss).
    `class_weighted` weighs each class by the inverse of its share of the training labels."""
    weight = None
    if class_weighted:
        counts = torch.bincount(train_labels.cpu(), minlength=num_classes).float().clamp(min=1)
        weight = (counts.sum() / (num_classes * counts)).to(train_labels.device)
    return nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)
