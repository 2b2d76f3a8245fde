"""cifar_sweep.tracking.queries against a real local MLflow store (SQLite): a sweep's runs
(`sweep_children`), its progress line's numbers (`sweep_progress_in_store`), the settings its
jobs vary (`sweep_varying`), and a config's job runs (`config_runs`). The store is made once for the file
(its schema migrations take seconds); each test writes to an experiment of its own."""

from __future__ import annotations

import time

import pytest
from mlflow.tracking import MlflowClient

from cifar_sweep.tracking import tags as t
from cifar_sweep.tracking.paging import PAGE_SIZE_ENV
from cifar_sweep.tracking.queries import (
    config_runs,
    sweep_children,
    sweep_progress_in_store,
    sweep_varying,
)


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{tmp_path_factory.mktemp('store')}/mlflow.db")


@pytest.fixture
def experiment(client, request) -> str:
    return client.create_experiment(request.node.name)


def make_run(client, experiment: str, status: str = "FINISHED", parent: str | None = None,
             start: float | None = None, **tags: str) -> str:
    """A run with these tags (and its parent's id), left in `status`."""
    if parent is not None:
        tags[t.PARENT] = parent
    run_id = client.create_run(experiment, tags=tags,
                               start_time=None if start is None else int(start * 1000)).info.run_id
    if status != "RUNNING":
        client.set_terminated(run_id, status)
    return run_id


def ids(runs) -> set[str]:
    return {r.info.run_id for r in runs}


# --- a sweep's runs ------------------------------------------------------------------------------

def test_a_sweeps_children_are_its_runs_of_every_status_and_no_others(client, experiment):
    parent = make_run(client, experiment, "RUNNING", **{t.ROLE: t.ROLE_SWEEP})
    mine = {make_run(client, experiment, status, parent=parent)
            for status in ("FINISHED", "RUNNING", "FAILED", "KILLED")}
    other_sweep = make_run(client, experiment, "RUNNING")
    make_run(client, experiment, parent=other_sweep)
    make_run(client, experiment)  # a single run: no parent at all
    deleted = make_run(client, experiment, parent=parent)
    client.delete_run(deleted)  # deleted runs are not the sweep's any more
    assert ids(sweep_children(client, parent)) == mine


def test_a_sweeps_running_children_are_only_those_still_running(client, experiment):
    parent = make_run(client, experiment, "RUNNING")
    running = {make_run(client, experiment, "RUNNING", parent=parent) for _ in range(2)}
    for status in ("FINISHED", "FAILED", "KILLED"):
        make_run(client, experiment, status, parent=parent)
    assert ids(sweep_children(client, parent, running=True)) == running


def test_a_sweeps_children_are_looked_for_in_the_parents_experiment_unless_named(client, experiment):
    parent = make_run(client, experiment, "RUNNING")
    here = make_run(client, experiment, parent=parent)
    elsewhere_experiment = client.create_experiment(f"{experiment}-elsewhere")
    elsewhere = make_run(client, elsewhere_experiment, parent=parent)
    assert ids(sweep_children(client, parent)) == {here}
    assert ids(sweep_children(client, parent, elsewhere_experiment)) == {elsewhere}


def test_a_sweeps_children_are_all_there_past_the_first_page(client, experiment, monkeypatch):
    parent = make_run(client, experiment, "RUNNING")
    children = {make_run(client, experiment, parent=parent) for _ in range(5)}
    monkeypatch.setenv(PAGE_SIZE_ENV, "2")  # three pages of 2, 2 and 1
    assert ids(sweep_children(client, parent)) == children


# --- a sweep's progress --------------------------------------------------------------------------

def test_progress_counts_the_launched_jobs_by_how_they_ended(client, experiment):
    launched = time.time() - 100
    parent = make_run(client, experiment, "RUNNING", **{
        t.SWEEP_JOBS: "7", t.SWEEP_TO_TRAIN: "5", t.SWEEP_LAUNCHED: str(launched)})
    for status in ("FINISHED", "FINISHED", "FAILED", "KILLED", "RUNNING"):
        make_run(client, experiment, status, parent=parent)
    # references the sweep wrote before launching, standing for runs finished before: not its work
    for _ in range(2):
        make_run(client, experiment, parent=parent, **{t.AHEAD: "true", t.ROLE: t.ROLE_REFERENCE})
    before = time.time()
    total, finished, failed, elapsed = sweep_progress_in_store(client, experiment, parent)
    # the jobs it launched (5), not every job of the sweep (7)
    assert (total, finished, failed) == (5, 2, 2)
    assert before - launched <= elapsed <= time.time() - launched


