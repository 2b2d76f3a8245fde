"""A study's table, from the store alone: its rows chosen by `selection.py` and summarised by
`rows.py` (compared by `statistics.py`), written as Markdown, CSV and LaTeX (`cells.py`,
`writers.py`) with a caption saying what they are made of, and its figures (`study_figures.py`).
A preset study (`conf/ablation/`) and any sweep go through here alike: a preset is a sweep with a
name, a baseline and the report's own numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from mlflow.tracking import MlflowClient

from cifar_sweep.errors import UserInputError
from cifar_sweep.report import per_example, writers
from cifar_sweep.report.cells import cells, csv_records, p_text, power_level, signed
from cifar_sweep.report.rows import ACCURACY, CHANCE_FACTOR, CHANCE_MARK, Record, data_of, records
from cifar_sweep.report.selection import Selection, choose, describe_left_out
from cifar_sweep.report.writers import plural
from cifar_sweep.results import experiment_runs

if TYPE_CHECKING:
    from cifar_sweep.report import study_figures


@dataclass
class TableSpec:
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
class Table:
    """A study's table, ready to print or write."""

    study: TableSpec
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
        notes += per_example.notes(self.records)  # test noise, bootstrap, ensemble, churn
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


def build_table(client: MlflowClient, study: TableSpec) -> Table:
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
    per_example.attach(client, frame, recs)  # each run's test predictions, read once
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
            interval = (f" [{signed(d.low, 2)}, {signed(d.high, 2)}]"
                        if d.low is not None and d.high is not None else "")
            delta = f"{'≈ ' if d.seeds_tell_apart is False else ''}{signed(d.diff, 2)}{interval}"
            p = f"{p_text(d.p)} {d.test}".strip() if d.p is not None else "–"
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
