"""A study's table, from the store alone: its rows chosen by `selection.py` and summarised by
`rows.py` (compared by `statistics.py`), written as Markdown, CSV and LaTeX (`cells.py`,
`writers.py`) with a caption saying what they are made of, and its figures (`study_figures.py`).
A preset study (`conf/ablation/`) and any sweep go through here alike: a preset is a sweep with a
name, a baseline and the report's own numbers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from mlflow.tracking import MlflowClient

from cifar_sweep.errors import UserInputError
from cifar_sweep.report import epochs_run, paper_table, per_example, unfinished, writers
from cifar_sweep.report.cells import cells, csv_records, p_text, power_level, seeds_text, signed
from cifar_sweep.report.epochs_run import Length
from cifar_sweep.report.protocol import at_report_protocol
from cifar_sweep.report.rows import ACCURACY, CHANCE_FACTOR, CHANCE_MARK, Record, data_of, records
from cifar_sweep.report.selection import Selection, choose, describe_left_out, parse_overrides
from cifar_sweep.report.writers import plural
from cifar_sweep.results import experiment_runs

if TYPE_CHECKING:
    from cifar_sweep.report import study_figures
    from cifar_sweep.report.tuning import Tuning


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
    tuning: Tuning | None = None  # a tuned study's searches (report/tuning.py)
    # the sweep's jobs not in the table: training elsewhere, failed, stopped (report/unfinished.py)
    missing: list[unfinished.Missing] = field(default_factory=list)

    @property
    def axis_title(self) -> str:
        axes = self.selection.axes
        return axes[0] if len(axes) == 1 else "Setting"

    @property
    def length(self) -> str:
        """How long the runs trained: `30 epochs per run`, `early-stopped (patience 10) within
        100 epochs` (report/epochs_run.py)."""
        return epochs_run.budget([r.length or Length(r.epochs) for r in self.records])

    @property
    def budget(self) -> str:
        seeds = sorted({s for r in self.records for s in r.seeds}, key=_num)
        counts = sorted({len(r.seeds) for r in self.records})
        per_row = (f"{plural(counts[0], 'seed')} ({', '.join(seeds)})" if len(counts) == 1
                   else f"{counts[0]}-{counts[-1]} seeds per row")
        return (f"{self.data['data']} (fingerprint `{self.data['data_fingerprint']}`), "
                f"{self.length}, {per_row}")

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
        """The table's caption, two sentences (what a paper prints under `table.tex`): the
        study, its data (and "at the report's protocol" where its runs were: report/protocol.py),
        budget and seeds; what Δ and its interval are. Everything else a
        reader needs is a note (`caption_notes`)."""
        s = self.study
        seeds = sorted({s for r in self.records for s in r.seeds}, key=_num)
        counts = sorted({len(r.seeds) for r in self.records})
        per_row = (f"{plural(counts[0], 'seed')} per setting" if len(counts) == 1
                   else f"{counts[0]}-{counts[-1]} seeds per setting")
        spread = ", mean ± std over seeds" if counts[-1] > 1 else ""
        protocol = " at the report's protocol" if at_report_protocol(self.selection.fixed) else ""
        first = (f"{s.kind} `{s.name}` on {self.data['data']}{protocol}, "
                 f"{self.length}, {per_row} ({seeds_text(seeds)}): test accuracy of the best-on-validation "
                 f"weights{spread}.")
        if self.tuning:  # a tuned study: its protocol, one sentence
            first += self.tuning.sentence()
        if self.at_chance:  # the mark in the table needs its word under it
            first = (first[:-1] + f"; {CHANCE_MARK}: at chance (below "
                     f"{100 / self.classes * CHANCE_FACTOR:.2f}%).")
        base = next((r for r in self.records if r.baseline), None)
        if base is None:
            return first
        kinds = self.interval_kinds()
        interval = ("no interval or test with one seed" if not kinds
                    else f"its 95% {INTERVALS['boot']}" if kinds == {"boot"}
                    else f"its 95% {INTERVALS['t']}" if kinds == {"t"}
                    else f"its 95% {INTERVALS['boot']} ({MIXED_MARK}: the {INTERVALS['t']})")
        second = (f"Δ: the difference to the baseline ({base.label}) in points, with {interval}"
                  + (f"; p: the seeds' t-test, Holm-adjusted over "
                     f"{plural(self.comparisons, 'comparison')}"
                     if self.comparisons else "")
                  + (f"; Report: the report's {s.paper.get('source', 'own number')}"
                     if s.paper else "") + ".")
        return f"{first} {second}"

    def caption_notes(self) -> list[str]:
        """What the caption leaves out, one note each (method, protocol, marks): the Markdown's
        notes and notes.md. A note of another feature is one more item here."""
        notes = [
            "Test-set metrics of the best-on-validation weights; precision, recall and F1 "
            "weighted, as the report's Table VII; mean ± sample std over seeds; bold: the best "
            "of each column; in brackets: the difference to the baseline.",
            f"Data: {self.budget}.",
        ]
        if self.comparisons:
            notes.append(
                "Δ accuracy: in points, with its 95% confidence interval; p (test): a paired "
                "t-test over the seeds a row shares with the baseline where it shares two or "
                "more (same seed = same initialisation and data order; Δ is then the mean of the "
                "paired differences, the baseline's other seeds count in its mean ± std only), "
                "else Welch's over all seeds; p (Holm): adjusted for the table's "
                f"{plural(self.comparisons, 'comparison')}; ≈ marks a difference the seeds "
                "cannot tell apart (Holm p ≥ 0.05), and for it the seeds per row that would "
                "tell it apart with 80% power in a two-sided test at the "
                f"{power_level(self.comparisons)} level (5% over the comparisons: Holm's first "
                "step, so that it is told apart after the adjustment too), from the measured "
                "spread.")
        if self.at_chance:
            notes.append(self.chance_line().strip())
        if self.adaptive:
            notes.append("Seed budget: adaptive (`SEEDS=auto`): 3 seeds per row, then more "
                         "only for rows the seeds could not yet tell from the baseline.")
        if self.study.paper:
            notes.append(f"`{self.study.paper.get('source', 'report')}:` columns: the report's "
                         "own numbers (one run each, 300 epochs, its own code).")
        if self.tuning:
            notes += self.tuning.notes()
        notes += per_example.notes(self.records)  # test noise, bootstrap, ensemble, churn
        notes += epochs_run.notes([r.length for r in self.records if r.length])
        if self.missing:
            notes.append(unfinished.note(self.missing))
        return notes

    def interval_kinds(self) -> set[str]:
        """Which intervals the rows' Δ have: `boot` (over the test examples) and/or `t`."""
        kinds = set()
        for rec, row in zip(self.records, csv_records(self.records, self.data)):
            if rec.delta is not None and _has_boot(row):
                kinds.add("boot")
            elif rec.delta is not None and rec.delta.low is not None:
                kinds.add("t")
        return kinds

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
        if self.tuning:
            header, rows, bold = self.tuning.cells(header, rows, bold,
                                                   [r.label for r in self.records])
        runs = ["| Setting | Runs |", "|---|---|"] + [
            f"| {r.setting or r.label} | {' '.join(r.run_ids)} |" for r in self.records]
        return (f"# {self.study.kind}: {self.study.name} ({self.budget})\n\n{self.made_by()}\n\n"
                + writers.markdown(header, rows, bold, self.caption()) + "\n"
                + self.notes_list() + "\n\n" + "\n\n".join(self.notes())
                + "\n\n## Runs behind each row\n\n" + "\n".join(runs) + "\n")

    def notes_list(self) -> str:
        """The caption's notes as a Markdown list, under a heading."""
        return "Notes:\n\n" + "\n".join(f"- {note}" for note in self.caption_notes())

    def notes_file(self, columns: tuple[str, ...] = paper_table.DEFAULT) -> str:
        """notes.md, beside table.tex: the caption, what the notes say, which runs."""
        first, second = self.latex(columns)
        more = "" if not second else (
            " The other columns: `table_more.tex` (`report.columns=` chooses table.tex's).")
        if WIDE in first:
            more += (" table.tex spans both columns of a two-column paper (`table*`): its "
                     "columns do not fit one; `report.columns=` with fewer makes it narrower.")
        return (f"# Notes to table.tex: {self.study.kind.lower()} {self.study.name}\n\n"
                f"Caption: {self.caption()}{more}\n\n{self.made_by()}\n\n"
                + self.notes_list() + "\n\n" + "\n\n".join(self.notes()) + "\n")

    def latex(self, columns: tuple[str, ...] = paper_table.DEFAULT) -> tuple[str, str]:
        """(table.tex, table_more.tex): the chosen columns (`paper_table.DEFAULT`: what a paper
        prints), and the rest ('' when none is left). Δ's interval is the bootstrap interval
        where a row has one, else the t interval (marked where the two are mixed). Raises
        UserInputError for a column name the table does not have."""
        header, rows, bold = cells(self.records, self.axis_title, self.study.paper,
                                   self.at_chance)
        if self.tuning:
            header, rows, bold = self.tuning.cells(header, rows, bold,
                                                   [r.label for r in self.records])
        source = (self.study.paper or {}).get("source", "report") if self.study.paper else None
        found = paper_table.columns_of(header, source)
        try:
            main, rest = paper_table.choose(found, columns)
        except ValueError as exc:
            raise UserInputError(str(exc)) from None
        delta = next((c.index for c in found if c.name == "delta"), None)
        mixed = len(self.interval_kinds()) > 1
        intervals = {}  # row -> (low, high, is it the t interval): what table.tex prints
        for rec, record in zip(self.records, csv_records(self.records, self.data)):
            d = rec.delta
            if d is not None and _has_boot(record):
                intervals[rec.label] = (record["delta_boot_low"], record["delta_boot_high"], False)
            elif d is not None and d.low is not None and d.high is not None:
                intervals[rec.label] = (d.low, d.high, True)
        # to 0.1 points where every interval is a point wide or more: the second digit is
        # noise there, and it would cost the column its fit
        digits = 1 if intervals and all(h - lo >= 1 for lo, h, _ in intervals.values()) else 2
        for rec, row in zip(self.records, rows):
            row[0] = row[0].removesuffix(" (baseline)")
            if delta is None:
                continue
            if rec.baseline:
                row[delta] = "baseline"
            elif rec.delta is not None:  # ≈ is the Markdown's: here the p column says it
                row[delta] = signed(rec.delta.diff, digits)
                if rec.label in intervals:
                    low, high, t = intervals[rec.label]
                    row[delta] += (f" [{signed(low, digits)}, {signed(high, digits)}]"
                                   + (MIXED_MARK if mixed and t else ""))
        label = f"tab:{re.sub(r'[^A-Za-z0-9]+', '-', self.study.name)}"
        first = paper_table.tex(main, rows, bold, self.caption(), label)
        if len(rest) == 1:
            return first, ""
        return first, paper_table.tex(
            rest, rows, bold, f"{self.study.kind} `{self.study.name}`: the other columns of "
            f"{paper_table.REF}.", f"{label}-more", ref=label)

    def write_tables(self, out: Path) -> str:
        """table.md and table.csv into `out` (what a sweep logs on its parent run); returns the
        Markdown."""
        out.mkdir(parents=True, exist_ok=True)
        md = self.markdown()
        (out / "table.md").write_text(md)
        csv = csv_records(self.records, self.data)
        if self.tuning:
            csv = self.tuning.csv(csv, [r.label for r in self.records])
        (out / "table.csv").write_text(writers.csv_text(csv))
        return md

    def write(self, out: Path, client: MlflowClient | None, figures: bool = True,
              columns: tuple[str, ...] = paper_table.DEFAULT) -> str:
        """Markdown, CSV, LaTeX (table.tex, table_more.tex and their notes.md) and (unless not
        `figures`) the figures into `out`; returns the Markdown."""
        first, more = self.latex(columns)  # a bad column name: before any file is written
        md = self.write_tables(out)
        (out / "table.tex").write_text(first)
        (out / "notes.md").write_text(self.notes_file(columns))
        if more:
            (out / "table_more.tex").write_text(more)
        else:
            (out / "table_more.tex").unlink(missing_ok=True)
        if figures and client is not None:  # the 300-dpi figures are most of a report's time
            from cifar_sweep.report import study_figures  # matplotlib and torch: only to draw

            study_figures.write_all(client, self.figure_rows(), out, self.figure_title(),
                                    setting=self.setting())
            # the images behind each difference, per-class churn (from the runs' predictions)
            per_example.write_figures(client, self.frame, self.records,
                                      self.data["data_fingerprint"], out, self.figure_title())
            if self.tuning:
                self.tuning.figure(out, self.figure_title())
        return md

    def figure_rows(self) -> list[study_figures.FigureRow]:
        from cifar_sweep.report import study_figures

        source = (self.study.paper or {}).get("source", "report")
        return [study_figures.FigureRow(
                    r.label, r.run_ids, r.label in self.at_chance, r.stats[ACCURACY.metric],
                    r.baseline, number,
                    (source, r.paper[ACCURACY.title] / ACCURACY.scale)
                    if ACCURACY.title in r.paper else None,
                    overrides=tuple(parse_overrides(r.setting).items()))
                for number, r in enumerate(self.records, 1)]

    def setting(self) -> str:
        """The one setting the rows vary (`lr.value`), as figures name it; '' where the rows
        differ in several (their labels name them)."""
        axes = self.selection.axes
        if len(axes) != 1:
            return ""
        return axes[0] if all(r.setting in ("", f"{axes[0]}={r.label}")
                              for r in self.records) else ""

    def figure_title(self) -> str:
        seeds = max(len(r.seeds) for r in self.records)
        return (f"{self.study.name}, {self.data['data']}, {self.length.removesuffix(' per run')}, "
                f"{plural(seeds, 'seed')}")


