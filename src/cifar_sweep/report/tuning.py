"""A tuned study's searches, from MLflow alone (`study.tune`, run by commands/tuned.py): each
arm's trial runs, its best trial by validation accuracy, where a best value lies at an edge of
its range, and what the table adds to a tuned study's rows (the values its seed runs were trained
with, the trials spent, the best validation accuracy found, the protocol in its caption).

A tuned study's seed runs carry, in their config's `study.tune` (outside a run's identity), their
arm, the name of its search and the exact values they were trained with; its trials carry the
search's name (the `hpo.study` tag). Nothing here reads the Optuna storage, which may be gone.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from mlflow.tracking import MlflowClient

from cifar_sweep.report.selection import Selection, parse_overrides
from cifar_sweep.tracking import tags as t
from cifar_sweep.tracking.paging import all_runs

METRIC = "best_val_accuracy"  # what a trial is chosen by: validation only
ARM_GROUP = "tuned_"          # the generated config group of a study's arms: +tuned_<axis>=<arm>
EDGE = 0.05                   # a best value in the outer 5% of its range lies at an edge
SEARCH_KEY = "study.tune.search"  # a seed run's param: its arm's search


def arm_group(axis: str) -> str:
    """The config group whose options are a tuned study's arms with their best values:
    `optimizer` -> `tuned_optimizer` (selected as `+tuned_optimizer=adam`)."""
    return ARM_GROUP + re.sub(r"[^A-Za-z0-9_]", "_", axis.lstrip("+"))


def arm_axes(axes: list[str], baseline: str | None) -> tuple[list[str], str | None]:
    """A tuned preset's axis and baseline as its seed runs name them (`optimizer=sgd` ->
    `+tuned_optimizer=sgd`)."""
    if len(axes) != 1:
        return axes, baseline
    group = "+" + arm_group(axes[0])
    key, _, value = (baseline or "").partition("=")
    return [group], (f"{group}={value}" if key == axes[0] else baseline)


def normalised(text: str) -> str:
    """A value as Python's repr writes it (`1e-05`, `0.031245`), else the text: the same number
    written two ways is one value."""
    try:
        number = float(text)
    except ValueError:
        return text
    if re.fullmatch(r"[+-]?\d+", text.strip()):
        return str(int(text))
    return repr(number)


def values_text(values: dict[str, str]) -> str:
    """`lr.value=0.031245 optimizer.weight_decay=1.2e-05`: the table's `tuned` cell."""
    return " ".join(f"{k}={normalised(v)}" for k, v in values.items())


@dataclass
class Trial:
    number: int
    run_id: str
    state: str                 # finished, pruned, failed, or interrupted (asked again)
    value: float | None        # its best validation accuracy; None unless finished
    values: dict[str, str]     # the tuned keys' values, as its overrides gave them
    last_val: float | None = None  # a pruned trial's last validation accuracy


@dataclass
class Search:
    """One arm's search: its trials' newest runs, of the newest study of that name (a study made
    again after its storage was deleted has a new id, as in search/trials_table.py)."""

    name: str
    trials: list[Trial] = field(default_factory=list)

    @property
    def best(self) -> Trial | None:
        """The finished trial of the highest validation accuracy; ties: the earliest (Optuna's
        best trial)."""
        done = [(tr.value, tr) for tr in self.trials if tr.state == "finished"
                and tr.value is not None and math.isfinite(tr.value)]
        return max(sorted(done, key=lambda pair: pair[1].number), key=lambda pair: pair[0],
                   default=(None, None))[1]

    @property
    def spent(self) -> int:
        """Trials that ran to an end (finished, pruned or failed): the search's budget used."""
        return sum(tr.state in ("finished", "pruned", "failed") for tr in self.trials)


