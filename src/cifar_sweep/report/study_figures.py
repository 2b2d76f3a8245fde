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
from typing import TYPE_CHECKING, Any, cast

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from mlflow.tracking import MlflowClient

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

from cifar_sweep.report import run_figures
from cifar_sweep.report.writers import plural

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

    from cifar_sweep.report.tuning import Trial

COLUMN_IN, PAGE_IN = 3.5, 7.0   # a paper's column and its full width, in inches
DPI, SCREEN_DPI = 300, 150
FEW_EPOCHS = 15                 # up to this many points a curve gets markers and error bars
# typed as matplotlib's rc keys, so that mypy checks each name
PAPER_STYLE: dict[RcKeyType, Any] = {
    "font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "legend.fontsize": 7,
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
    paper: tuple[str, float] | None = None  # the report's test accuracy: (its source, a share)
    overrides: tuple[tuple[str, str], ...] = ()  # the settings that name it: (key, value) pairs

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


def _title(fig, text: str) -> None:
    """The figure's title, broken into lines where one line would be wider than the figure (a
    long study name and caption: `optimizer_tuned`'s curves lost both ends), at the width the
    drawn text measures, so that a title that fits keeps one line and its bytes."""
    title = fig.suptitle(text)
    room, renderer = 0.97 * fig.bbox.width, fig.canvas.get_renderer()
    width = title.get_window_extent(renderer).width
    chars = len(text)
    while width > room and chars > 20:  # narrower until every line fits (widths vary by letter)
        chars = min(chars - 1, int(chars * room / width))
        title.set_text(textwrap.fill(text, chars, break_long_words=False, break_on_hyphens=False))
        width = title.get_window_extent(renderer).width


def spread_note(rows: list[FigureRow], what: str = "mean over seeds, error = ±1 std") -> str:
    """What the points are: `what` where a row has several seeds, else `one seed` (no mean, no
    error bars to speak of)."""
    return what if any(len(r.run_ids) > 1 for r in rows) else "one seed per setting"


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
           chance: float | None = None, pdf: bool = True, setting: str = "") -> None:
    """Validation loss and accuracy per epoch, two panels across a page's width."""
    with plt.rc_context(PAPER_STYLE):
        fig, axes = plt.subplots(1, 2, figsize=(PAGE_IN, 2.6), layout="constrained")
        longest = 1
        handles: list[Any] = []  # the legend's: a row's line or error bars, the chance line
        for number, row in enumerate(rows):
            for ax, key in zip(axes, ("val_loss", "val_accuracy")):
                histories = [h for h in _histories(client, row.run_ids, key) if h]
                if not histories:
                    continue
                # early-stopped seeds end at different epochs: each epoch's point is the mean
                # over the seeds still training then, so a row's curve runs to its longest seed
                length = max(len(c) for c in histories)
                longest = max(longest, length)
                x = list(range(1, length + 1))
                at = [[c[i] for c in histories if len(c) > i] for i in range(length)]
                mean = [statistics.fmean(v) for v in at]
                std = ([statistics.stdev(v) if len(v) > 1 else 0.0 for v in at]
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
                       ncol=min(len(handles), 4), frameon=False, title=setting or None)
        _title(fig, f"{title}: {spread_note(rows)}")
        _save(fig, out, "curves", pdf)


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", label).strip("_")[:80] or "row"


def summed_confusion(evals: dict[str, dict], row: FigureRow) -> tuple[list[list[float]], list[str]]:
    """A row's confusion counts summed over its runs (seeds), and the classes."""
    summed: list[list[float]] | None = None
    classes: list[str] = []
    for run_id in row.run_ids:
        ev = evals[run_id]
        classes, matrix = ev["classes"], ev["confusion"]
        summed = matrix if summed is None else [
            [a + b for a, b in zip(x, y)] for x, y in zip(summed, matrix)]
    return cast(list[list[float]], summed), classes  # a row has runs