def test_progress_of_a_sweep_that_launched_nothing_is_zero_jobs_not_all_of_them(client, experiment):
    # every job had finished before: "0" launched is an answer, not a missing tag
    parent = make_run(client, experiment, "RUNNING", **{t.SWEEP_JOBS: "4", t.SWEEP_TO_TRAIN: "0"})
    assert sweep_progress_in_store(client, experiment, parent)[:3] == (0, 0, 0)


@pytest.mark.parametrize("tags, total", [
    ({t.SWEEP_JOBS: "6"}, 6),  # a sweep of older code, without to_train: all its jobs
    ({}, 0),                   # neither tag yet
])
def test_progress_without_the_launched_count_falls_back_to_the_sweeps_jobs(
        client, experiment, tags, total):
    parent = make_run(client, experiment, "RUNNING", **tags)
    assert sweep_progress_in_store(client, experiment, parent)[0] == total


def test_progress_without_a_launch_time_counts_from_the_parents_start(client, experiment):
    started = time.time() - 50
    parent = make_run(client, experiment, "RUNNING", start=started)
    before = time.time()
    elapsed = sweep_progress_in_store(client, experiment, parent)[3]
    # the store keeps milliseconds: at most one off
    assert before - started - 0.001 <= elapsed <= time.time() - started + 0.001


# --- the settings a sweep varies -----------------------------------------------------------------

@pytest.mark.parametrize("value, varying", [
    ("lr.value optimizer", ["lr.value", "optimizer"]),
    (" model  trainer.seed ", ["model", "trainer.seed"]),  # any whitespace between, none kept
    ("", []),
    (None, []),  # a sweep that has not written it
])
def test_varying_is_the_parents_tag_split_into_keys(client, experiment, value, varying):
    tags = {} if value is None else {t.SWEEP_VARYING: value}
    parent = make_run(client, experiment, "RUNNING", **tags)
    assert sweep_varying(client, parent) == varying


# --- a config's job runs -------------------------------------------------------------------------

def job(client, experiment, status="FINISHED", config="aaa", code="c1", start=None, **tags) -> str:
    return make_run(client, experiment, status, start=start, **{
        t.ROLE: t.ROLE_JOB, t.CONFIG_HASH: config, t.CODE_VERSION: code, **tags})


def test_config_runs_are_this_configs_jobs_whose_status_compares_as_asked(client, experiment):
    finished = job(client, experiment, "FINISHED")
    failed = job(client, experiment, "FAILED")
    running = job(client, experiment, "RUNNING")
    job(client, experiment, config="bbb")  # another config
    # a reference run of the same config: it stands for a job, it is not one
    make_run(client, experiment, **{t.ROLE: t.ROLE_REFERENCE, t.CONFIG_HASH: "aaa"})
    assert ids(config_runs(client, [experiment], "aaa", "= 'FINISHED'")) == {finished}
    assert ids(config_runs(client, [experiment], "aaa", "!= 'FINISHED'")) == {failed, running}
    assert ids(config_runs(client, [experiment], "aaa", "= 'RUNNING'")) == {running}


def test_config_runs_of_a_code_version_leave_out_other_codes_runs(client, experiment):
    this_code = job(client, experiment, code="c1")
    other_code = job(client, experiment, code="c2")
    assert ids(config_runs(client, [experiment], "aaa", "= 'FINISHED'", "c1")) == {this_code}
    assert ids(config_runs(client, [experiment], "aaa", "= 'FINISHED'")) == {this_code, other_code}


def test_config_runs_come_newest_first_from_every_experiment_named(client, experiment, monkeypatch):
    second = client.create_experiment(f"{experiment}-second")
    now = time.time()
    # created out of order, so that the order can only come from their start times
    starts = {job(client, second, start=now - 30): 30, job(client, experiment, start=now - 10): 10,
              job(client, second, start=now - 20): 20, job(client, experiment, start=now - 40): 40}
    newest_first = sorted(starts, key=starts.get)
    monkeypatch.setenv(PAGE_SIZE_ENV, "3")  # every one, past the first page
    assert [r.info.run_id for r in config_runs(
        client, [experiment, second], "aaa", "= 'FINISHED'")] == newest_first
    assert [r.info.run_id for r in config_runs(
        client, [experiment, second], "aaa", "= 'FINISHED'", newest=2)] == newest_first[:2]
