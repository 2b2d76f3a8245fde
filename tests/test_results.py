"""The runs frame of `results`: a SQLite store read in bulk gives the very frames MLflow's client
gives, on a store made through the client with the cases that differ between the two reads."""

import math
import sqlite3

import pandas as pd
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from cifar_sweep import results
from cifar_sweep.tracking import bulk_runs
from cifar_sweep.tracking import tags as t

ODD_TEXT = 'a "quoted" value,\nover two lines: ±Δ \\ {}'  # as JSON must carry it


def make_store(tmp_path):
    db = tmp_path / "mlflow.db"
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    study = client.create_experiment("study")
    other = client.create_experiment("other")

    def run(experiment, role, start, params=None, metrics=None, tags=None, status="FINISHED"):
        made = client.create_run(experiment, start_time=start,
                                 tags={**({t.ROLE: role} if role else {}), **(tags or {})})
        run_id = made.info.run_id
        for key, value in (params or {}).items():
            client.log_param(run_id, key, value)
        for key, value in (metrics or {}).items():
            client.log_metric(run_id, key, value, timestamp=start, step=0)
        client.set_terminated(run_id, status)
        return run_id

    original = run(other, t.ROLE_JOB, 1000, {"lr.value": "0.005", "trainer.seed": "0"},
                   {"test_accuracy": 0.7}, {t.SETTING_HASH: "s1", t.JOB_NUM: "4"})
    older = run(study, t.ROLE_SWEEP, 1500, tags={t.SWEEP_JOBS: "1", t.SWEEP_VARYING: "lr.value"})
    sweep = run(study, t.ROLE_SWEEP, 2000, tags={t.SWEEP_JOBS: "5", t.SWEEP_VARYING: "lr.value"})
    jobs = [run(study, t.ROLE_JOB, 3000,  # the same start: search_runs breaks the tie by run id
                {"lr.value": lr, "trainer.seed": "0"}, {"test_accuracy": acc, "test_loss": 1.0},
                {t.PARENT: sweep, t.SETTING_HASH: f"s-{lr}", t.JOB_NUM: str(i),
                 "code.model": "m1"})
            for i, (lr, acc) in enumerate([("0.001", 0.6), ("0.01", 0.65)])]
    odd = run(study, t.ROLE_JOB, 4000, {"lr.value": "0.1", "trainer.seed": "1", "extra.key": ODD_TEXT},
              {"test_accuracy": 0.1}, {t.PARENT: sweep, t.JOB_NUM: "2"}, status="FAILED")
    # the last of a metric's history is the value; NaN and infinity as MLflow stores them
    client.log_batch(odd, metrics=[Metric("val_accuracy", 0.2, 4000, 1),
                                   Metric("val_accuracy", 0.3, 4001, 2),
                                   Metric("test_loss", math.nan, 4000, 0),
                                   Metric("grad_norm", math.inf, 4000, 0)])
    run(study, t.ROLE_REFERENCE, 5000, {"lr.value": "0.005", "trainer.seed": "0"},
        tags={t.SAME_AS: original, t.PARENT: sweep, t.JOB_NUM: "3",
              t.JOB_OVERRIDES: "lr.value=0.005"})
    run(study, None, 6000, {"lr.value": "9"})  # no role: neither a job nor a sweep
    client.delete_run(run(study, t.ROLE_JOB, 7000, {"lr.value": "0.5"}))
    run(study, t.ROLE_JOB, 8000, {"lr.value": "0.02"}, status="RUNNING")
    with sqlite3.connect(db) as con:  # a run whose name is only in its mlflow.runName tag
        con.execute("UPDATE runs SET name = '' WHERE run_uuid = ?", (jobs[0],))
    return db, client, study, {"original": original, "sweeps": [sweep, older], "odd": odd}


def test_a_sqlite_store_read_in_bulk_gives_the_frames_the_client_gives(tmp_path):
    db, client, study, ids = make_store(tmp_path)
    read = bulk_runs.experiment_runs(db, study)
    assert read is not None and len(read) == 8  # the bulk path is taken: the deleted run is not

    jobs, sweeps = results.experiment_runs(client, "study")
    jobs_client, sweeps_client = results.experiment_runs(client, "study", bulk=False)
    pd.testing.assert_frame_equal(jobs, jobs_client)
    pd.testing.assert_frame_equal(sweeps, sweeps_client)
    assert jobs.attrs == jobs_client.attrs

    # and what the frame holds is what was logged
    assert list(sweeps.run_id) == ids["sweeps"]
    assert ids["original"] in set(jobs.run_id)  # a reference's original, from another experiment
    assert len(jobs) == 5 and jobs.run_name.str.len().min() > 0
    odd = jobs.set_index("run_id").loc[ids["odd"]]
    assert odd.val_accuracy == 0.3 and math.isnan(odd.test_loss) and odd.grad_norm > 1e300
    assert odd.status == "FAILED" and odd["extra.key"] == ODD_TEXT
    assert jobs.start_time.is_monotonic_decreasing


def test_a_file_that_is_not_a_store_is_left_to_the_client(tmp_path):
    broken = tmp_path / "mlflow.db"
    broken.write_bytes(b"not a database at all" * 100)
    assert bulk_runs.experiment_runs(broken, "1") is None
    assert bulk_runs.experiment_runs(tmp_path / "missing.db", "1") is None


def test_runs_found_in_bulk_by_their_tags_are_the_clients(tmp_path):
    """The plan's question (the runs of one data and precision, in every experiment) read in
    bulk: the same runs, in the same order, with the same fields as the client's search."""
    db, client, study, ids = make_store(tmp_path)
    other = client.get_experiment_by_name("other").experiment_id
    for tags in ({t.ROLE: t.ROLE_JOB}, {t.ROLE: t.ROLE_JOB, t.SETTING_HASH: "s1"}, {}):
        found = bulk_runs.find(db, [study, other], tags)
        assert found is not None
        searched = client.search_runs([study, other], " and ".join(
            f"tags.`{k}` = '{v}'" for k, v in tags.items()))
        assert [r.info.run_id for r in found] == [r.info.run_id for r in searched]
        for mine, theirs in zip(found, searched):
            assert (mine.info.run_name, mine.info.status, mine.info.start_time,
                    mine.info.experiment_id) == (theirs.info.run_name, theirs.info.status,
                                                 theirs.info.start_time,
                                                 theirs.info.experiment_id)
            assert mine.data.tags == theirs.data.tags and mine.data.params == theirs.data.params
            assert mine.data.metrics.keys() == theirs.data.metrics.keys()
            assert all(a == b or (math.isnan(a) and math.isnan(b)) for a, b in zip(
                mine.data.metrics.values(), (theirs.data.metrics[k] for k in mine.data.metrics)))
    assert len(bulk_runs.find(db, [study, other], {t.ROLE: t.ROLE_JOB})) == 5
    assert ids["original"] in [r.info.run_id for r in bulk_runs.find(db, [other], {})]