def _confusion_title(row: FigureRow, width: int = 34, setting: str = "") -> str:
    """Wrapped to the panel, so that a long label is never cut at the figure's edge; the
    setting named (`lr.value=0.001`) where one setting varies."""
    name = f"{setting}={row.name}" if setting else row.name
    return "\n".join(textwrap.wrap(f"{name}, {plural(len(row.run_ids), 'run')}", width,
                                    break_on_hyphens=False))


def confusion(evals: dict[str, dict], rows: list[FigureRow], out: Path, title: str,
              for_paper: bool = True, setting: str = "") -> None:
    """A grid of the settings' matrices at a page's width (confusion.png), on one 0-100% scale
    with one colour bar; `for_paper`: also one figure per setting at a column's width
    (confusion/<nn>-<label>.png) and the grid as a PDF."""
    if for_paper:
        (out / "confusion").mkdir(exist_ok=True)
    with plt.rc_context(PAPER_STYLE):
        for number, row in enumerate(rows if for_paper else [], 1):
            matrix, classes = summed_confusion(evals, row)
            fig, ax = plt.subplots(figsize=(COLUMN_IN, COLUMN_IN * 0.95), layout="constrained")
            image = run_figures.draw_confusion(ax, matrix, classes,
                                               _confusion_title(row, setting=setting))
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
            image = run_figures.draw_confusion(ax, matrix, classes,
                                               _confusion_title(row, 26, setting),
                                         numbers=len(classes) <= (12 if columns < 3 else 10))
        for ax in list(axes.flat)[len(rows):]:
            ax.axis("off")
        fig.colorbar(image, ax=axes, shrink=0.6, label="share of the true class",
                     format=matplotlib.ticker.PercentFormatter(1.0))
        _title(fig, f"{title}: test confusion, normalised per true class (cells: %)")
        _save(fig, out, "confusion", for_paper)


def per_class(evals: dict[str, dict], rows: list[FigureRow], out: Path, title: str,
              pdf: bool = True, setting: str = "") -> None:
    """Each row's test accuracy per class: bars of the mean over its runs, error bars ±1 std
    over seeds, the chance line 1/classes."""
    classes = evals[rows[0].run_ids[0]]["classes"]
    width = 0.8 / len(rows)
    with plt.rc_context(PAPER_STYLE):
        fig, ax = plt.subplots(figsize=(PAGE_IN, 2.6), layout="constrained")
        handles: list[Any] = []  # the legend's: a row's bars, the chance line
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
                   ncol=min(len(handles), 4), frameon=False, title=setting or None)
        _title(fig, f"{title}: per-class accuracy, {spread_note(rows)}")
        _save(fig, out, "per_class_accuracy", pdf)


def _accuracy(row: FigureRow) -> tuple[float, float]:
    """A drawn row's mean test accuracy and std: the figures draw only the rows that have them."""
    assert row.accuracy is not None
    return row.accuracy


def shown(rows: list[FigureRow]) -> list[FigureRow]:
    """The rows the curves, matrices and bars draw: all of them, or past MANY_ROWS the baseline
    (else the first) and the TOP_ROWS best by mean test accuracy, in the table's order."""
    if len(rows) <= MANY_ROWS:
        return rows
    base = next((r for r in rows if r.baseline), rows[0])
    ranked = sorted((r for r in rows if r is not base and r.accuracy),
                    key=lambda r: -_accuracy(r)[0])
    keep = {id(base), *(id(r) for r in ranked[:TOP_ROWS])}
    return [r for r in rows if id(r) in keep]


