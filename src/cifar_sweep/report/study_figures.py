"""A study's figures, sized for a paper (a 3.5 in column, or a 7 in two-column figure, fonts of
7-8 pt, 300 dpi PNG and a vector PDF): validation curves (mean ± std over seeds, with markers
where epochs are few), the confusion matrices normalised per true class (one figure per setting
and a grid of them, with a colour bar), and per-class accuracy with error bars over seeds and
the chance line. A row at chance is flagged in every figure. Reading only: nothing is written
to the store.

Each figure is one function of `FigureRow`s. A study of more than MANY_ROWS settings (a seed or
rate sweep of hundreds) would draw hundreds of curves, matrices and bars that no one can read,
and read every run's history and evaluation to do it: it gets a ranking instead (ranking.png:
every setting's mean test accuracy ± std, one dot each, the baseline's line and the chance
line, read from the table's own numbers), and the other figures show the baseline and the
TOP_ROWS best settings only, which their titles say.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from mlflow.tracking import MlflowClient

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

from cifar_sweep.report import run_figures
from cifar_sweep.report.writers import plural

COLUMN_IN, PAGE_IN = 3.5, 7.0   # a paper's column and its full width, in inches
DPI, SCREEN_DPI = 300, 150
FEW_EPOCHS = 15                 # up to this many points a curve gets markers and error bars
PAPER_STYLE = {"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "legend.fontsize": 7,
               "xtick.labelsize": 7, "ytick.labelsize": 7, "figure.titlesize": 8,
               "lines.linewidth": 1.2, "lines.markersize": 4, "savefig.dpi": DPI}
CHANCE_NOTE = "at chance"
MANY_ROWS = 12  # above this many settings: the ranking, and the others for a few rows only
TOP_ROWS = 5    # the best settings those few are, beside the baseline


@dataclass
class FigureRow:
    """One setting as the figures draw it: its label, its runs, whether it is at chance."""

    label: str
    run_ids: list[str]
    at_chance: bool = False
    accuracy: tuple[float, float] | None = None  # the table's mean test accuracy and its std
    baseline: bool = False
    number: int = 0  # its row in the table, from 1 (0: its place among the rows drawn)

    @property
    def name(self) -> str:
        return f"{self.label} ({CHANCE_NOTE})" if self.at_chance else self.label


def _save(fig, out: Path, stem: str, pdf: bool = True, dpi: int | None = None) -> None:
    """`pdf`: for a paper, a vector copy beside a print-resolution PNG; else (the figures a
    sweep's parent run carries, for the UI's preview) a screen-resolution PNG only, which also
    costs the sweep's end less."""
    fig.savefig(out / f"{stem}.png", dpi=dpi or (DPI if pdf else SCREEN_DPI))
    if pdf:  # without a creation date: `make tables` on the same store writes the same bytes
        fig.savefig(out / f"{stem}.pdf", metadata={"CreationDate": None})
    plt.close(fig)


def _histories(client: MlflowClient, run_ids: list[str], key: str) -> list[list[float]]:
    return [[m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]
            for run_id in run_ids]


def evaluations(client: MlflowClient, rows: list[FigureRow]) -> dict[str, dict]:
    """Each run's evaluation.json (classes and confusion counts), by run id."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for row in rows:
            for run_id in row.run_ids:
                path = client.download_artifacts(run_id, "evaluation.json", f"{tmp}/{run_id}")
                out[run_id] = json.loads(Path(path).read_text())
    return out


def curves(client: MlflowClient, rows: list[FigureRow], out: Path, title: str,
           chance: float | None = None, pdf: bool = True) -> None:
    """Validation loss and accuracy per epoch, two panels across a page's width."""
    with plt.rc_context(PAPER_STYLE):
        fig, axes = plt.subplots(1, 2, figsize=(PAGE_IN, 2.6), layout="constrained")
        longest, handles = 1, []
        for number, row in enumerate(rows):
            for ax, key in zip(axes, ("val_loss", "val_accuracy")):
                histories = [h for h in _histories(client, row.run_ids, key) if h]
                if not histories:
                    continue
                length = min(len(c) for c in histories)
                longest = max(longest, length)
                x = list(range(1, length + 1))
                mean = [statistics.fmean(c[i] for c in histories) for i in range(length)]
                std = ([statistics.stdev(c[i] for c in histories) for i in range(length)]
                       if len(histories) > 1 else None)
                style = {"linestyle": ":" if row.at_chance else "-", "label": row.name}
                if length <= FEW_EPOCHS:  # a point per epoch, its spread as an error bar;
                    # the rows dodged sideways a little, so that equal points stay visible
                    dodge = (number - (len(rows) - 1) / 2) * min(0.08, 0.4 / len(rows))
                    drawn = ax.errorbar([v + dodge for v in x], mean, yerr=std, marker="o",
                                        capsize=2, **style)
                else:
                    drawn, = ax.plot(x, mean, **style)
                    if std:
                        ax.fill_between(x, [m - s for m, s in zip(mean, std)],
                                        [m + s for m, s in zip(mean, std)], alpha=0.2,
                                        color=drawn.get_color(), linewidth=0)
                if len(handles) == number:  # the row's entry in the legend, once
                    handles.append(drawn)
        axes[0].set(xlabel="epoch", ylabel="validation loss")
        axes[1].set(xlabel="epoch", ylabel="validation accuracy")
        if chance is not None:
            handles.append(axes[1].axhline(chance, color="grey", linestyle="--", linewidth=0.8,
                                           label=f"chance ({chance:.0%})"))
        for ax in axes:
            ax.grid(alpha=0.3)
            ax.set_xlim(0.5, longest + 0.5)  # a 1-epoch sweep: its points in the middle
            if longest <= FEW_EPOCHS:  # every epoch a tick: never 0.945 ... 1.050
                ax.set_xticks(range(1, longest + 1))
            else:
                ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        if handles:
            fig.legend(handles, [h.get_label() for h in handles], loc="outside lower center",
                       ncol=min(len(handles), 4), frameon=False)
        fig.suptitle(f"{title}: mean over seeds, error = ±1 std")
        _save(fig, out, "curves", pdf)


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", label).strip("_")[:80] or "row"


