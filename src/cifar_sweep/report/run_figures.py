"""Figures of one run: learning curves, confusion matrix, correctly and wrongly classified images."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch


def learning_curves(history: dict[str, list[float]], path: Path, title: str = "") -> Path:
    epochs = range(1, len(history["train_loss"]) + 1)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, history["train_loss"], label="train")
    ax_loss.plot(epochs, history["val_loss"], label="validation")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="Loss")
    ax_acc.plot(epochs, history["train_accuracy"], label="train")
    ax_acc.plot(epochs, history["val_accuracy"], label="validation")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="Accuracy")
    for ax in (ax_loss, ax_acc):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def normalised(confusion: list[list[int]] | list[list[float]]) -> torch.Tensor:
    """Each true class's row divided by its count: the share of that class predicted as each
    class (the diagonal is the class's accuracy); a class absent from the test set stays 0."""
    matrix = torch.tensor(confusion, dtype=torch.float)
    return matrix / matrix.sum(1, keepdim=True).clamp(min=1)


def draw_confusion(ax, confusion: list[list[int]] | list[list[float]], classes: list[str], title: str = "",
                   numbers: bool | None = None):
    """The confusion matrix normalised per true class, on a fixed 0-1 scale (so that panels
    compare); the cells' percentages where they stay legible (up to 12 classes). Returns the
    image, for a colour bar."""
    matrix = normalised(confusion)
    image = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1)
    size = 7 if len(classes) <= 12 else 5
    ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=size)
    ax.set_yticks(range(len(classes)), classes, fontsize=size)
    ax.set(xlabel="predicted class", ylabel="true class", title=title)
    if numbers if numbers is not None else len(classes) <= 12:
        for i in range(len(classes)):
            for j in range(len(classes)):
                value = float(matrix[i, j])
                if value >= 0.005:  # an empty cell stays blank: the eye finds the errors
                    ax.text(j, i, f"{value * 100:.0f}", ha="center", va="center", fontsize=5,
                            color="white" if value > 0.5 else "black")
    return image


def confusion_matrix(confusion: list[list[int]], classes: list[str], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(3.5, 3.3), layout="constrained")
    image = draw_confusion(ax, confusion, classes, "Confusion matrix (test, % of true class)")
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of the true class")
    fig.savefig(path, dpi=300)
    plt.close(fig)
    return path


def prediction_grid(
    images: torch.Tensor, labels: torch.Tensor, probs: torch.Tensor, classes: list[str],
    correct: bool, path: Path, count: int = 16,
) -> Path:
    """The report's figures 1 and 2: test images with true class, predicted class and confidence."""
    confidence, preds = probs.max(1)
    # a fixed random sample, so that the grid shows many classes, not the first class in the split
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    chosen = order[((preds == labels) == correct)[order]][:count]
    cols = 4
    rows = max(1, (len(chosen) + cols - 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.2, rows * 2.5), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, chosen.tolist()):
        ax.imshow(images[i].permute(1, 2, 0).numpy())
        ax.set_title(f"true: {classes[labels[i]]}\npred: {classes[preds[i]]} ({confidence[i]:.0%})",
                     fontsize=8, color="green" if correct else "red")
    fig.suptitle("Correctly classified" if correct else "Wrongly classified")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