def ranking(rows: list[FigureRow], out: Path, title: str, chance: float | None,
            pdf: bool = True, setting: str = "") -> None:
    """Every setting's mean test accuracy ± std over seeds, a dot each in the table's order, the
    baseline's as a line; settings at chance hollow. Labels on the axis up to 40 settings,
    else the setting's number in the table."""
    drawn = [(i, r) for i, r in enumerate(rows, 1) if r.accuracy]
    with plt.rc_context(PAPER_STYLE):
        fig, ax = plt.subplots(figsize=(PAGE_IN, 2.8), layout="constrained")
        for hollow in (False, True):
            part = [(i, r) for i, r in drawn if r.at_chance == hollow]
            if part:
                spread = [_accuracy(r)[1] if len(r.run_ids) > 1 else 0.0 for _, r in part]
                ax.errorbar([i for i, _ in part], [_accuracy(r)[0] for _, r in part],
                            yerr=spread if any(spread) else None, fmt="o", markersize=2.5,
                            elinewidth=0.6, capsize=0, color="C0",
                            markerfacecolor="none" if hollow else "C0",
                            label=CHANCE_NOTE if hollow else
                            spread_note(rows, "mean ± 1 std over seeds"))
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
            ax.set_xlabel(setting or "setting")
        else:
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
            ax.set_xlabel(f"{setting or 'setting'} (its row in the table)")
        ax.set_xlim(0.3, len(rows) + 0.7)
        low, high = ax.get_ylim()
        if high - low < 0.05:  # equal numbers: a span of 5 points, not 0.8 points magnified
            middle = (low + high) / 2
            ax.set_ylim(middle - 0.025, middle + 0.025)
        ax.set_ylabel("test accuracy")
        ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
        ax.grid(axis="y", alpha=0.3)
        ax.legend(loc="best", frameon=False)
        _title(fig, f"{title}: {plural(len(rows), 'setting')}, test accuracy")
        _save(fig, out, "ranking", pdf)


def numeric(rows: list[FigureRow]) -> list[float] | None:
    """The rows' labels as numbers, or None where one is not a number."""
    try:
        return [float(r.label) for r in rows]
    except ValueError:
        return None


LOG_SPAN = 10  # values spanning more than this factor: a log axis
VALUE_TICKS = 15  # up to this many values, a tick at each (else matplotlib's own ticks)


def accuracy_vs(rows: list[FigureRow], out: Path, title: str, setting: str,
                chance: float | None, pdf: bool = True) -> None:
    """accuracy_vs_<setting>.png: test accuracy against a numeric setting's value, mean ± 1 std
    over seeds (one seed: its point), on a log axis where the values span more than LOG_SPAN
    times; the baseline ringed, the report's numbers as a second marker, the chance line."""
    values = numeric(rows)
    assert values is not None, "accuracy_vs needs numeric settings"
    drawn = sorted((v, r) for v, r in zip(values, rows) if r.accuracy)
    several = any(len(r.run_ids) > 1 for _, r in drawn)
    with plt.rc_context(PAPER_STYLE):
        fig, ax = plt.subplots(figsize=(COLUMN_IN, 2.6), layout="constrained")
        handles: list[Any] = [ax.errorbar(
            [v for v, _ in drawn], [_accuracy(r)[0] for _, r in drawn],
            yerr=[_accuracy(r)[1] if len(r.run_ids) > 1 else 0.0 for _, r in drawn] if several else None,
            fmt="-o", capsize=2, color="C0",
            label="ours, " + spread_note(rows, "mean ± 1 std over seeds"))]
        base = [(v, r) for v, r in drawn if r.baseline]
        if base:
            handles += ax.plot([base[0][0]], [_accuracy(base[0][1])[0]], "o", markersize=9,
                               markerfacecolor="none", markeredgecolor="C1",
                               markeredgewidth=1.2, label=f"baseline ({setting}={base[0][1].label})")
        paper = [(v, r.paper) for v, r in drawn if r.paper]
        if paper:
            handles += ax.plot([v for v, _ in paper], [p[1] for _, p in paper], "x", color="C3",
                               label=f"report ({paper[0][1][0]})")
        if chance is not None:
            handles.append(ax.axhline(chance, color="grey", linestyle="--", linewidth=0.8,
                                      label=f"chance ({chance:.0%})"))
        positive = [v for v, _ in drawn if v > 0]
        if len(positive) == len(drawn) and positive and max(positive) > LOG_SPAN * min(positive):
            ax.set_xscale("log")
        if len(drawn) <= VALUE_TICKS:  # a tick per value, as the table writes it
            ax.set_xticks([v for v, _ in drawn], [r.label for _, r in drawn],
                          rotation=45 if len(drawn) > 6 else 0)
            ax.minorticks_off()
        ax.set(xlabel=setting, ylabel="test accuracy")
        ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
        ax.grid(alpha=0.3)
        ax.legend(handles, [h.get_label() for h in handles], loc="best", frameon=False)
        _title(fig, title)
        _save(fig, out, f"accuracy_vs_{_slug(setting)}", pdf)


