"""A study's figures, from the store: validation curves (mean ± std over seeds), the confusion
matrices side by side, and per-class accuracy. Reading only: nothing is written to the store."""

from __future__ import annotations

import json
import os
import statistics
import tempfile
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

from cifar_sweep import plots  # noqa: E402


def _histories(client: MlflowClient, run_ids: list[str], key: str) -> list[list[float]]:
    return [[m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]
            for run_id in run_ids]


def curves(client: MlflowClient, rows, out: Path, title: str) -> None:
    """`rows`: (label, run ids) pairs."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for label, run_ids in rows:
        for ax, key in zip(axes, ("val_loss", "val_accuracy")):
            histories = [h for h in _histories(client, run_ids, key) if h]
            if not histories:
                continue
            length = min(len(c) for c in histories)
            mean = [statistics.fmean(c[i] for c in histories) for i in range(length)]
            line, = ax.plot(range(1, length + 1), mean, label=label)
            if len(histories) > 1:
                std = [statistics.stdev(c[i] for c in histories) for i in range(length)]
                ax.fill_between(range(1, length + 1), [m - s for m, s in zip(mean, std)],
                                [m + s for m, s in zip(mean, std)], alpha=0.2,
                                color=line.get_color())
    axes[0].set(xlabel="epoch", ylabel="validation loss", title="Validation loss")
    axes[1].set(xlabel="epoch", ylabel="validation accuracy", title="Validation accuracy")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    fig.suptitle(f"Study: {title} (mean over seeds, band = ±1 std)")
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=120)
    plt.close(fig)


def confusion_and_classes(client: MlflowClient, rows, per_class: list[list[float]], out: Path,
                          title: str) -> None:
    """The summed confusion matrix of each row's runs, side by side; and each row's mean test
    accuracy per class (`per_class[i]`: row i's, in the classes' order)."""
    evaluations = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, run_ids in rows:
            summed, classes = None, None
            for run_id in run_ids:
                path = client.download_artifacts(run_id, "evaluation.json", tmp)
                ev = json.loads(Path(path).read_text())
                classes, matrix = ev["classes"], ev["confusion"]
                summed = matrix if summed is None else [
                    [a + b for a, b in zip(x, y)] for x, y in zip(summed, matrix)]
            evaluations.append((label, len(run_ids), summed, classes))
    n = len(rows)
    fig, axes = plt.subplots(1, n, figsize=(5 * n, 5), squeeze=False)
    for ax, (label, runs, matrix, classes) in zip(axes[0], evaluations):
        plots.draw_confusion(ax, matrix, classes, f"{label} ({runs} runs)")
    fig.tight_layout()
    fig.savefig(out / "confusion.png", dpi=110)
    plt.close(fig)

    classes = evaluations[0][3]
    fig, ax = plt.subplots(figsize=(max(8, len(classes) * 0.9), 4))
    width = 0.8 / n
    for i, ((label, _), means) in enumerate(zip(rows, per_class)):
        ax.bar([k + i * width for k in range(len(classes))], means, width, label=label)
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(classes))], classes, rotation=30)
    ax.set(ylabel="test accuracy", title=f"Per-class accuracy, study: {title}", ylim=(0, 1))
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "per_class_accuracy.png", dpi=120)
    plt.close(fig)