def summed_confusion(evals: dict[str, dict], row: FigureRow) -> tuple[list[list[float]], list[str]]:
    """A row's confusion counts summed over its runs (seeds), and the classes."""
    summed, classes = None, []
    for run_id in row.run_ids:
        ev = evals[run_id]
        classes, matrix = ev["classes"], ev["confusion"]
        summed = matrix if summed is None else [
            [a + b for a, b in zip(x, y)] for x, y in zip(summed, matrix)]
    return summed, classes


def _confusion_title(row: FigureRow, width: int = 34) -> str:
    """Wrapped to the panel, so that a long label is never cut at the figure's edge."""
    return "\n".join(textwrap.wrap(f"{row.name}, {plural(len(row.run_ids), 'run')}", width,
                                    break_on_hyphens=False))


def confusion(evals: dict[str, dict], rows: list[FigureRow], out: Path, title: str,
              for_paper: bool = True) -> None:
    """A grid of the settings' matrices at a page's width (confusion.png), on one 0-100% scale
    with one colour bar; `for_paper`: also one figure per setting at a column's width
    (confusion/<nn>-<label>.png) and the grid as a PDF."""
    if for_paper:
        (out / "confusion").mkdir(exist_ok=True)
    with plt.rc_context(PAPER_STYLE):
        for number, row in enumerate(rows if for_paper else [], 1):
            matrix, classes = summed_confusion(evals, row)
            fig, ax = plt.subplots(figsize=(COLUMN_IN, COLUMN_IN * 0.95), layout="constrained")
            image = run_figures.draw_confusion(ax, matrix, classes, _confusion_title(row))
            fig.colorbar(image, ax=ax, shrink=0.8, label="share of the true class",
                         format=matplotlib.ticker.PercentFormatter(1.0))
            # numbered by the table's row: two labels never share a file
            _save(fig, out / "confusion", f"{row.number or number:02d}-{_slug(row.label)}", pdf=False,
                  dpi=DPI)
        columns = min(len(rows), 3)
        lines = -(-len(rows) // columns)
        fig, axes = plt.subplots(lines, columns, squeeze=False, layout="constrained",
                                 figsize=(PAGE_IN, PAGE_IN / columns * 1.02 * lines))
        image = None
        for ax, row in zip(axes.flat, rows):
            matrix, classes = summed_confusion(evals, row)
            image = run_figures.draw_confusion(ax, matrix, classes, _confusion_title(row, 26),
                                         numbers=len(classes) <= (12 if columns < 3 else 10))
        for ax in list(axes.flat)[len(rows):]:
            ax.axis("off")
        fig.colorbar(image, ax=axes, shrink=0.6, label="share of the true class",
                     format=matplotlib.ticker.PercentFormatter(1.0))
        fig.suptitle(f"{title}: test confusion, normalised per true class (cells: %)")
        _save(fig, out, "confusion", for_paper)


def per_class(evals: dict[str, dict], rows: list[FigureRow], out: Path, title: str,
              pdf: bool = True) -> None:
    """Each row's test accuracy per class: bars of the mean over its runs, error bars ±1 std
    over seeds, the chance line 1/classes."""
    classes = evals[rows[0].run_ids[0]]["classes"]
    width = 0.8 / len(rows)
    with plt.rc_context(PAPER_STYLE):
        fig, ax = plt.subplots(figsize=(PAGE_IN, 2.6), layout="constrained")
        handles = []
        for i, row in enumerate(rows):
            runs = [run_figures.normalised(evals[r]["confusion"]).diagonal().tolist()
                    for r in row.run_ids if evals[r]["classes"] == classes]
            if not runs:
                continue
            means = [statistics.fmean(v) for v in zip(*runs)]
            errors = [statistics.stdev(v) for v in zip(*runs)] if len(runs) > 1 else None
            handles.append(ax.bar([k + i * width for k in range(len(classes))], means, width,
                                  yerr=errors,
                   capsize=1.5, error_kw={"linewidth": 0.7}, label=row.name,
                                  hatch="//" if row.at_chance else None))
        chance = 1 / len(classes)
        handles.append(ax.axhline(chance, color="grey", linestyle="--", linewidth=0.8,
                                  label=f"chance (1/{len(classes)} = {chance:.0%})"))
        ax.set_xticks([k + 0.4 - width / 2 for k in range(len(classes))], classes,
                      rotation=30 if len(classes) <= 12 else 90)
        ax.set(ylabel="test accuracy", ylim=(0, 1))
        ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
        ax.grid(axis="y", alpha=0.3)
        fig.legend(handles, [h.get_label() for h in handles], loc="outside lower center",
                   ncol=min(len(handles), 4), frameon=False)
        fig.suptitle(f"{title}: per-class accuracy, mean over seeds, error = ±1 std")
        _save(fig, out, "per_class_accuracy", pdf)


def shown(rows: list[FigureRow]) -> list[FigureRow]:
    """The rows the curves, matrices and bars draw: all of them, or past MANY_ROWS the baseline
    (else the first) and the TOP_ROWS best by mean test accuracy, in the table's order."""
    if len(rows) <= MANY_ROWS:
        return rows
    base = next((r for r in rows if r.baseline), rows[0])
    ranked = sorted((r for r in rows if r is not base and r.accuracy),
                    key=lambda r: -r.accuracy[0])
    keep = {id(base), *(id(r) for r in ranked[:TOP_ROWS])}
    return [r for r in rows if id(r) in keep]


def ranking(rows: list[FigureRow], out: Path, title: str, chance: float | None,
            pdf: bool = True) -> None:
    """Every setting's mean test accuracy ± std over seeds, a dot each in the table's order, the
    baseline's as a line; settings at chance hollow. Labels on the axis up to 40 settings,
    else the setting's number in the table."""
    drawn = [(i, r) for i, r in enumerate(rows, 1) if r.accuracy]
    with plt.rc_context(PAPER_STYLE):
        fig, ax = plt.subplots(figsize=(PAGE_IN, 2.8), layout="constrained")
        for hollow in (False, True):
            part = [(i, r) for i, r in drawn if r.at_chance == hollow]
            if part:
                ax.errorbar([i for i, _ in part], [r.accuracy[0] for _, r in part],
                            yerr=[r.accuracy[1] for _, r in part], fmt="o", markersize=2.5,
                            elinewidth=0.6, capsize=0, color="C0",
                            markerfacecolor="none" if hollow else "C0",
                            label=CHANCE_NOTE if hollow else "mean ± 1 std over seeds")
        base = next((r for r in rows if r.baseline), None)
        if base and base.accuracy:
            ax.axhline(base.accuracy[0], color="C1", linewidth=0.8,
                       label=f"baseline ({textwrap.shorten(base.label, 40)})")
        if chance is not None:
            ax.axhline(chance, color="grey", linestyle="--", linewidth=0.8,
                       label=f"chance ({chance:.0%})")
        if len(rows) <= 40:
            ax.set_xticks(range(1, len(rows) + 1),
                          [textwrap.shorten(r.label, 24) for r in rows], rotation=90)
        else:
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
            ax.set_xlabel("setting (its row in the table)")
        ax.set_xlim(0.3, len(rows) + 0.7)
        low, high = ax.get_ylim()
        if high - low < 0.05:  # equal numbers: a span of 5 points, not 0.8 points magnified
            middle = (low + high) / 2
            ax.set_ylim(middle - 0.025, middle + 0.025)
        ax.set_ylabel("test accuracy")
        ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
        ax.grid(axis="y", alpha=0.3)
        ax.legend(loc="best", frameon=False)
        fig.suptitle(f"{title}: {plural(len(rows), 'setting')}, test accuracy")
        _save(fig, out, "ranking", pdf)


def write_all(client: MlflowClient, rows: list[FigureRow], out: Path, title: str,
              for_paper: bool = True) -> None:
    """Every figure of a study into `out`; without `for_paper` (a sweep's parent run, drawn as
    the sweep ends): the PNGs only, no PDFs and no figure per setting. Past MANY_ROWS settings:
    the ranking of all, the others of the few `shown` picks."""
    if len(rows) > MANY_ROWS:
        few = shown(rows)
        evals = evaluations(client, few)
        classes = evals[few[0].run_ids[0]]["classes"] if few and few[0].run_ids else []
        ranking(rows, out, title, 1 / len(classes) if classes else None, for_paper)
        rows, title = few, (f"{title}\n(the baseline and the {TOP_ROWS} best of "
                            f"{plural(len(rows), 'setting')})")  # two lines fit a page
    else:
        evals = evaluations(client, rows)
    classes = evals[rows[0].run_ids[0]]["classes"] if rows and rows[0].run_ids else []
    curves(client, rows, out, title, 1 / len(classes) if classes else None, for_paper)
    confusion(evals, rows, out, title, for_paper)
    per_class(evals, rows, out, title, for_paper)