# Δ's intervals, as the caption names them; MIXED_MARK: a t interval among bootstrap ones
INTERVALS = {"boot": "bootstrap interval over seeds and test images",
             "t": "t interval over seeds (paired where the seeds are shared, else Welch's)"}
MIXED_MARK = "*"
WIDE = "\\begin{table*}"  # a table.tex too wide for a paper's column


def _has_boot(record: dict) -> bool:
    """Whether a CSV record holds a bootstrap interval of Δ (`delta_boot_low`/`_high`)."""
    low, high = record.get("delta_boot_low"), record.get("delta_boot_high")
    return all(isinstance(v, (int, float)) and v == v for v in (low, high))


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
    from cifar_sweep.report import tuning

    tuning.keep_current(frame, selection)  # a tuned study: its arms' current bests only
    recs = records(frame, selection, study.paper)
    per_example.attach(client, frame, recs)  # each run's test predictions, read once
    first = frame[frame.run_id == selection.rows[0].run_ids[0]].iloc[0]
    table = Table(study, frame, selection, recs, data_of(first), tuning.summarise(
        client, frame, study.experiment, [(r.label, r.run_ids) for r in recs]))
    table.missing = unfinished.of_sweep(client, selection.reference_sweep,
                                        {i for r in recs for i in r.run_ids})
    return table