def write_all(client: MlflowClient, rows: list[FigureRow], out: Path, title: str,
              for_paper: bool = True, setting: str = "") -> None:
    """Every figure of a study into `out`; without `for_paper` (a sweep's parent run, drawn as
    the sweep ends): the PNGs only, no PDFs and no figure per setting. Past MANY_ROWS settings:
    the ranking of all, the others of the few `shown` picks. `setting`: the one setting that
    varies (`lr.value`), named in legends and axes; a numeric one also gets `accuracy_vs`."""
    every = rows
    if len(rows) > MANY_ROWS:
        few = shown(rows)
        evals = evaluations(client, few)
        classes = evals[few[0].run_ids[0]]["classes"] if few and few[0].run_ids else []
        ranking(rows, out, title, 1 / len(classes) if classes else None, for_paper, setting)
        rows, title = few, (f"{title}\n(the baseline and the {TOP_ROWS} best of "
                            f"{plural(len(rows), 'setting')})")  # two lines fit a page
    else:
        evals = evaluations(client, rows)
    classes = evals[rows[0].run_ids[0]]["classes"] if rows and rows[0].run_ids else []
    if setting and numeric(every) is not None and any(r.accuracy for r in every):
        accuracy_vs(every, out, title.split("\n")[0], setting,
                    1 / len(classes) if classes else None, for_paper)
    curves(client, rows, out, title, 1 / len(classes) if classes else None, for_paper, setting)
    confusion(evals, rows, out, title, for_paper, setting)
    per_class(evals, rows, out, title, for_paper, setting)
    grid(every, out, title.split("\n")[0], for_paper)  # a sweep of two settings: their grid


def grid_cells(rows: list[FigureRow]):
    """(the two settings, the first's values, the second's, mean test accuracy of each pair (NaN
    where none), the column of each line's best) of a sweep of two settings; None where the rows
    do not all name the same two settings, each with two values or more."""
    keys = [k for k, _ in rows[0].overrides] if rows else []
    cells = {tuple(v for _, v in r.overrides): r for r in rows if r.accuracy}
    if len(keys) != 2 or any([k for k, _ in r.overrides] != keys for r in rows) or not cells:
        return None
    down = list(dict.fromkeys(v for v, _ in cells))
    across = list(dict.fromkeys(v for _, v in cells))
    if len(down) < 2 or len(across) < 2:
        return None
    means = [[_accuracy(cells[(a, b)])[0] if (a, b) in cells else float("nan") for b in across]
             for a in down]
    best = [max((j for j, m in enumerate(line) if m == m), key=line.__getitem__)
            for line in means]
    return keys, down, across, means, best, cells


