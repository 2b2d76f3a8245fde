"""What a job will do, decided once from its config and the store: already finished as run X /
being trained elsewhere / continue run X from epoch k / train. `run_job` acts on the decision and
`src/plan.py` prints it, so that the plan and the run cannot disagree.
"""

from __future__ import annotations

import logging
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


def decide(cfg: DictConfig, identity: Identity, client: MlflowClient, experiment_id: str,
           me: str | None = None) -> Decision:
    """One function from the config and the store to what the job will do. `me`: the job's own
    run, if it has one (a claim being checked), which is never 'elsewhere'."""
    note = ""
    if not cfg.trainer.rerun:
        finished, note = finished_before(cfg, identity, client)
        if finished is not None:
            return Decision(FINISHED, finished, note=note)
    running = lifecycle.live_runs(client, experiment_id, identity.config_hash,
                                  identity.code_version)
    others = [r for r in running if r.info.run_id != me]
    if others:
        return Decision(ELSEWHERE, others[0])
    previous = lifecycle.find_resumable(
        client, experiment_id, identity.config_hash, identity.code_version,
        lambda run_id: checkpoint_path(cfg, identity, run_id).is_file())
    if previous is not None:
        state = checkpoint.load(checkpoint_path(cfg, identity, previous.info.run_id))
        if state is not None:
            return Decision(CONTINUE, previous, state, note)
    return Decision(TRAIN, note=note)


def finished_before(cfg: DictConfig, identity: Identity, client: MlflowClient):
    """(the finished run of this config to reuse or None, a note): one made by this code; one
    made by other code only where `trainer.reuse_other_code` says so."""
    finished = lifecycle.find_finished(client, identity.config_hash, identity.code_version)
    other = None if finished is not None else lifecycle.find_finished(client, identity.config_hash)
    return choose_finished(cfg.trainer.reuse_other_code, identity, finished, other)


def choose_finished(reuse_other_code: bool, identity: Identity, same_code, other_code):
    """finished_before's answer from the newest finished run of this config made by this code
    and the newest made by any code (None where there is none); `ahead.py` asks in bulk."""
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
