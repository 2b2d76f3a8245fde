"""A table is never cut at one page of MLflow's answer, and a sweep's baseline stays its first
value after re-runs and added seeds: on a real store, and through the real entrypoint."""

import csv

import pytest
from mlflow.entities import Param
from mlflow.tracking import MlflowClient

from cifar_sweep.errors import UserInputError
from cifar_sweep.report.studies import TableSpec, build_table
from cifar_sweep.tracking import bulk_runs, paging
from cifar_sweep.tracking import tags as t
from conftest import ROOT

REPORT = ROOT / "src" / "report.py"


def logged_sweep(client: MlflowClient, first: str) -> None:
    """A sweep of lr.value=0.01,0.005 over seeds 0-2, logged as a sweep logs it (its parent
    and its jobs' tags), without training: 6 jobs, then `first` is the sweep's first job."""
    exp = client.create_experiment("e")
    parent = client.create_run(exp, tags={
        t.ROLE: t.ROLE_SWEEP, t.SWEEP_VARYING: "lr.value trainer.seed",
        t.SWEEP_OVERRIDES: "lr.value=0.01,0.005 trainer.seed=0,1,2",
        t.SWEEP_FIRST_JOB: f"lr.value={first} trainer.seed=0"}).info.run_id
    for job, (lr, seed) in enumerate((lr, s) for lr in ("0.005", "0.01") for s in range(3)):
        run = client.create_run(exp, tags={
            t.ROLE: t.ROLE_JOB, t.PARENT: parent, t.SETTING_HASH: f"s{lr}",
            t.CODE_VERSION: "c1", t.DATA_FINGERPRINT: "fp", t.PRECISION: "fp32",
            t.JOB_NUM: str(job), t.JOB_OVERRIDES: f"lr.value={lr} trainer.seed={seed}",
            "device": "cpu"}).info.run_id
        client.log_batch(run, params=[Param("lr.value", lr), Param("trainer.seed", str(seed))])
        client.log_metric(run, "test_accuracy", 0.5 + 0.01 * seed + (lr == "0.01") * 0.02)
        client.set_terminated(run, "FINISHED")
    client.set_terminated(parent, "FINISHED")


def test_a_table_over_more_runs_than_one_page_is_complete(tmp_path, monkeypatch):
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    logged_sweep(client, first="0.01")
    pages = []
    search = client.search_runs

    def counted(*args, **kwargs):
        page = search(*args, **kwargs)
        pages.append(len(page))
        return page

    whole = build_table(client, TableSpec("e", "e", kind="Sweep")).markdown()  # read in bulk
    # through the client, page by page, as a server's store is read (a SQLite file is read in
    # bulk, without pages)
    monkeypatch.setattr(bulk_runs, "experiment_runs", lambda db, experiment_id: None)
    monkeypatch.setattr(client, "search_runs", counted)
    monkeypatch.setenv(paging.PAGE_SIZE_ENV, "2")
    pages.clear()
    table = build_table(client, TableSpec("e", "e", kind="Sweep"))
    assert max(pages) == 2 and len(pages) > 3  # two runs a page: many pages were read
    assert {r.label: (r.seeds, r.baseline) for r in table.records} == {
        "0.01": (["0", "1", "2"], True), "0.005": (["0", "1", "2"], False)}
    # the sweep's first value is its baseline, though its rows came in another order
    assert table.markdown() == whole  # one page or many: the same table
    monkeypatch.setenv(paging.PAGE_SIZE_ENV, "0")
    with pytest.raises(UserInputError, match="CIFAR_SWEEP_PAGE_SIZE=0 is invalid"):
        build_table(client, TableSpec("e", "e", kind="Sweep"))


def table(project, env=None) -> tuple[list[dict], str]:
    project.run("sweep=latest", script=REPORT, check=True, env=env)
    out = project.sweep_report()
    return list(csv.DictReader((out / "table.csv").open())), (out / "table.md").read_text()


@pytest.mark.slow  # four entrypoint runs: about a minute on an idle 2-core CPU
def test_a_sweeps_baseline_is_its_first_value_after_re_runs_and_added_seeds(project):
    sweep = ("-m", "hydra/launcher=basic", "tracking.figures=false")
    project.train(*sweep, "optimizer=adam", check=True)  # adam first, alone
    # the sweep again with sgd first and seeds added; one run a page: the sweep's count of its
    # finished jobs reads every page (else it would count one of four and fail)
    proc = project.train(*sweep, "optimizer=sgd,adam", "trainer.seed=0,1", check=True,
                         env={paging.PAGE_SIZE_ENV: "1"})
    assert "already finished" in proc.stdout
    printed = {line.split()[0]: line for line in proc.stdout.splitlines()
               if line.split()[:1] in (["sgd"], ["adam"])}
    assert "(baseline)" in printed["sgd"] and "(baseline)" not in printed["adam"], proc.stdout
    rows, md = table(project, env={paging.PAGE_SIZE_ENV: "2"})
    assert {r["setting"]: (r["baseline"], r["seeds"]) for r in rows} == {
        "optimizer=sgd": ("True", "0 1"), "optimizer=adam": ("False", "0 1")}
    jobs = [r for r in project.runs() if r.data.tags["cifar_sweep.role"] == "job"]
    assert len(jobs) == 4 and sorted(i for r in rows for i in r["run_ids"].split()) == sorted(
        j.info.run_id for j in jobs)
    assert table(project) == (rows, md)  # one page or many: the same table
