"""The questions asked of the store, each written once: a config's job runs (finished, to
continue, held by a live job); a sweep's runs, its progress, the settings its jobs vary."""

from __future__ import annotations

import time

from mlflow.tracking import MlflowClient

from cifar_sweep.tracking.paging import all_runs
from cifar_sweep.tracking.tags import (
    AHEAD,
    CODE_VERSION,
    CONFIG_HASH,
    PARENT,
    ROLE,
    ROLE_JOB,
    SWEEP_JOBS,
    SWEEP_LAUNCHED,
    SWEEP_TO_TRAIN,
    SWEEP_VARYING,
)


def sweep_children(client: MlflowClient, parent: str, experiment_id: str | None = None,
                   running: bool = False) -> list:
    """Every run of the sweep whose parent run is `parent` (only its RUNNING ones: `running`),
    in the parent's experiment unless given: the one query for "this sweep's runs"."""
    if experiment_id is None:
        experiment_id = client.get_run(parent).info.experiment_id
    query = f"tags.`{PARENT}` = '{parent}'" + (" and attributes.status = 'RUNNING'" if running else "")
    return all_runs(client, [experiment_id], query)


def sweep_progress_in_store(client: MlflowClient, experiment_id: str,
                            parent: str) -> tuple[int, int, int, float]:
    """The sweep's progress from its runs in the store (where its folder has no record:
    sweep_folder.record_job_end): (jobs the sweep launched, finished, failed or killed, seconds
    since it launched them); the reference runs it wrote before launching (finished before) are
    not counted."""
    sweep = client.get_run(parent)
    children = [c for c in sweep_children(client, parent, experiment_id)
                if AHEAD not in c.data.tags]
    tags = sweep.data.tags
    started = float(tags.get(SWEEP_LAUNCHED) or sweep.info.start_time / 1000)
    return (int(tags.get(SWEEP_TO_TRAIN) or tags.get(SWEEP_JOBS, "0")),
            sum(c.info.status == "FINISHED" for c in children),
            sum(c.info.status in ("FAILED", "KILLED") for c in children),
            time.time() - started)


def sweep_varying(client: MlflowClient, parent: str) -> list[str]:
    return client.get_run(parent).data.tags.get(SWEEP_VARYING, "").split()


def config_runs(client: MlflowClient, experiment_ids: list[str], config_hash: str, status: str,
                code_version: str | None = None, newest: int | None = None) -> list:
    """The job runs of this config (made by this code version, where one is given) whose status
    compares as `status` says (`= 'FINISHED'`, `!= 'FINISHED'`, `= 'RUNNING'`): every one, or
    only the `newest` few, newest first."""
    query = (f"tags.{CONFIG_HASH} = '{config_hash}' and tags.`{ROLE}` = '{ROLE_JOB}' "
             f"and attributes.status {status}")
    if code_version is not None:
        query += f" and tags.{CODE_VERSION} = '{code_version}'"
    order = ["attributes.start_time DESC"]
    if newest is not None:
        return list(client.search_runs(experiment_ids, query, order_by=order, max_results=newest))
    return all_runs(client, experiment_ids, query, order_by=order)
