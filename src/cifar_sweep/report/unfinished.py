"""The jobs of a table's sweep that are not in it: still training elsewhere (a reference to a run
another command trains), training, failed or stopped. A table of 2 of a sweep's 4 rows reads as
the whole study unless it says which rows are missing and where they stand; `report.py` later
gives the full table, once the runs it names have finished.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from cifar_sweep.plan.identity import SEED_KEY
from cifar_sweep.tracking import tags as t
from cifar_sweep.tracking.queries import sweep_children

# what a missing job's state is called, by the status of the run that holds it
STATES = {"RUNNING": "training", "FAILED": "failed", "KILLED": "stopped", "SCHEDULED": "training"}
ELSEWHERE = "still training elsewhere"


@dataclass(frozen=True)
class Missing:
    """One job of the sweep whose result the table lacks."""

    setting: str   # its overrides among the sweep's axes (and its seed where seeds vary)
    state: str     # ELSEWHERE, or one of STATES' values
    run_id: str    # the run that holds it: the other command's run for a reference
    reason: str = ""  # a failed or stopped run's failure_reason, its first line


def of_sweep(client: MlflowClient, sweep_id: str, in_table: set[str]) -> list[Missing]:
    """The sweep's jobs whose run (or, for a reference, the run it stands for) is not among
    `in_table` (the table's run ids) and has not finished; in job order."""
    try:
        parent = client.get_run(sweep_id)
        children = sweep_children(client, sweep_id, parent.info.experiment_id)
    except MlflowException:  # not a run of this store (single runs): nothing to say
        return []
    varying = parent.data.tags.get(t.SWEEP_VARYING, "").split()
    missing = []
    for child in sorted(children, key=lambda c: int(c.data.tags.get(t.JOB_NUM) or 0)):
        tags, run_id = child.data.tags, child.info.run_id
        status, state = child.info.status, ""
        if tags.get(t.ROLE) == t.ROLE_REFERENCE:
            run_id = tags.get(t.SAME_AS, "")
            try:
                original = client.get_run(run_id)
            except MlflowException:
                continue
            status, tags = original.info.status, {**original.data.tags, t.JOB_OVERRIDES:
                                                  child.data.tags.get(t.JOB_OVERRIDES, "")}
            state = ELSEWHERE if status == "RUNNING" else ""
        if status == "FINISHED" or run_id in in_table:
            continue
        reason = tags.get(t.FAILURE, "").splitlines()[0][:160] if tags.get(t.FAILURE) else ""
        missing.append(Missing(_setting(tags.get(t.JOB_OVERRIDES, ""), varying, child),
                               state or STATES.get(status, status.lower()), run_id, reason))
    return missing


def _setting(overrides: str, varying: list[str], child) -> str:
    shown = [o for o in overrides.split() if o.partition("=")[0].lstrip("+") in varying
             or o.partition("=")[0] == SEED_KEY and SEED_KEY in varying]
    return " ".join(shown) or child.info.run_name


def _item(m: Missing) -> str:
    return f"{m.setting} ({m.state}: run {m.run_id}{'; ' + m.reason if m.reason else ''})"


def line(missing: list[Missing], sweep_id: str) -> str:
    """The terminal's line under the table, or '' when every job is in it."""
    if not missing:
        return ""
    training = any(m.state in (ELSEWHERE, "training") for m in missing)
    tail = (f"; `python src/report.py sweep={sweep_id}` gives the full table once "
            f"{'they finish' if len(missing) > 1 else 'it finishes'}" if training else "")
    return "partial table: not in it " + ", ".join(_item(m) for m in missing) + tail


def note(missing: list[Missing]) -> str:
    """The caption's note: which rows the table lacks and where they stand, or ''."""
    if not missing:
        return ""
    states = {m.state for m in missing}
    after = []
    if states & {ELSEWHERE, "training"}:
        after.append("`python src/report.py` gives the full table once the runs still training "
                     "finish")
    if "stopped" in states:
        after.append("the sweep's command continues the stopped runs from their checkpoints")
    if "failed" in states:
        after.append("failed runs are not continued")
    return ("Partial table: not in it, " + "; ".join(_item(m) for m in missing) + ". "
            + "; ".join(after).capitalize() + ("." if after else ""))
