"""Finished runs written to a local SQLite store many at a time, through MLflow's own table models.

Why: a sweep re-run writes a reference run for every job finished before (bulk_plan.py). Through the
client that is three calls a run (`create_run`, `log_batch`, `set_terminated`), each its own
session, queries and commit: about 70 ms a run, so a re-run of a finished 10,000-job sweep spent
about 12 minutes writing them (docs/speed.md). Here the rows MLflow's SQL store would write for
those three calls (the `runs` row, its tags with `mlflow.runName`, params, metrics and latest
metrics) go in with one INSERT per table for a chunk of runs, in one transaction. The table
definitions are MLflow's (`mlflow.store.tracking.dbmodels.models`), so a schema change shows up as
an error here, not as a store MLflow cannot read; tests/test_bulk_writes.py holds the runs read
back by the client equal to the ones the three calls write. A server's store, or a run whose
params or metrics MLflow would refuse or cut (a key or value over its limits), goes through the
client as before, which says what is wrong.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass

from cifar_sweep.tracking.tags import RUN_NAME, USER

CHUNK = 200  # runs per transaction: a live job writing to the same store waits for one chunk only
MAX_KEY, MAX_PARAM_VALUE = 250, 6000  # mlflow.utils.validation's limits
LARGEST = 1.7976931348623157e308  # what MLflow's SQL store keeps for an infinite metric


@dataclass
class FinishedRun:
    """One run to write as FINISHED: its name, tags, params and each metric's (value, step)."""

    name: str
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, tuple[float, int]]

    def fits(self) -> bool:
        """Whether `log_batch` would take every param and metric as it is (it refuses a key over
        250 characters and cuts a param's value over 6,000, with a warning); `create_run`
        checks no tag."""
        return (all(len(k) <= MAX_KEY and len(v) <= MAX_PARAM_VALUE for k, v in self.params.items())
                and all(len(k) <= MAX_KEY for k in self.metrics))


def write_finished(client, experiment_id: str, runs: list[FinishedRun]) -> list[str]:
    """Write each run, FINISHED, into the experiment; their run ids, in order."""
    store = _sql_store(client)
    ids: list[str] = []
    if store is None:
        return [_through_client(client, experiment_id, run) for run in runs]
    location = client.get_experiment(experiment_id).artifact_location
    for start in range(0, len(runs), CHUNK):
        chunk = runs[start:start + CHUNK]
        ids.extend(_insert(store, experiment_id, location, chunk)
                   if all(run.fits() for run in chunk)
                   else [_through_client(client, experiment_id, run) for run in chunk])
    return ids


def _sql_store(client):
    """The client's SQLAlchemy store when it is a local SQLite file, else None."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    if isinstance(store, SqlAlchemyStore) and str(client.tracking_uri).startswith("sqlite:"):
        return store
    return None


def _through_client(client, experiment_id: str, run: FinishedRun) -> str:
    from mlflow.entities import Metric, Param

    run_id = client.create_run(experiment_id, run_name=run.name, tags=run.tags).info.run_id
    now = int(time.time() * 1000)
    try:
        client.log_batch(run_id, params=[Param(k, v) for k, v in run.params.items()],
                         metrics=[Metric(k, v, now, step) for k, (v, step) in run.metrics.items()])
        client.set_terminated(run_id, "FINISHED")
    except BaseException:
        client.delete_run(run_id)  # not left RUNNING, half-written, as a ghost
        raise
    return run_id


def _insert(store, experiment_id: str, location: str, runs: list[FinishedRun]) -> list[str]:
    """One transaction: the rows `create_run` + `log_batch` + `set_terminated` would leave."""
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlParam, SqlRun, SqlTag
    from mlflow.utils.uri import append_to_uri_path

    now = int(time.time() * 1000)
    rows: dict[str, list[dict]] = {"runs": [], "tags": [], "params": [], "metrics": []}
    ids = []
    for run in runs:
        run_id = uuid.uuid4().hex
        ids.append(run_id)
        tags = dict(run.tags)
        name = run.name or tags.get(RUN_NAME, "")
        tags.setdefault(RUN_NAME, name)
        rows["runs"].append({
            "run_uuid": run_id, "name": name, "experiment_id": int(experiment_id),
            "artifact_uri": append_to_uri_path(location, run_id, "artifacts"),
            "source_type": "UNKNOWN", "source_name": "", "entry_point_name": "",
            "user_id": tags.get(USER, "unknown"), "status": "FINISHED", "start_time": now,
            "end_time": now, "deleted_time": None, "source_version": "",
            "lifecycle_stage": "active"})
        rows["tags"] += [{"run_uuid": run_id, "key": k, "value": v} for k, v in tags.items()]
        rows["params"] += [{"run_uuid": run_id, "key": k, "value": v} for k, v in run.params.items()]
        for key, (value, step) in run.metrics.items():
            is_nan = math.isnan(value)
            stored = 0.0 if is_nan else max(-LARGEST, min(LARGEST, value))
            rows["metrics"].append({"run_uuid": run_id, "key": key, "value": stored,
                                    "timestamp": now, "step": step, "is_nan": is_nan})
    with store.ManagedSessionMaker(read_only=False) as session:
        for model, name in ((SqlRun, "runs"), (SqlTag, "tags"), (SqlParam, "params"),
                            (SqlMetric, "metrics"), (SqlLatestMetric, "metrics")):
            if rows[name]:
                session.execute(model.__table__.insert(), rows[name])
    return ids
