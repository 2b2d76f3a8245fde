"""A study's table, from the store alone: its rows chosen by `selection.py`, compared by
`statistics.py`, written as Markdown, CSV and LaTeX with a caption saying what they are made of,
and its figures (`study_figures.py`). A preset study (`conf/ablation/`) and any sweep go through
here alike: a preset is a sweep with a name, a baseline and the report's own numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from cifar_sweep.errors import UserInputError
from cifar_sweep.report import writers
from cifar_sweep.report.selection import Selection, choose, describe_left_out
from cifar_sweep.report.writers import plural
from cifar_sweep.results import experiment_runs
from cifar_sweep.statistics import ALPHA, MAX_SEEDS, Delta, judge, mean_std

if TYPE_CHECKING:
    from cifar_sweep.report import study_figures


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
class Study:
    """What to tabulate: an experiment's runs, named; a preset adds the report's numbers."""

    name: str
    experiment: str
    baseline: str | None = None     # an override naming the baseline row, e.g. lr.value=0.005
    paper: dict | None = None       # the report's own numbers: {source, columns: {metric: {row: v}}}
    sweep: str | None = None        # the reference sweep's id, or None/latest: the newest
    where: dict[str, str] = field(default_factory=dict)  # fixed keys the reference must have
    axes: list[str] = field(default_factory=list)  # a preset's swept keys: the rows' names
    kind: str = "Ablation"          # "Ablation" (a preset) or "Sweep"
    hint: str = ""                  # what to run when there is nothing to show

    @property
    def what(self) -> str:
        """How messages name it: `study lr`, `sweep cifar-sweep`."""
        return f"{'study' if self.kind == 'Ablation' else 'sweep'} {self.name}"


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
                   if row.label in values}))
    return out


def _signed(value: float, digits: int) -> str:
    return f"{value:+,.{digits}f}"


def _p(p: float | None) -> str:
    return "–" if p is None else "<0.001" if p < 0.001 else f"{p:.3f}"


def seeds_text(seeds: list[str]) -> str:
    """`3: 0-2`, `5: 0-4`, `4: 0, 1, 2, 7`: how many seeds, and which."""
    try:
        numbers = sorted(int(s) for s in seeds)
    except ValueError:
        return f"{len(seeds)}: {', '.join(seeds)}"
    if len(numbers) > 2 and numbers == list(range(numbers[0], numbers[-1] + 1)):
        return f"{len(numbers)}: {numbers[0]}-{numbers[-1]}"
    return f"{len(numbers)}: {', '.join(map(str, numbers))}"


def cells(recs: list[Record], axis_title: str, paper: dict | None = None,
          at_chance: frozenset[str] = frozenset()):
    """(header, rows of cells, bold flags): ours, the difference to the baseline with its
    interval and test, and the report's own numbers beside them; the rows labelled in
    `at_chance` marked †."""
    titles = {c.metric: c.title for c in COLUMNS}
    paper_titles = [titles[m] for m in (paper or {}).get("columns", {})]
    source = (paper or {}).get("source", "report")
    header = ([axis_title] + [c.title for c in COLUMNS]
              + ["Δ accuracy [95% CI]", "p (test)", "p (Holm)", "Seeds for 80% power"]
              + [f"{source}: {t}" for t in paper_titles] + ["Epochs", "Seeds"])
    base = next((r for r in recs if r.baseline), None)
    best_mean = {}
    for c in COLUMNS:
        means = [r.stats[c.metric][0] for r in recs]
        if len(recs) > 1 and len(set(means)) > 1:
            best_mean[c.metric] = max(means) if c.higher_is_better else min(means)
    table, bold = [], []
    for rec in recs:
        line = [rec.label + (f" {CHANCE_MARK}" if rec.label in at_chance else "")
                + (" (baseline)" if rec.baseline else "")]
        flags = [False]
        for c in COLUMNS:
            mean, std = rec.stats[c.metric]
            text = f"{mean * c.scale:,.{c.digits}f}"
            if len(rec.run_ids) > 1 and c.varies_by_seed:
                text += f" ± {std * c.scale:,.{c.digits}f}"
            diff = None if base is None else (mean - base.stats[c.metric][0]) * c.scale
            # no "(+0)" where a setting does not change the column (parameters, memory)
            if diff is not None and rec is not base and c is not ACCURACY and \
                    round(diff, c.digits) != 0:
                text += f" ({_signed(diff, c.digits)})"
            line.append(text)
            flags.append(best_mean.get(c.metric) == mean)
        d = rec.delta
        if d is None:
            line += ["", "", "", ""]
        else:
            interval = (f" [{_signed(d.low, 2)}, {_signed(d.high, 2)}]"
                        if d.low is not None and d.high is not None else "")
            mark = {True: "", False: "≈ ", None: ""}[d.seeds_tell_apart]
            needed = ("" if d.seeds_tell_apart is not False
                      else str(d.seeds_needed) if d.seeds_needed else f"> {MAX_SEEDS}")
            line += [f"{mark}{_signed(d.diff, 2)}{interval}",
                     f"{_p(d.p)} {d.test}".strip() if d.p is not None else "–",
                     _p(d.p_holm), needed]
        flags += [False] * 4
        line += [_paper_cell(rec.paper.get(t)) for t in paper_titles]
        flags += [False] * len(paper_titles)
        line += [",".join(rec.epochs), seeds_text(rec.seeds)]
        flags += [False, False]
        table.append(line)
        bold.append(flags)
    return header, table, bold


def power_level(comparisons: int) -> str:
    """The level the seeds-for-power column uses, as the caption prints it: `5%`, `1.25%`."""
    return f"{ALPHA / max(1, comparisons) * 100:.3g}%"


def _paper_cell(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.2f}" if value > 1 else f"{value:.4f}"


def csv_records(recs: list[Record], data: dict[str, str]) -> list[dict]:
    out = []
    for rec in recs:
        d = rec.delta or Delta(float("nan"))
        out.append({
            "setting": rec.setting or rec.label, "baseline": rec.baseline, "runs": len(rec.run_ids),
            "seeds": " ".join(rec.seeds), "epochs": " ".join(rec.epochs), **data,
            **{f"{m}_{stat}": v for m, (mean, sd) in rec.stats.items()
               for stat, v in (("mean", mean), ("std", sd))},
            "delta_accuracy_points": d.diff, "delta_ci95_low": d.low, "delta_ci95_high": d.high,
            "delta_p": d.p, "delta_test": d.test, "delta_p_holm": d.p_holm,
            "seeds_for_80pct_power": d.seeds_needed,
            **{f"report {t}": v for t, v in rec.paper.items()},
            "run_ids": " ".join(rec.run_ids)})
    # every record gets every column, so the CSV has one header for all
    keys = list(dict.fromkeys(k for r in out for k in r))
    return [{k: r.get(k, "") for k in keys} for r in out]


def data_of(run: pd.Series) -> dict[str, str]:
    """What a run trained on: the data's title (runs before `data.title` existed: its source and
    folder) and its content fingerprint."""
    title = run.get("data.title")
    if not isinstance(title, str) or not title:
        title = " ".join(str(x) for x in (run.get("data.name"), run.get("data.root"))
                         if isinstance(x, str) and x != "None") or "?"
    fingerprint = run.get("data_fingerprint")
    return {"data": title, "data_fingerprint": fingerprint if isinstance(fingerprint, str) else "?"}


@dataclass
class Table:
    """A study's table, ready to print or write."""

    study: Study
    frame: pd.DataFrame
    selection: Selection
    records: list[Record]
    data: dict[str, str]

    @property
    def axis_title(self) -> str:
        axes = self.selection.axes
        return axes[0] if len(axes) == 1 else "Setting"

    @property
    def budget(self) -> str:
        epochs = sorted({e for r in self.records for e in r.epochs})
        seeds = sorted({s for r in self.records for s in r.seeds}, key=_num)
        counts = sorted({len(r.seeds) for r in self.records})
        per_row = (f"{plural(counts[0], 'seed')} ({', '.join(seeds)})" if len(counts) == 1
                   else f"{counts[0]}-{counts[-1]} seeds per row")
        epoch_word = "epoch" if epochs == ["1"] else "epochs"
        return (f"{self.data['data']} (fingerprint `{self.data['data_fingerprint']}`), "
                f"{'/'.join(epochs)} {epoch_word} per run, {per_row}")

    @cached_property  # a table is read many times (caption, cells, figures), never changed
    def classes(self) -> int:
        """How many classes the rows' runs were tested on (their per-class metrics)."""
        runs = self.frame[self.frame.run_id.isin([i for r in self.records for i in r.run_ids])]
        per_class = [k for k in _classes(self.frame) if f"test_accuracy_{k}" in runs
                     and runs[f"test_accuracy_{k}"].notna().any()]
        return len(per_class)

    @cached_property
    def at_chance(self) -> frozenset[str]:
        """The labels of the rows whose mean test accuracy is at chance (see CHANCE_FACTOR)."""
        classes = self.classes
        if not classes:
            return frozenset()
        return frozenset(r.label for r in self.records
                         if r.stats[ACCURACY.metric][0] < CHANCE_FACTOR / classes)

    def chance_line(self) -> str:
        """The caption's line for the rows at chance, or ''."""
        if not self.at_chance:
            return ""
        chance = 100 / self.classes
        return (f" {CHANCE_MARK} at chance: mean test accuracy below {CHANCE_FACTOR:g} × "
                f"1/{self.classes} = {chance * CHANCE_FACTOR:.2f}% ({self.classes} classes): "
                "the model learned nothing (e.g. an optimizer that diverged at this rate): "
                f"{', '.join(sorted(self.at_chance))}.")

    def caption(self) -> str:
        s = self.study
        text = (f"{s.kind} `{s.name}` on {self.budget}. Test-set metrics of the "
                "best-on-validation weights; precision, recall and F1 weighted, as the report's "
                "Table VII; mean ± sample std over seeds; bold: the best of each column; in "
                "brackets: the difference to the baseline. Δ accuracy: in points, with its 95% "
                "confidence interval; p (test): a paired t-test over the seeds a row shares with "
                "the baseline where it shares two or more (same seed = same initialisation and "
                "data order; Δ is then the mean of the paired differences, the baseline's other "
                "seeds count in its mean ± std only), else Welch's over all seeds; p (Holm): "
                f"adjusted for the table's {self.comparisons} comparison(s); ≈ marks a difference "
                "the seeds cannot tell apart (Holm p ≥ 0.05), and for it the seeds per row that "
                "would tell it apart with 80% power in a two-sided test at the "
                f"{power_level(self.comparisons)} level (5% over the comparisons: Holm's first "
                "step, so that it is told apart after the adjustment too), from the measured "
                "spread.")
        text += self.chance_line()
        if self.adaptive:
            text += (" Seed budget: adaptive (`SEEDS=auto`): 3 seeds per row, then more only for "
                     "rows the seeds could not yet tell from the baseline.")
        if s.paper:
            text += (f" `{s.paper.get('source', 'report')}:` columns: the report's own numbers "
                     "(one run each, 300 epochs, its own code).")
        return text

    @property
    def comparisons(self) -> int:
        """The tests Holm's adjustment counts: the rows with a p-value."""
        return sum(r.delta is not None and r.delta.p is not None for r in self.records)

    def made_by(self) -> str:
        """Which code made the runs and when: the code version (the hash of every part that
        decides a result) and git commit of the rows' runs, and the day the newest one started;
        from the store alone, so that the same runs make the same table again."""
        runs = self.frame[self.frame.run_id.isin([i for r in self.records for i in r.run_ids])]

        def named(column: str, shorten=lambda v: v) -> str:
            values = sorted({shorten(str(v))
                             for v in runs.get(column, pd.Series(dtype=object)).dropna()})
            return ", ".join(f"`{v}`" for v in values) or "unknown"

        def commit(value: str) -> str:  # its first 12 digits, and whether the tree was dirty
            return value[:12] + "-dirty" * value.endswith("-dirty")

        newest = runs.start_time.max()
        day = newest.strftime("%Y-%m-%d") if pd.notna(newest) else "unknown"
        return (f"Runs made by code version {named('code_version')} (git "
                f"{named('git_commit', commit)}), the newest started {day} (UTC).")

    @property
    def adaptive(self) -> bool:
        runs = self.frame[self.frame.run_id.isin([i for r in self.records for i in r.run_ids])]
        return "study.seeds" in runs and (runs["study.seeds"].astype(str) == "auto").any()

    def notes(self) -> list[str]:
        sel = self.selection
        fixed_shown = {k: v for k, v in sel.fixed.items() if k in SHOWN_FIXED}
        chosen = "chosen" if self.study.sweep not in (None, "latest") else "the newest"
        if self.study.where:
            chosen += ", where " + ", ".join(f"{k}={v}" for k, v in self.study.where.items())
        notes = [
            f"MLflow experiment `{self.study.experiment}`. Memory is the float32 size of the "
            "weights; peak memory is what the runs' `peak_memory` tag says (the process's peak "
            "resident memory on a CPU, torch's peak allocation on a GPU).",
            f"Runs chosen: every finished run of each setting (one per seed, the newest where a "
            f"seed ran twice) that shares the fixed settings of sweep {sel.reference_sweep} "
            f"({chosen}): {', '.join(f'{k}={v}' for k, v in fixed_shown.items())}; sweeps used: "
            f"{', '.join(sel.sweeps_used) or 'none (single runs)'}.",
        ]
        left = describe_left_out(sel)
        if left:
            notes.append("**Not mixed in** (their fixed settings differ; choose them with "
                         "`where=` or `sweep=`):\n\n" + "\n".join(f"- {line}" for line in left))
        if self.study.baseline and sel.baseline is None:
            notes.append(f"The baseline `{self.study.baseline}` is not among these runs: no "
                         "differences shown.")
        return notes

    def markdown(self) -> str:
        header, rows, bold = cells(self.records, self.axis_title, self.study.paper,
                                   self.at_chance)
        runs = ["| Setting | Runs |", "|---|---|"] + [
            f"| {r.setting or r.label} | {' '.join(r.run_ids)} |" for r in self.records]
        return (f"# {self.study.kind}: {self.study.name} ({self.budget})\n\n{self.made_by()}\n\n"
                + writers.markdown(header, rows, bold, self.caption()) + "\n"
                + "\n\n".join(self.notes()) + "\n\n## Runs behind each row\n\n" + "\n".join(runs)
                + "\n")

    def write_tables(self, out: Path) -> str:
        """table.md and table.csv into `out` (what a sweep logs on its parent run); returns the
        Markdown."""
        out.mkdir(parents=True, exist_ok=True)
        md = self.markdown()
        (out / "table.md").write_text(md)
        (out / "table.csv").write_text(writers.csv_text(csv_records(self.records, self.data)))
        return md

    def write(self, out: Path, client: MlflowClient, figures: bool = True) -> str:
        """Markdown, CSV, LaTeX and (unless not `figures`) the figures into `out`; returns the
        Markdown."""
        md = self.write_tables(out)
        header, rows, bold = cells(self.records, self.axis_title, self.study.paper,
                                   self.at_chance)
        (out / "table.tex").write_text(writers.latex(header, rows, bold, self.caption()))
        if figures:  # the 300-dpi figures are most of a report's time
            from cifar_sweep.report import study_figures  # matplotlib and torch: only to draw

            study_figures.write_all(client, self.figure_rows(), out, self.figure_title())
        return md

    def figure_rows(self) -> list[study_figures.FigureRow]:
        from cifar_sweep.report import study_figures

        return [study_figures.FigureRow(r.label, r.run_ids, r.label in self.at_chance,
                                        r.stats[ACCURACY.metric], r.baseline, number)
                for number, r in enumerate(self.records, 1)]

    def figure_title(self) -> str:
        epochs = sorted({e for r in self.records for e in r.epochs})
        seeds = max(len(r.seeds) for r in self.records)
        return (f"{self.study.name}, {self.data['data']}, "
                f"{'/'.join(epochs)} {'epoch' if epochs == ['1'] else 'epochs'}, "
                f"{plural(seeds, 'seed')}")


