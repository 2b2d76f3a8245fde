"""bulk_writes: finished runs written in bulk read back, through MLflow's client, as the three
client calls (create_run, log_batch, set_terminated) leave them."""

from __future__ import annotations

import math

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from cifar_sweep.tracking import bulk_writes
from cifar_sweep.tracking.bulk_writes import FinishedRun, write_finished
from cifar_sweep.tracking.store import prepare_sqlite


def _client(tmp_path, name: str) -> tuple[MlflowClient, str]:
    db = tmp_path / name / "mlflow.db"
    uri = f"sqlite:///{db}"
    prepare_sqlite(db, uri, str(db))
    client = MlflowClient(uri)
    return client, client.create_experiment("e", artifact_location=(tmp_path / name / "a").as_uri())


def _runs() -> list[FinishedRun]:
    return [FinishedRun(f"#{i} lr.value=0.00{i} (done before)",
                        {"cifar_sweep.role": "reference", "mlflow.user": "ada", "k": f"v{i}"},
                        {"lr.value": f"0.00{i}", "long": "x" * 6000},
                        {"test_accuracy": (0.5 + i / 100, 3), "nan_metric": (math.nan, 3),
                         "inf_metric": (math.inf, 3), "neg_inf": (-math.inf, 3)})
            for i in range(5)]


def _as_read(client: MlflowClient, experiment_id: str, ids: list[str]) -> list[dict]:
    out = []
    for run_id in ids:
        run = client.get_run(run_id)
        info = run.info
        history = {k: [(m.value, m.step) for m in client.get_metric_history(run_id, k)]
                   for k in run.data.metrics}
        out.append({
            "name": info.run_name, "status": info.status, "stage": info.lifecycle_stage,
            "user": info.user_id, "ended": info.end_time is not None and info.end_time >= info.start_time,
            "artifacts": info.artifact_uri.removesuffix(f"/{run_id}/artifacts").rsplit("/", 1)[-1],
            "tags": run.data.tags, "params": run.data.params,
            "metrics": {k: ("nan" if math.isnan(v) else v) for k, v in run.data.metrics.items()},
            "history": {k: [("nan" if math.isnan(v) else v, s) for v, s in h]
                        for k, h in history.items()}})
    return out


def test_bulk_written_runs_read_back_as_the_clients_calls_leave_them(tmp_path, monkeypatch):
    monkeypatch.setattr(bulk_writes, "CHUNK", 2)  # three transactions for five runs
    bulk_client, bulk_exp = _client(tmp_path, "bulk")
    loop_client, loop_exp = _client(tmp_path, "loop")
    assert bulk_writes._sql_store(bulk_client) is not None  # the bulk path is the one taken
    bulk_ids = write_finished(bulk_client, bulk_exp, _runs())
    loop_ids = [bulk_writes._through_client(loop_client, loop_exp, run) for run in _runs()]
    assert _as_read(bulk_client, bulk_exp, bulk_ids) == _as_read(loop_client, loop_exp, loop_ids)
    # found by a search, as the report and the next plan look for them
    found = bulk_client.search_runs([bulk_exp], "tags.`cifar_sweep.role` = 'reference'")
    assert sorted(r.info.run_id for r in found) == sorted(bulk_ids)


def test_a_value_mlflow_refuses_is_refused_as_the_client_refuses_it(tmp_path, monkeypatch):
    monkeypatch.setattr(bulk_writes, "CHUNK", 2)
    client, experiment_id = _client(tmp_path, "s")
    runs = _runs()
    runs[3].metrics["m" * 251] = (1.0, 3)  # MLflow takes a metric's name of 250 characters at most
    with pytest.raises(MlflowException, match="exceeds the maximum length of 250"):
        write_finished(client, experiment_id, runs)
    # the chunk before the bad run's was written, and the good run of its own chunk; the bad
    # one is not left behind RUNNING or half-written
    assert [r.info.status for r in client.search_runs([experiment_id])] == ["FINISHED"] * 3
