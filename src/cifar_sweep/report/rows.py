"""A table's rows: its columns, and each row of the selection with its statistics over seeds,
its difference to the baseline (`statistics.judge`) and the report's own numbers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from cifar_sweep.evidence import Evidence
from cifar_sweep.report import epochs_run
from cifar_sweep.report.epochs_run import Length
from cifar_sweep.report.selection import Selection
from cifar_sweep.statistics import Delta, judge, mean_std


@dataclass(frozen=True)
class Column:
    title: str
    metric: str
    scale: float
    digits: int
    higher_is_better: bool
    varies_by_seed: bool = True  # else one value, no ± (a model's size does not vary by seed)


COLUMNS = [
    Column("Accuracy (%)", "test_accuracy", 100, 2, True),
    Column("Precision", "test_precision_weighted", 1, 4, True),
    Column("Recall", "test_recall_weighted", 1, 4, True),
    Column("F1", "test_f1_weighted", 1, 4, True),
    Column("Parameters", "parameters", 1, 0, False, varies_by_seed=False),
    Column("Memory (MB)", "model_size_fp32_mb", 1, 3, False, varies_by_seed=False),
    Column("Peak memory (MB)", "peak_memory_mb", 1, 0, False),
    Column("Train time (min)", "train_seconds", 1 / 60, 2, False),
]


ACCURACY = COLUMNS[0]


# a row at chance: its mean test accuracy below CHANCE_FACTOR / classes (a model that learned
# nothing, e.g. an optimizer that diverged at another optimizer's rate): flagged, not hidden
CHANCE_FACTOR = 1.2


CHANCE_MARK = "†"


STATS_ONLY = ["best_val_accuracy"]  # summarised per row but not a column: what chooses a model


# runs logged before `peak_memory_mb` existed named it after what it measured
OLDER_NAMES = {"peak_memory_mb": ("peak_rss_mb", "peak_gpu_memory_mb")}


@dataclass
class Record:
    """One line of a table: a row of the selection, its statistics, the report's numbers."""

    label: str
    setting: str
    run_ids: list[str]
    seeds: list[str]
    epochs: list[str]
    baseline: bool
    stats: dict[str, tuple[float, float]]  # metric -> (mean, sample std)
    delta: Delta | None                    # accuracy vs the baseline; None on the baseline row
    paper: dict[str, float]
    length: Length | None = None           # the epochs its runs trained (early stopping)
    evidence: Evidence | None = None       # per-example numbers (report/per_example.py), if any


class _BySeed:
    """seed -> a metric, for the runs that logged it (under its name, else an older one): each
    metric's column made numeric once for the whole frame, then each row's runs picked by
    position. Row by row through pandas this was most of a big table's time (about 20 ms a row
    for its 11 metrics, docs/speed.md)."""

    def __init__(self, runs: pd.DataFrame, names: list[str]):
        self.position = {run_id: i for i, run_id in enumerate(runs.index)}
        self.seeds = runs.seed.astype(str).to_numpy()
        self.values = {}
        for name in names:
            values = None
            for key in (name, *OLDER_NAMES.get(name, ())):
                if key in runs:
                    column = pd.to_numeric(runs[key], errors="coerce").astype(float)
                    values = column if values is None else values.fillna(column)
            self.values[name] = None if values is None else values.to_numpy()

    def __call__(self, run_ids: list[str], name: str) -> dict[str, float]:
        values = self.values[name]
        if values is None:
            return {}
        at = [self.position[run_id] for run_id in run_ids]
        picked = values[at]
        kept = ~np.isnan(picked)
        return dict(zip(self.seeds[at][kept].tolist(), picked[kept].tolist()))


def records(frame: pd.DataFrame, selection: Selection, paper: dict | None = None) -> list[Record]:
    titles = {c.metric: c.title for c in COLUMNS}
    paper_columns = {titles[m]: v for m, v in (paper or {}).get("columns", {}).items()}
    runs = frame.set_index("run_id", drop=False)
    metrics = [c.metric for c in COLUMNS] + STATS_ONLY
    by_seed = _BySeed(runs, metrics)
    epochs = (runs["trainer.epochs"].astype(str).tolist() if "trainer.epochs" in runs
              else None)
    base = selection.baseline
    base_acc = by_seed(base.run_ids, ACCURACY.metric) if base else {}
    compared = [row for row in selection.rows if base is not None and row is not base]
    deltas = dict(zip([row.key for row in compared], judge(
        [by_seed(row.run_ids, ACCURACY.metric) for row in compared], base_acc,
        ACCURACY.scale)))
    out = []
    for row in selection.rows:
        delta = deltas.get(row.key)
        out.append(Record(
            label=row.label, setting=" ".join(f"{k}={v}" for k, v in row.overrides.items()),
            run_ids=row.run_ids, seeds=row.seeds, baseline=row.baseline,
            epochs=(sorted({epochs[by_seed.position[run_id]] for run_id in row.run_ids})
                    if epochs is not None else ["?"]),
            stats={m: mean_std(list(by_seed(row.run_ids, m).values())) for m in metrics},
            delta=delta,
            paper={title: values[row.label] for title, values in paper_columns.items()
                   if row.label in values},
            length=epochs_run.of_runs(runs.loc[row.run_ids])))
    return out


def data_of(run: pd.Series) -> dict[str, str]:
    """What a run trained on: the data's title (runs before `data.title` existed: its source and
    folder) and its content fingerprint."""
    title = run.get("data.title")
    if not isinstance(title, str) or not title:
        title = " ".join(str(x) for x in (run.get("data.name"), run.get("data.root"))
                         if isinstance(x, str) and x != "None") or "?"
    fingerprint = run.get("data_fingerprint")
    return {"data": title + subset_words(run.get),
            "data_fingerprint": fingerprint if isinstance(fingerprint, str) else "?"}


def subset_words(param) -> str:
    """`, subset: 1000 training images (stratified by class, split seed 0)` for a run trained
    on part of the data (`data.subset`, `data.test_subset`: data/subsets.py), else ''.
    `param`: a run's param by name."""
    parts = []
    for key, what in (("data.subset", "training"), ("data.test_subset", "test")):
        value = param(key)
        try:
            number = float(value)
        except (TypeError, ValueError):  # absent, None: the whole split
            continue
        if number == number:  # not NaN (a frame's empty cell)
            parts.append(f"{number:g} {what} images" if number >= 1
                         else f"{number * 100:g}% of the {what} images")
    if not parts:
        return ""
    return (f", subset: {', '.join(parts)} (stratified by class, split seed "
            f"{param('data.split_seed')})")