def terminal(table: Table) -> str:
    """The table a sweep prints when it ends: a line per setting, aligned for a terminal."""
    header = [table.axis_title, "accuracy %", "F1", "runs", "Δ accuracy [95% CI]", "p"]
    # the per-example evidence where the runs kept predictions: the test set's own noise on a
    # row's accuracy, and Δ's interval over seeds and test images (docs/evidence.md)
    evidence = any(rec.evidence is not None for rec in table.records)
    if evidence:
        header = [*header[:2], "test noise", *header[2:], "Δ bootstrap [95%]"]
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
        line = [rec.label + flag, f"{acc * 100:.2f}{spread}", f"{f1:.4f}",
                str(len(rec.run_ids)), delta, p]
        if evidence:
            e = rec.evidence
            noise = f"±{e.test_noise_95:.2f}" if e is not None else ""
            boot = ("" if e is None or e.delta_boot_low is None or e.delta_boot_high is None
                    else f"[{signed(e.delta_boot_low, 2)}, {signed(e.delta_boot_high, 2)}]")
            line = [*line[:2], noise, *line[2:], boot]
        lines.append(line)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                      enumerate(zip(line, widths))).rstrip() for line in lines]
    left = describe_left_out(table.selection)
    chance = [f"  {table.chance_line().strip()}"] if table.at_chance else []
    tuned = table.tuning.terminal_lines() if table.tuning else []
    return "\n".join([f"{table.study.kind} {table.study.name}: {table.budget}", *text,
                      *tuned, *chance, *[f"  {line}" for line in left]])
