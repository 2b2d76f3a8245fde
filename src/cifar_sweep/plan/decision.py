"""What a job will do, decided once from its config and the store: already finished as run X /
being trained elsewhere / continue run X from epoch k / train. One pure function, `choose`, makes
the decision from the facts about a config's runs (`Facts`); `decide` gathers them for one job
with a few store queries, and `bulk_plan.Plan.decide` for a whole sweep in bulk: `run_job` acts on the
decision and `src/plan.py` prints it, so the plan and the run cannot disagree.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from cifar_sweep.plan import code_version
from cifar_sweep.plan.identity import Identity
from cifar_sweep.tracking import lifecycle
from cifar_sweep.tracking import tags as t
from cifar_sweep.train import checkpoint

if TYPE_CHECKING:
    from mlflow.entities import Run

    from cifar_sweep.tracking.bulk_runs import Run as BulkRun

log = logging.getLogger("cifar_sweep")

FINISHED, ELSEWHERE, CONTINUE, TRAIN = "finished", "elsewhere", "continue", "train"


@dataclass
class Decision:
    action: str                 # FINISHED, ELSEWHERE, CONTINUE or TRAIN
    run: Run | BulkRun | None = None  # the finished run, the one training elsewhere, the one to
    # continue: the client's, or one read in bulk (bulk_runs.py, the same fields)
    state: dict | None = field(default=None, repr=False)  # CONTINUE: its checkpoint
    note: str = ""              # why, where it is not plain (another code's run, ...)

    @property
    def epoch(self) -> int:
        return self.state["progress"]["epoch"] if self.state else 0

    def line(self, epochs: int) -> str:
        run = self.run.info.run_id if self.run is not None else ""
        if self.action == FINISHED:
            text = f"already finished: run {run}"
        elif self.action == ELSEWHERE:
            tags = self.run.data.tags if self.run is not None else {}
            text = (f"being trained by {tags.get(t.OWNER_HOST, '?')} pid "
                    f"{tags.get(t.OWNER_PID, '?')} as run {run}")
        elif self.action == CONTINUE:
            text = (f"evaluate and log run {run} from its checkpoint ({self.epoch} epochs trained)"
                    if self.epoch >= epochs else f"continue run {run} from epoch {self.epoch + 1}")
        else:
            text = "train"
        return f"{text} ({self.note})" if self.note else text


def checkpoint_path(cfg: DictConfig, identity: Identity, run_id: str) -> Path:
    return checkpoint.path_for(cfg.checkpoint.dir, identity.config_hash, run_id)


@dataclass(frozen=True)
class Facts:
    """What the store says about one config's runs: all `choose` needs."""

    finished_same_code: Run | BulkRun | None  # the newest FINISHED run made by this code version
    finished_any_code: Run | BulkRun | None   # the newest made by any code (read only where
    # there is none by this code)
    live: Sequence[Run | BulkRun] = ()        # RUNNING runs of this code whose owner is alive (not
    # the job's own), the first claim first (lifecycle.live_first)
    continuable: Run | BulkRun | None = None  # the newest interrupted run of this code, in this
    # experiment, whose checkpoint exists (lifecycle.continuable)


def choose(rerun: bool, reuse_other_code: bool, identity: Identity, facts: Facts) -> Decision:
    """The one rule, in order: reuse a finished run (unless trainer.rerun; another code's only
    where trainer.reuse_other_code says so), stand aside for a live run, continue an interrupted
    one, or train. A continued run's checkpoint is read afterwards (`with_checkpoint`)."""
    note = ""
    if not rerun:
        finished, note = choose_finished(reuse_other_code, identity, facts.finished_same_code,
                                         facts.finished_any_code)
        if finished is not None:
            return Decision(FINISHED, finished, note=note)
    if facts.live:
        return Decision(ELSEWHERE, facts.live[0])
    if facts.continuable is not None:
        return Decision(CONTINUE, facts.continuable, note=note)
    return Decision(TRAIN, note=note)


def with_checkpoint(decision: Decision, path: Path) -> Decision:
    """A CONTINUE decision with its checkpoint read from `path`; one whose checkpoint cannot be
    read starts over (checkpoint.load says why)."""
    if decision.action != CONTINUE:
        return decision
    state = checkpoint.load(path)
    if state is None:
        return Decision(TRAIN, note=decision.note)
    return Decision(CONTINUE, decision.run, state, decision.note)


def decide(cfg: DictConfig, identity: Identity, client: MlflowClient, experiment_id: str,
           me: str | None = None) -> Decision:
    """One job's decision: its facts from the store, then `choose`. `me`: the job's own run, if
    it has one (a claim being checked), which is never 'elsewhere'."""
    same, other = (None, None) if cfg.trainer.rerun else _finished(identity, client)
    live = [r for r in lifecycle.live_runs(client, experiment_id, identity.config_hash,
                                           identity.code_version) if r.info.run_id != me]
    continuable = lifecycle.find_resumable(
        client, experiment_id, identity.config_hash, identity.code_version,
        lambda run_id: checkpoint_path(cfg, identity, run_id).is_file())
    decision = choose(bool(cfg.trainer.rerun), bool(cfg.trainer.reuse_other_code), identity,
                      Facts(same, other, live, continuable))
    return (with_checkpoint(decision, checkpoint_path(cfg, identity, decision.run.info.run_id))
            if decision.action == CONTINUE and decision.run is not None else decision)


def finished_before(cfg: DictConfig, identity: Identity, client: MlflowClient):
    """(the finished run of this config to reuse or None, a note): one made by this code; one
    made by other code only where `trainer.reuse_other_code` says so."""
    return choose_finished(cfg.trainer.reuse_other_code, identity, *_finished(identity, client))


def _finished(identity: Identity, client: MlflowClient):
    """(the newest finished run of this config made by this code, else None; where there is
    none, the newest made by any code, else None), anywhere in the store."""
    same = lifecycle.find_finished(client, identity.config_hash, identity.code_version)
    return same, None if same is not None else lifecycle.find_finished(client, identity.config_hash)


def choose_finished(reuse_other_code: bool, identity: Identity, same_code, other_code):
    """finished_before's answer from the newest finished run of this config made by this code
    and the newest made by any code (None where there is none); `bulk_plan.py` asks in bulk."""
    if same_code is not None:
        return same_code, ""
    other = other_code
    if other is None:
        return None, ""
    old = {k.removeprefix(t.CODE_PART): v for k, v in other.data.tags.items()
           if k.startswith(t.CODE_PART)}
    parts = ((", ".join(code_version.changed(old, identity.code))
              or "a part no longer hashed: " + ", ".join(sorted(set(old) - set(identity.code))))
             if old else "code versions not recorded then")
    if reuse_other_code:
        return other, f"made by other code ({parts}): trainer.reuse_other_code=true"
    return None, (f"this config finished before as run {other.info.run_id}, but other code made "
                  f"it (changed: {parts}): training again; trainer.reuse_other_code=true reuses it")