def read_search(client: MlflowClient, experiment: str, name: str, keys: list[str]) -> Search:
    """The search `name` of a tuned study's experiment, read from its trial runs. `keys`: the
    tuned keys, read from each trial's overrides."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return Search(name)
    quoted = name.replace("'", "\\'")
    runs = all_runs(client, [exp.experiment_id], f"tags.`{t.HPO_STUDY}` = '{quoted}'",
                    order_by=["attributes.start_time DESC"])
    if runs:
        uid = runs[0].data.tags.get(t.HPO_STUDY_UID, "")
        runs = [r for r in runs if r.data.tags.get(t.HPO_STUDY_UID, "") == uid]
    newest: dict[int, Trial] = {}
    for run in runs:
        tags, number = run.data.tags, int(run.data.tags.get(t.TRIAL, -1))
        if number in newest or number < 0:
            continue
        status = run.info.status
        state = ("finished" if status == "FINISHED" else "failed" if status == "FAILED"
                 else "pruned" if tags.get(t.TRIAL_STATE) == "pruned" else "interrupted")
        overrides = parse_overrides(tags.get(t.JOB_OVERRIDES, ""))
        metrics = run.data.metrics
        newest[number] = Trial(number, run.info.run_id, state,
                               metrics.get(METRIC) if state == "finished" else None,
                               {k: overrides[k] for k in keys if k in overrides},
                               metrics.get("val_accuracy"))
    return Search(name, sorted(newest.values(), key=lambda tr: tr.number))


def edge_line(arm: str, key: str, value: float, spec: dict) -> str | None:
    """`adam: best lr.value at the range's lower edge: widen it`, where the value lies in the
    outer EDGE of its range (on the log scale where the space is log); else None."""
    low, high = float(spec["low"]), float(spec["high"])
    if spec.get("type", "float") == "categorical" or high <= low:
        return None
    log = bool(spec.get("log")) and low > 0 and value > 0
    where = ((math.log(value) - math.log(low)) / (math.log(high) - math.log(low)) if log
             else (value - low) / (high - low))
    if where < EDGE:
        return f"{arm}: best {key} at the range's lower edge: widen it"
    if where > 1 - EDGE:
        return f"{arm}: best {key} at the range's upper edge: widen it"
    return None


def space_text(space: dict[str, dict]) -> str:
    """The space as a caption says it: `lr.value in [1e-05, 1] (log), lr in {constant, cosine}`."""
    parts = []
    for key, spec in space.items():
        if spec.get("type", "float") == "categorical":
            parts.append(f"{key} in {{{', '.join(str(c) for c in spec['choices'])}}}")
        else:
            parts.append(f"{key} in [{spec['low']:g}, {spec['high']:g}]"
                         + (" (log)" if spec.get("log") else ""))
    return ", ".join(parts)


# --- the table of a tuned study -----------------------------------------------------------------

def _tuned_runs(frame: pd.DataFrame, run_ids: list[str]) -> pd.DataFrame:
    if SEARCH_KEY not in frame:
        return frame.iloc[0:0]
    runs = frame[frame.run_id.isin(run_ids)]
    return runs[runs[SEARCH_KEY].notna() & (runs[SEARCH_KEY].astype(str) != "None")]


def keep_current(frame: pd.DataFrame, selection: Selection) -> None:
    """A tuned study's rows are its arms' current bests: the rows of the reference sweep (the
    command's newest seed sweep). A row of an arm's earlier best (trained before its search went
    on and found another) is listed as not mixed in. No change to a study that is not tuned."""
    rows = selection.rows
    tuned = [r for r in rows if len(_tuned_runs(frame, r.run_ids))]
    if not tuned:
        return
    runs = frame.set_index("run_id")
    ref = selection.reference_sweep

    def in_reference(run_ids: list[str]) -> bool:
        return any(ref in str(runs.at[i, "sweeps"] or "").split() for i in run_ids)

    earlier = [r for r in rows if not in_reference(r.run_ids)]
    if not earlier or len(earlier) == len(rows):
        return
    selection.rows = [r for r in rows if r not in earlier]
    for row in earlier:
        selection.left_out.append(({"tuned (an earlier best)": row.label}, list(row.run_ids)))
    # an arm's new best was named apart from its earlier one (`adam lr.value=...`): alone now,
    # it takes its arm's name again
    named = [{a: r.overrides[a] for a in selection.axes if a in r.overrides}
             for r in selection.rows]
    labels = [" ".join(f"{k}={v}" for k, v in n.items()) if len(n) > 1 else
              next(iter(n.values()), "") for n in named]
    if all(len(n) == len(selection.axes) > 0 for n in named) and len(set(labels)) == len(labels):
        for row, overrides, label in zip(selection.rows, named, labels):
            row.overrides, row.label = overrides, label


@dataclass
class ArmTuning:
    """One row's tuning: the values its seed runs used, its search and what the search found."""

    label: str
    tuned: str                 # `key=value ...` as the seed runs were trained with
    search: Search
    keys: list[str]
    edges: list[str]

    @property
    def stale(self) -> bool:
        """The search's best since differs from what the seeds ran: run the command again."""
        best = self.search.best
        return best is not None and values_text(best.values) != self.tuned


@dataclass
class Tuning:
    """What a tuned study's table adds, by row (record label)."""

    arms: dict[str, ArmTuning]
    epochs: str
    seed: str
    pruner: str
    space: str

    @property
    def epoch_text(self) -> str:
        return f"{self.epochs} epoch{'' if self.epochs == '1' else 's'}"

    def sentence(self) -> str:
        """The caption's sentence of the protocol."""
        spent = sorted({a.search.spent for a in self.arms.values()})
        trials = (f"{spent[0]}-trial" if len(spent) == 1 else f"{spent[0]}-{spent[-1]}-trial")
        return (f" Each row tuned by its own {trials} search over {self.space} (trials of "
                f"{self.epoch_text}, chosen on validation accuracy, the test set unseen), "
                "then trained anew over the seeds and tested."
                + "".join(f" {e}." for a in self.arms.values() for e in a.edges))

    def notes(self) -> list[str]:
        """The notes: the protocol in full, why its best validation score is optimistic, and
        any arm whose seeds ran an earlier best."""
        notes = [
            f"Tuning: each arm's own Optuna search (TPE, sampler seed {self.seed}, the same "
            f"trials, sampler and seed for every arm; {self.pruner} pruner; trials of "
            f"{self.epoch_text} with trainer.seed {self.seed}) over {self.space}; its best "
            "trial by validation accuracy (no trial evaluates the test set) trained anew at the "
            "study's epochs over its seeds. Best val. accuracy: the best trial's, optimistic "
            "(the maximum of many noisy scores on the data that chose it); the seeds' test "
            "accuracy is not (new runs, on data nothing was chosen by)."]
        stale = [a.label for a in self.arms.values() if a.stale]
        if stale:
            notes.append(f"{', '.join(stale)}: its search has since found another best than its "
                         "seeds were trained with: run the command again.")
        return notes

    def row(self, label: str) -> tuple[str, str, str]:
        """(tuned values, trials spent, best validation accuracy %) of a row."""
        arm = self.arms.get(label)
        if arm is None:
            return "", "", ""
        best = arm.search.best
        return (arm.tuned, str(arm.search.spent),
                f"{best.value * 100:.2f}" if best and best.value is not None else "")

    def cells(self, header: list[str], rows: list[list[str]], bold: list[list[bool]],
              labels: list[str]):
        """The table's cells with the tuning's columns after the row's name."""
        header = [header[0], "Tuned", "Trials", "Best val. accuracy (%)", *header[1:]]
        rows = [[line[0], *self.row(label), *line[1:]] for line, label in zip(rows, labels)]
        bold = [[flags[0], False, False, False, *flags[1:]] for flags in bold]
        return header, rows, bold

    def csv(self, records: list[dict], labels: list[str]) -> list[dict]:
        out = []
        for record, label in zip(records, labels):
            arm = self.arms.get(label)
            best = arm.search.best if arm else None
            extra = {"tuned": arm.tuned if arm else "",
                     "tune_trials": arm.search.spent if arm else "",
                     "tune_best_val_accuracy": best.value if best else ""}
            first = next(iter(record))
            out.append({first: record[first], **extra,
                        **{k: v for k, v in record.items() if k != first}})
        return out

    def terminal_lines(self) -> list[str]:
        lines = []
        for label, arm in self.arms.items():
            _, spent, best = self.row(label)
            lines.append(f"  {label}: {arm.tuned} (best of {spent} trials, validation {best}%)")
        return lines + [f"  {e}" for a in self.arms.values() for e in a.edges]

    def figure(self, out: Path, title: str, pdf: bool = True) -> None:
        from cifar_sweep.report import study_figures

        study_figures.trials([(label, arm.search.trials, arm.search.best, arm.keys)
                              for label, arm in self.arms.items()], out, title, pdf)


def summarise(client: MlflowClient, frame: pd.DataFrame, experiment: str,
              labelled_runs: list[tuple[str, list[str]]]) -> Tuning | None:
    """The tuning of each row (label, its run ids) whose runs came from a tuned study's seeds;
    None when none did."""
    arms, first = {}, None
    for label, run_ids in labelled_runs:
        runs = _tuned_runs(frame, run_ids)
        if not len(runs):
            continue
        run = runs.iloc[0]
        first = run if first is None else first
        tuned = str(run.get("study.tune.tuned") or "")
        keys = [k for k in parse_overrides(tuned)]
        edges = [e for e in str(run.get("study.tune.edges") or "").split(" | ")
                 if e and e != "None"]
        arms[label] = ArmTuning(label, tuned, read_search(client, experiment,
                                                          str(run[SEARCH_KEY]), keys), keys, edges)
    if first is None:
        return None

    def param(key: str, default: str = "?") -> str:
        value = first.get(key)
        return default if value is None or (isinstance(value, float) and math.isnan(value)) \
            or str(value) == "None" else str(value)

    return Tuning(arms, param("study.tune.epochs"), param("study.tune.seed"),
                  param("study.tune.pruner.kind", "median"), param("study.tune.space_text"))