# the fixed settings a table's note names (the rest are in the runs' params)
SHOWN_FIXED = ("trainer.epochs", "trainer.batch_size", "data_fingerprint", "device_type",
               "trainer.precision", "torch_version")


def _classes(frame: pd.DataFrame) -> list[str]:
    return [k.removeprefix("test_accuracy_") for k in frame.attrs.get("metric_keys", [])
            if k.startswith("test_accuracy_")]


def _num(text: str):
    try:
        return float(text)
    except ValueError:
        return float("inf")


def build_table(client: MlflowClient, study: Study) -> Table:
    """Read the experiment, choose the rows, compute the statistics. Raises UserInputError
    (one line) when there is nothing to tabulate."""
    frame, sweeps = experiment_runs(client, study.experiment)
    if frame.empty and sweeps.empty:
        raise UserInputError(f"{study.what}: no experiment "
                             f"'{study.experiment}' in the store{study.hint}")
    try:
        selection = choose(frame, sweeps, sweep=study.sweep, where=study.where,
                           baseline=study.baseline, default_baseline_first=study.kind == "Sweep",
                           axes=study.axes)
    except LookupError as exc:
        raise UserInputError(f"{study.what}: experiment "
                             f"'{study.experiment}' holds {exc}{study.hint}") from None
    if not selection.rows:
        raise UserInputError(f"{study.what}: no finished run shares the "
                             f"fixed settings of sweep {selection.reference_sweep}")
    recs = records(frame, selection, study.paper)
    first = frame[frame.run_id == selection.rows[0].run_ids[0]].iloc[0]
    return Table(study, frame, selection, recs, data_of(first))


