"""One run's life in the store: created (or reopened, to continue it), its params, metrics and
tags logged, then closed FINISHED, or as job/endings.py's table says; a reference run standing for
another; a run that stands aside for another of its config."""

from __future__ import annotations

import functools
import logging
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import requests
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from cifar_sweep.tracking import run_tags
from cifar_sweep.tracking.tags import FAILURE

log = logging.getLogger(__name__)


@functools.cache  # once per process: a worker runs many jobs of one checkout
def git_commit() -> str:
    root = Path(__file__).resolve().parents[3]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def flatten(config: dict, prefix: str = "") -> dict[str, str]:
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat


class RunEnd(Protocol):
    """How a run ended, as `job.endings` tells it: what tracked_run writes as it closes the run."""

    @property
    def status(self) -> str | None: ...  # KILLED, FAILED; None: leave the run as it is

    @property
    def reason(self) -> str: ...  # its failure_reason tag

    @property
    def tags(self) -> dict[str, str]: ...  # set as it closes


@contextmanager
def tracked_run(client: MlflowClient, experiment_id: str, *, name: str, tags: dict[str, str],
                params: dict[str, str], ending: Callable[[BaseException], RunEnd],
                resume_id: str | None = None, lock=None) -> Iterator[str]:
    """Create a run (or reopen `resume_id`, whose params are already logged) and yield its id;
    on leaving, mark it FINISHED, or close it as `ending(exc)` says (job/endings.py: the one
    table of how a run ends) and let the exception go on. `lock` (store.claim_lock): acquired
    before the run is created and left held for the caller to release once it has claimed its
    config."""
    if resume_id is None:
        if lock is not None:
            lock.acquire()
        try:
            run_id = client.create_run(experiment_id, run_name=name[:250], tags=tags).info.run_id
            client.log_batch(run_id, params=[Param(k, v[:6000]) for k, v in params.items()])
        except BaseException:
            if lock is not None:
                lock.release()
            raise
    else:
        run_id = resume_id
        client.update_run(run_id, status="RUNNING", name=name[:250])
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        client.delete_tag(run_id, FAILURE)
    try:
        yield run_id
        if FAILURE in client.get_run(run_id).data.tags:  # a reason set while it ran (a sweep
            client.delete_tag(run_id, FAILURE)           # that ended first) is no longer true
        client.set_terminated(run_id, "FINISHED")
    except (Exception, KeyboardInterrupt, SystemExit) as exc:  # (not a generator's close)
        end = ending(exc)
        if end.status is not None:
            _close(client, run_id, end.status, end.reason, end.tags)
        raise


def _close(client: MlflowClient, run_id: str, status: str, reason: str,
           tags: dict[str, str]) -> None:
    """Mark an ending run; if the store cannot take it, say so in one line and let the exception
    that ends the run be the one reported. (A run left RUNNING is closed by the next start.)"""
    try:
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in {**tags, FAILURE: reason}.items()])
        client.set_terminated(run_id, status)
    except (MlflowException, requests.RequestException) as exc:
        log.warning("could not mark run %s %s: %s", run_id, status, str(exc).splitlines()[0][:300])


# --- what a job logs, besides its run's lifecycle ----------------------------------------------

def log_metrics(client: MlflowClient, run_id: str, values: dict, step: int,
                tags: dict[str, str] | None = None) -> None:
    """One batch: metrics at `step` (an epoch) and tags."""
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in values.items()],
                     tags=[RunTag(k, v) for k, v in (tags or {}).items()])


def logged_steps(client: MlflowClient, run_id: str, key: str) -> set[int]:
    return {m.step for m in client.get_metric_history(run_id, key)}


def log_reference(client: MlflowClient, experiment_id: str, name: str, tags: dict[str, str],
                  params: dict[str, str], original, step: int,
                  ending: Callable[[BaseException], RunEnd]) -> None:
    """A run standing in a sweep for `original` (finished before, or training elsewhere): the UI
    shows the sweep whole, and tables read the original in its place."""
    ref_tags = run_tags.reference(tags, original.info.run_id)
    with tracked_run(client, experiment_id, name=name, tags=ref_tags, params=params,
                     ending=ending) as ref_id:
        if original.data.metrics:
            log_metrics(client, ref_id, original.data.metrics, step)


def yield_run(client: MlflowClient, run_id: str, winner_id: str, reference: bool) -> None:
    """A run that lost the claim on its config to `winner_id` (created first): in a sweep it stays
    as a reference to the winner, so that the sweep shows the job; alone it is deleted (no ghost)."""
    if reference:
        tags = run_tags.reference({}, winner_id)  # the run already carries its job's tags
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        client.set_terminated(run_id, "FINISHED")
    else:
        client.set_terminated(run_id, "KILLED")
        client.delete_run(run_id)