def grid(rows: list[FigureRow], out: Path, title: str, pdf: bool = True) -> bool:
    """A sweep of two settings (`-m optimizer=sgd,adam lr.value=0.001,0.01,0.1`): grid.png (and
    PDF), a heatmap of the mean test accuracy of each pair (the first setting's values down, the
    second's across, each cell annotated mean ± std over seeds) with the best cell of each value
    of the first setting outlined (`grid_cells`). Returns whether it was drawn."""
    from matplotlib.patches import Rectangle

    found = grid_cells(rows)
    if found is None:
        return False
    keys, down, across, means, bests, cells = found
    with plt.rc_context(PAPER_STYLE):
        width = min(PAGE_IN, max(COLUMN_IN, 1.0 + 1.1 * len(across)))
        fig, ax = plt.subplots(figsize=(width, 0.9 + 0.45 * len(down)), layout="constrained")
        image = ax.imshow(means, cmap="viridis", aspect="auto")
        fig.colorbar(image, ax=ax, label="mean test accuracy",
                     format=matplotlib.ticker.PercentFormatter(1.0))
        finite = [m for line in means for m in line if m == m]
        middle = (min(finite) + max(finite)) / 2
        for i, (a, best) in enumerate(zip(down, bests)):
            for j, b in enumerate(across):
                row = cells.get((a, b))
                if row is None:
                    continue
                mean, std = row.accuracy
                text = f"{mean * 100:.1f}" + (f"\n± {std * 100:.1f}" if len(row.run_ids) > 1
                                              else "")
                ax.text(j, i, text, ha="center", va="center", fontsize=6,
                        color="black" if mean > middle else "white",
                        fontweight="bold" if j == best else "normal")
            ax.add_patch(Rectangle((best - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red",
                                   linewidth=1.5))
        ax.set_xticks(range(len(across)), [textwrap.shorten(b, 14) for b in across])
        ax.set_yticks(range(len(down)), [textwrap.shorten(a, 18) for a in down])
        ax.set_xlabel(keys[1])
        ax.set_ylabel(keys[0])
        ax.set_title(textwrap.fill(f"{title}: mean test accuracy (%) ± std; outlined: the "
                                   f"best {keys[1]} for each {keys[0]}", 70), fontsize=7)
        _save(fig, out, "grid", pdf)
    return True


def trials(arms: list[tuple[str, list[Trial], Trial | None, list[str]]], out: Path, title: str,
           pdf: bool = True) -> None:
    """A tuned study's searches (trials.png and PDF): for each arm (a column) and each tuned
    setting (a row), every trial's validation accuracy against its value (finished: dots;
    pruned: crosses at their last epoch's), the chosen trial a star; a log axis where the
    values span more than 10x. `arms`: (label, report.tuning.Trial list, its best, the keys)."""
    keys = list(dict.fromkeys(k for _, _, _, ks in arms for k in ks))
    if not arms or not keys:
        return
    with plt.rc_context(PAPER_STYLE):
        fig, axes = plt.subplots(len(keys), len(arms), squeeze=False, sharey=True,
                                 figsize=(min(PAGE_IN, 1.9 * len(arms) + 0.6),
                                          1.7 * len(keys) + 0.6), layout="constrained")
        for col, (label, arm_trials, best, _) in enumerate(arms):
            for line, key in enumerate(keys):
                ax = axes[line][col]
                done = [(tr.values[key], tr.value) for tr in arm_trials
                        if tr.state == "finished" and tr.value is not None and key in tr.values]
                pruned = [(tr.values[key], tr.last_val) for tr in arm_trials
                          if tr.state == "pruned" and tr.last_val is not None
                          and key in tr.values]
                numbers = _numbers([v for v, _ in done + pruned])
                if numbers is None:  # categorical: the choices in the order first seen
                    choices = list(dict.fromkeys(v for v, _ in done + pruned))
                    place: dict[str, float] = {c: i for i, c in enumerate(choices)}
                    ax.set_xticks(range(len(choices)), choices)
                else:
                    place = dict(zip([v for v, _ in done + pruned], numbers))
                    positive = [n for n in numbers if n > 0]
                    if positive and len(positive) == len(numbers) and \
                            max(positive) > 10 * min(positive):
                        ax.set_xscale("log")
                ax.plot([place[v] for v, _ in done], [a for _, a in done], "o", color="C0",
                        markersize=3, label="finished")
                if pruned:
                    ax.plot([place[v] for v, _ in pruned], [a for _, a in pruned], "x",
                            color="grey", markersize=3, label="pruned (last epoch)")
                if best is not None and key in best.values:
                    ax.plot([place[best.values[key]]], [best.value], "*", color="C3",
                            markersize=9, label="chosen")
                ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
                ax.grid(alpha=0.3)
                if line == 0:
                    ax.set_title(label)
                ax.set_xlabel(key)
                if col == 0:
                    ax.set_ylabel("validation accuracy")
        axes[0][0].legend(loc="best", frameon=False)
        _title(fig, f"{title}: each arm's trials")
        _save(fig, out, "trials", pdf)


def _numbers(values: list[str]) -> list[float] | None:
    try:
        return [float(v) for v in values]
    except ValueError:
        return None


def flipped_images(images: dict[int, tuple], classes: list[str], lost: list[tuple[int, int, int]],
                   gained: list[tuple[int, int, int]], seeds: int, row: str, baseline: str,
                   out: Path, stem: str, title: str, pdf: bool = True,
                   totals: tuple[int, int] | None = None) -> None:
    """The test images behind a row's difference to the baseline (the report's Fig. 1/2 over
    seeds and settings): left, up to 16 right under the baseline and wrong under the row in the
    most seeds; right, the reverse. Each image: (its index in the test set, in how many of the
    `seeds` shared seeds it flipped, the wrong prediction: the row's on the left, the
    baseline's on the right); `totals`: how many images are
    flipped in at least one seed, each way. `images`: index -> (an H x W x
    3 uint8 image, its label)."""
    with plt.rc_context(PAPER_STYLE):
        fig = plt.figure(figsize=(PAGE_IN, 4.6), layout="constrained")
        # an array of two (matplotlib's types allow one figure: a 1 x 1 call returns it bare)
        halves = cast(Any, fig.subfigures(1, 2, wspace=0.04))
        lost_total, gained_total = totals if totals else (None, None)
        for half, (chosen, what, total) in zip(halves, (
                (lost, f"right under {baseline}, wrong under {row}", lost_total),
                (gained, f"wrong under {baseline}, right under {row}", gained_total))):
            axes = half.subplots(4, 4)
            for ax, picked in zip(axes.flat, [*chosen, *[None] * 16]):
                ax.set_axis_off()
                if picked is None or picked[0] not in images:
                    continue
                index, count, predicted = picked
                label = images[index][1]
                ax.imshow(images[index][0], interpolation="nearest")
                shown_as = (f"{classes[label]}→{classes[predicted]}"
                            if predicted not in (label, -1) else classes[label])
                ax.set_title(f"{shown_as}\n{count}/{seeds} seeds", fontsize=6, pad=1.5)
            of = f" of {total}" if total is not None else ""
            half.suptitle(textwrap.fill(f"{what} ({len(chosen)}{of} shown)", 48), fontsize=7)
        fig.suptitle(textwrap.fill(f"{title}: the test images flipped most consistently over "
                                   f"{plural(seeds, 'shared seed')} (label→the wrong "
                                   f"prediction: the row's on the left, the baseline's on the "
                                   f"right)",
                                   110))
        _save(fig, out, stem, pdf)


def per_class_churn(churn: dict[str, list[float]], classes: list[str], out: Path, title: str,
                    pdf: bool = True) -> None:
    """Each row's churn by true class: over every pair of its seeds, the fraction of the class's
    test images whose predicted class differs, averaged over the pairs."""
    width = 0.8 / max(1, len(churn))
    with plt.rc_context(PAPER_STYLE):
        fig, ax = plt.subplots(figsize=(PAGE_IN, 2.6), layout="constrained")
        for i, (label, values) in enumerate(churn.items()):
            ax.bar([k + i * width for k in range(len(classes))], values, width, label=label)
        ax.set_xticks([k + 0.4 - width / 2 for k in range(len(classes))], classes,
                      rotation=30 if len(classes) <= 12 else 90)
        ax.set(ylabel="churn between seeds")
        ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
        ax.grid(axis="y", alpha=0.3)
        fig.legend(loc="outside lower center", ncol=min(len(churn), 4), frameon=False)
        fig.suptitle(textwrap.fill(f"{title}: per-class churn (test images predicted "
                                   "differently by two seeds, mean over pairs)", 110))
        _save(fig, out, "per_class_churn", pdf)