def terminal(table: Table) -> str:
    """The table a sweep prints when it ends: a line per setting, aligned for a terminal."""
    header = [table.axis_title, "accuracy %", "F1", "runs", "Δ accuracy [95% CI]", "p"]
    lines = [header]
    for rec in table.records:
        acc, acc_sd = rec.stats[ACCURACY.metric]
        f1 = rec.stats["test_f1_weighted"][0]
        d = rec.delta
        if d is None:
            delta, p = ("(baseline)" if rec.baseline else ""), ""
        else:
            interval = (f" [{_signed(d.low, 2)}, {_signed(d.high, 2)}]"
                        if d.low is not None and d.high is not None else "")
            delta = f"{'≈ ' if d.seeds_tell_apart is False else ''}{_signed(d.diff, 2)}{interval}"
            p = f"{_p(d.p)} {d.test}".strip() if d.p is not None else "–"
        spread = f" ± {acc_sd * 100:.2f}" if len(rec.run_ids) > 1 else ""
        flag = f" {CHANCE_MARK}" if rec.label in table.at_chance else ""
        lines.append([rec.label + flag, f"{acc * 100:.2f}{spread}", f"{f1:.4f}",
                      str(len(rec.run_ids)),
                      delta, p])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                      enumerate(zip(line, widths))).rstrip() for line in lines]
    left = describe_left_out(table.selection)
    chance = [f"  {table.chance_line().strip()}"] if table.at_chance else []
    return "\n".join([f"{table.study.kind} {table.study.name}: {table.budget}", *text,
                      *chance, *[f"  {line}" for line in left]])
