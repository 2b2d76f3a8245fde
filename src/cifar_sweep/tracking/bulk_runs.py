"""A local SQLite store's runs read straight from its tables: four queries for any number of runs.

Why: MLflow's `search_runs` builds an ORM object and then an entity for every param, tag and
metric; a table of 10,000 runs with about 130 of them each spent 63 of its 90 s there (under
cProfile, docs/speed.md). The same fields read as plain rows take about a second. The runs given
back carry what `results` reads of MLflow's runs (`info.run_id`, `info.run_name`,
`info.experiment_id`, `info.status`, `info.start_time`, `data.tags`, `data.params`,
`data.metrics`), with the values the client gives (a NaN metric as NaN, a run without a name
named by its `mlflow.runName` tag) and in `search_runs`' order (newest start first, then run id):
tests/test_results.py holds the two frames equal. A server's store, or a file whose tables are
not MLflow's, is read through the client.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from cifar_sweep.tracking.store import read_only
from cifar_sweep.tracking.tags import RUN_NAME


@dataclass
class RunInfo:
    run_id: str
    run_name: str
    experiment_id: str
    status: str
    start_time: int | None
    end_time: int | None
    lifecycle_stage: str


@dataclass
class RunData:
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class Run:
    info: RunInfo
    data: RunData


def experiment_runs(db: Path, experiment_id: str) -> list[Run] | None:
    """Every active run of the experiment, newest first; None where the file cannot be read as
    MLflow's store (the caller then asks the client, which says what is wrong)."""
    return find(db, [experiment_id])


def find(db: Path, experiment_ids: list[str], tags: dict[str, str] | None = None,
         ) -> list[Run] | None:
    """The active runs of these experiments that carry each of `tags` with its value, newest
    first, as `search_runs(ids, "tags.`k` = 'v' and ...")` finds them; None as above."""
    try:
        connection = read_only(db.expanduser())
    except sqlite3.Error:
        return None
    with closing(connection) as con:
        try:
            ids = [int(e) for e in experiment_ids]
        except ValueError:
            return None
        where = (f"experiment_id IN ({', '.join('?' * len(ids))}) AND lifecycle_stage = 'active'"
                 + " AND run_uuid IN (SELECT run_uuid FROM tags WHERE key = ? AND value = ?)"
                 * len(tags or {}))
        args = (*ids, *(part for item in (tags or {}).items() for part in item))
        try:
            return _read(con, where, args)
        except sqlite3.Error:
            return None


def _read(con: sqlite3.Connection, where: str, args: tuple) -> list[Run]:
    runs: dict[str, Run] = {}
    for run_id, name, exp, status, start, end, stage in con.execute(
            "SELECT run_uuid, name, experiment_id, status, start_time, end_time, lifecycle_stage"
            f" FROM runs WHERE {where} ORDER BY start_time DESC, run_uuid", args):
        runs[run_id] = Run(RunInfo(run_id, name, str(exp), status, start, end, stage), RunData())
    chosen = f"SELECT run_uuid FROM runs WHERE {where}"
    # a run's tags (params) as one JSON object made by SQLite: half the time of a row per tag
    # (530,000 params of 10,000 runs: 0.46 s against 0.90 s). Strings only: a metric's value
    # would be cut to SQLite's 15 digits in JSON, so metrics come a row each.
    for table in ("tags", "params"):
        for run_id, values in con.execute(
                f"SELECT run_uuid, json_group_object(key, value) FROM {table}"
                f" WHERE run_uuid IN ({chosen}) GROUP BY run_uuid", args):
            setattr(runs[run_id].data, table, json.loads(values))
    for run_id, key, value, is_nan in con.execute(
            f"SELECT run_uuid, key, value, is_nan FROM latest_metrics WHERE run_uuid IN ({chosen})",
            args):
        runs[run_id].data.metrics[key] = float("nan") if is_nan else value
    for run in runs.values():
        if not run.info.run_name and run.data.tags.get(RUN_NAME):
            run.info.run_name = run.data.tags[RUN_NAME]
    return list(runs.values())


def artifact_uris(db: Path, run_ids: list[str]) -> dict[str, str] | None:
    """run id -> its artifact location, for these runs of the store, in one query (a table's
    predictions: a `get_run` each took longer than reading their files); None as above."""
    try:
        connection = read_only(db.expanduser())
    except sqlite3.Error:
        return None
    with closing(connection) as con:
        out: dict[str, str] = {}
        try:
            for start in range(0, len(run_ids), 500):  # under SQLite's limit of bound values
                chunk = run_ids[start:start + 500]
                out.update(con.execute(
                    f"SELECT run_uuid, artifact_uri FROM runs WHERE run_uuid IN "
                    f"({', '.join('?' * len(chunk))})", chunk).fetchall())
        except sqlite3.Error:
            return None
        return out
