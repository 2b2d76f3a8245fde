"""Who owns a RUNNING run, whether its owner is still alive, and what becomes of runs whose owner
died: closed as KILLED, then continued from their checkpoint by the next job of the same config.

A run records its owner (host, pid, the process's start time, so that a reused pid is not taken
for the owner) and a heartbeat, refreshed after every epoch. A RUNNING run is a ghost when its
owner on this host is gone, or when its heartbeat is older than its timeout (runs on other hosts).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path

from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from cifar_sweep.tracking import tags as t
from cifar_sweep.tracking.paging import all_experiments, all_runs
from cifar_sweep.tracking.queries import config_runs

log = logging.getLogger(__name__)

# Before a run's first epoch ends its heartbeat is only its start; after, the timeout is a few
# epochs' time. The floor covers slow first epochs (compile, a large model on a CPU).
HEARTBEAT_FLOOR_S = 600
HEARTBEAT_EPOCHS = 4


def process_start(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux), or '' where unknown."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _slurm_job() -> str:
    """This SLURM job's id (array job and task), or '' outside SLURM."""
    env = os.environ
    if env.get("SLURM_ARRAY_JOB_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env.get('SLURM_ARRAY_TASK_ID', '')}"
    return env.get("SLURM_JOB_ID", "")


def owner_tags() -> dict[str, str]:
    pid = os.getpid()
    tags = {t.OWNER_HOST: socket.gethostname(), t.OWNER_PID: str(pid),
            t.OWNER_START: process_start(pid), **heartbeat_tags(HEARTBEAT_FLOOR_S)}
    if _slurm_job():  # SLURM may requeue a job on another host, its heartbeat still fresh
        tags[t.OWNER_SLURM_JOB] = _slurm_job()
        tags[t.OWNER_SLURM_RESTART] = os.environ.get("SLURM_RESTART_COUNT", "0")
    return tags


def heartbeat_tags(timeout_s: float) -> dict[str, str]:
    return {t.HEARTBEAT: f"{time.time():.0f}", t.HEARTBEAT_TIMEOUT: f"{timeout_s:.0f}"}


def epoch_heartbeat(epoch_wall_seconds: float) -> dict[str, str]:
    return heartbeat_tags(max(HEARTBEAT_FLOOR_S, HEARTBEAT_EPOCHS * epoch_wall_seconds))


def why_dead(run, now: float | None = None) -> str | None:
    """Why this RUNNING run can have no live owner, or None when it may still be running."""
    tags = run.data.tags
    if tags.get(t.OWNER_SLURM_JOB) and tags[t.OWNER_SLURM_JOB] == _slurm_job() and (
            tags.get(t.OWNER_SLURM_RESTART) != os.environ.get("SLURM_RESTART_COUNT", "0")):
        return f"its SLURM job {tags[t.OWNER_SLURM_JOB]} was requeued"
    host, pid = tags.get(t.OWNER_HOST), tags.get(t.OWNER_PID)
    if host == socket.gethostname() and pid:
        start = process_start(int(pid))
        if not start:
            return f"its process {pid} on {host} is gone"
        if tags.get(t.OWNER_START) and start != tags[t.OWNER_START]:
            return f"its process {pid} on {host} is gone (the pid now belongs to another process)"
        return None
    if tags.get(t.ROLE) != t.ROLE_JOB or t.HEARTBEAT not in tags:
        return None  # a sweep's parent on another host: no heartbeat to judge it by
    age = (now or time.time()) - float(tags[t.HEARTBEAT])
    if age > float(tags.get(t.HEARTBEAT_TIMEOUT, HEARTBEAT_FLOOR_S)):
        return f"no heartbeat from {host} for {age:.0f} s"
    return None


def close_ghosts(client: MlflowClient, experiment_ids: list[str]) -> list[str]:
    """Mark RUNNING runs whose owner is dead KILLED (their checkpoints stay, to be continued)."""
    if not experiment_ids:
        return []
    closed = []
    for run in all_runs(client, experiment_ids, "attributes.status = 'RUNNING'"):
        reason = why_dead(run)
        if reason is None:
            continue
        client.set_tag(run.info.run_id, t.FAILURE, f"{t.INTERRUPTED}: {reason}")
        client.set_terminated(run.info.run_id, "KILLED")
        log.warning("run %s (%s) was RUNNING but %s: marked KILLED", run.info.run_id,
                    run.info.run_name, reason)
        closed.append(run.info.run_id)
    return closed


def active_experiments(client: MlflowClient) -> list[str]:
    return [e.experiment_id for e in all_experiments(client, ViewType.ACTIVE_ONLY)]


def find_finished(client: MlflowClient, config_hash: str, code_version: str | None = None):
    """The newest FINISHED run of this config (made by this code version, where one is given)
    anywhere in the store (all experiments: the studies share their baseline), or None."""
    runs = config_runs(client, active_experiments(client), config_hash, "= 'FINISHED'",
                       code_version, newest=1)
    return runs[0] if runs else None


def resumable(run) -> bool:
    """KILLED, or FAILED because it was interrupted (not because its loss became NaN)."""
    status = run.info.status
    reason = run.data.tags.get(t.FAILURE, "")
    return status == "KILLED" or (status == "FAILED" and reason.startswith(t.INTERRUPTED))


def continuable(run) -> bool:
    """An unfinished run a job of its config may continue from its checkpoint: resumable, or
    RUNNING with a dead owner (the next start closes it as KILLED)."""
    return resumable(run) or (run.info.status == "RUNNING" and why_dead(run) is not None)


def first_continuable(runs, has_checkpoint):
    """The first of `runs` (newest first) that is continuable and whose checkpoint exists."""
    return next((r for r in runs if continuable(r) and has_checkpoint(r.info.run_id)), None)


def live_first(runs) -> list:
    """The RUNNING runs among `runs` whose owner is alive, the first claim first (start time,
    then run id: every job sees the same order)."""
    live = [r for r in runs if r.info.status == "RUNNING" and why_dead(r) is None]
    return sorted(live, key=lambda r: (r.info.start_time, r.info.run_id))


def find_resumable(client: MlflowClient, experiment_id: str | None, config_hash: str,
                   code_version: str, has_checkpoint):
    """The newest continuable run of this config and code version in this experiment whose
    checkpoint exists (a checkpoint of other code is not continued: that run starts over)."""
    if experiment_id is None:
        return None
    runs = config_runs(client, [experiment_id], config_hash, "!= 'FINISHED'", code_version)
    return first_continuable(runs, has_checkpoint)


def live_runs(client: MlflowClient, experiment_id: str | None, config_hash: str,
              code_version: str) -> list:
    """RUNNING runs of this config and code whose owner is alive, the first claim first."""
    if experiment_id is None:
        return []
    return live_first(config_runs(client, [experiment_id], config_hash, "= 'RUNNING'",
                                  code_version))
