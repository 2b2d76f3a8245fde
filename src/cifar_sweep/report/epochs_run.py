"""How long a table's runs trained: the epochs each ran (early stopping ends a run before its cap,
`trainer.epochs`), under which patience, and whether a row's runs reached the cap before their
validation accuracy stopped improving ("not converged"). The tables' Epochs column and the
budget their captions state."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from cifar_sweep.tracking import tags as t

PATIENCE = "trainer.early_stop.patience"
STOPPED_EPOCH = "stopped_epoch"   # the metric a run logs: the epochs it trained
NOT_CONVERGED = "not converged"


@dataclass(frozen=True)
class Length:
    """A row's runs: their caps, the epochs each trained, their patience (none: off)."""

    caps: list[str]                 # trainer.epochs, distinct, as logged
    ran: list[int] = field(default_factory=list)  # per run
    patience: list[str] = field(default_factory=list)  # distinct; empty: early stopping off
    reached_cap: int = 0            # runs with early stopping that trained to their cap

    @property
    def early(self) -> bool:
        return bool(self.patience)


def _number_sorted(values) -> list[str]:
    return sorted(values, key=lambda v: (float(v) if v.replace(".", "", 1).isdigit() else 1e18, v))


def _texts(runs: pd.DataFrame, column: str, missing: str) -> pd.Series:
    """A column as strings (params are logged as strings), `missing` where a run has none."""
    if column not in runs:
        return pd.Series(missing, index=runs.index, dtype=object)
    return runs[column].map(lambda v: missing if pd.isna(v) else str(v)).astype(object)


def of_runs(runs: pd.DataFrame) -> Length:
    """The length of one row's runs (a frame of `results.py`: params, metrics, tags)."""
    caps = _texts(runs, "trainer.epochs", "?")
    patience = _texts(runs, PATIENCE, "None")
    early = ~patience.isin(["None", ""])
    ran = (pd.to_numeric(runs[STOPPED_EPOCH], errors="coerce") if STOPPED_EPOCH in runs
           else pd.Series(float("nan"), index=runs.index))
    # runs before `stopped_epoch` existed, and runs without early stopping, trained to the cap
    ran = ran.fillna(pd.to_numeric(caps, errors="coerce"))
    reason = _texts(runs, t.STOP_REASON, "")
    reached = early & (reason != t.STOPPED_EARLY)
    return Length(_number_sorted(set(caps)), [int(r) for r in ran.dropna()],
                  _number_sorted(set(patience[early])), int(reached.sum()))


def cell(length: Length) -> str:
    """The Epochs cell: the cap (`30`) without early stopping; else the epochs the runs
    trained, mean (range), and `not converged (k of n)` where k runs reached the cap."""
    if not length.early or not length.ran:
        return ",".join(length.caps)
    low, high = min(length.ran), max(length.ran)
    mean = sum(length.ran) / len(length.ran)
    text = f"{mean:.1f} ({low}-{high})" if low != high else str(low)
    if length.reached_cap:
        text += f", {NOT_CONVERGED} ({length.reached_cap} of {len(length.ran)})"
    return text


def budget(lengths: list[Length]) -> str:
    """What the caption says of the runs' length: `30 epochs per run`, or `early-stopped
    (patience 10) within 100 epochs`."""
    caps = _number_sorted({c for length in lengths for c in length.caps})
    cap = "/".join(caps)
    patience = _number_sorted({p for length in lengths for p in length.patience})
    if not patience:
        return f"{cap} {'epoch' if caps == ['1'] else 'epochs'} per run"
    text = f"early-stopped (patience {'/'.join(patience)}) within {cap} epochs"
    if not all(length.early for length in lengths):
        text += " (rows without early stopping: all of them)"
    return text


def notes(lengths: list[Length]) -> list[str]:
    """The table's note on early stopping and its Epochs column, where runs were early-stopped."""
    if not any(length.early for length in lengths):
        return []
    return ["Early stopping: a run stops once its validation accuracy has not improved for "
            "`patience` epochs (by more than `trainer.early_stop.min_delta`), keeping its best "
            "epoch's weights; Epochs: the epochs each row's runs trained, mean (range); "
            f"{NOT_CONVERGED} (k of n): k runs reached the cap still improving."]
