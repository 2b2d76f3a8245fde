"""tracking/runs.py against a real local MLflow SQLite store: `tracked_run` (a new run closed
FINISHED, or as its ending says; a reopened run; the claim lock), `yield_run`, `log_reference`,
`log_metrics`/`logged_steps` and `flatten`."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from cifar_sweep.errors import Pruned, Yielded
from cifar_sweep.job.endings import EndingClassifier
from cifar_sweep.tracking import store
from cifar_sweep.tracking.runs import (
    flatten,
    log_metrics,
    log_reference,
    logged_steps,
    tracked_run,
    yield_run,
)
from cifar_sweep.tracking.tags import FAILURE, ROLE, ROLE_REFERENCE, SAME_AS, TRIAL_STATE

_names = itertools.count()


@pytest.fixture(scope="module")
def store_uri(tmp_path_factory):
    # One database for the file (its schema takes a second to make); each test its own experiment.
    return f"sqlite:///{tmp_path_factory.mktemp('store')}/mlflow.db"


@pytest.fixture
def client(store_uri):
    return MlflowClient(tracking_uri=store_uri)


@pytest.fixture
def experiment_id(client):
    return client.create_experiment(f"runs-{next(_names)}")


@pytest.fixture
def ending(store_uri):
    return EndingClassifier(store_uri).of


@dataclass(frozen=True)
class End:
    """An ending as tracked_run reads it (the RunEnd protocol), for statuses the table lacks."""

    status: str | None
    reason: str = ""
    tags: dict[str, str] = field(default_factory=dict)


def _run(client, run_id):
    return client.get_run(run_id)


def test_a_new_run_ends_finished_with_its_params_and_tags(client, experiment_id, ending):
    with tracked_run(client, experiment_id, name="job-1", tags={"a": "1"},
                     params={"lr": "0.1", "model.depth": "18"}, ending=ending) as run_id:
        assert _run(client, run_id).info.status == "RUNNING"  # open while the job runs
    run = _run(client, run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "job-1"
    assert run.data.params == {"lr": "0.1", "model.depth": "18"}
    assert run.data.tags["a"] == "1"
    assert FAILURE not in run.data.tags
    assert run.info.experiment_id == experiment_id


def test_a_long_name_and_param_are_cut_to_what_the_store_takes(client, experiment_id, ending):
    # MLflow refuses a run name over 250 characters: cut, not a failure (a param over 6000 is
    # cut as well; this MLflow also cuts it itself, so only the name tells tracked_run's cut)
    with tracked_run(client, experiment_id, name="n" * 400, tags={}, params={"p": "v" * 7000},
                     ending=ending) as run_id:
        pass
    run = _run(client, run_id)
    assert run.info.run_name == "n" * 250
    assert run.data.params["p"] == "v" * 6000
    assert run.info.status == "FINISHED"


def test_an_error_closes_the_run_as_the_ending_says_and_goes_on(client, experiment_id, ending):
    with pytest.raises(ValueError, match="a bug"):
        with tracked_run(client, experiment_id, name="j", tags={}, params={},
                         ending=ending) as run_id:
            raise ValueError("a bug")
    run = _run(client, run_id)
    assert run.info.status == "FAILED"  # the table's code-error row
    assert run.data.tags[FAILURE] == "ValueError: a bug"


def test_a_pruned_trial_is_killed_with_the_endings_tags(client, experiment_id, ending):
    with pytest.raises(Pruned):
        with tracked_run(client, experiment_id, name="j", tags={}, params={},
                         ending=ending) as run_id:
            raise Pruned(3)
    run = _run(client, run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags[FAILURE] == "pruned after epoch 3"
    assert run.data.tags[TRIAL_STATE] == "pruned"  # the ending's extra tags are written too


def test_a_signal_closes_the_run_killed_and_still_propagates(client, experiment_id, ending):
    # KeyboardInterrupt is not an Exception: tracked_run must catch it all the same
    with pytest.raises(KeyboardInterrupt):
        with tracked_run(client, experiment_id, name="j", tags={}, params={},
                         ending=ending) as run_id:
            raise KeyboardInterrupt
    run = _run(client, run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags[FAILURE] == "interrupted"


def test_an_ending_with_its_own_status_reason_and_tags_is_written_as_given(client, experiment_id):
    seen = []

    def ending(exc):
        seen.append(exc)
        return End("KILLED", "why it stopped", {"extra": "x"})

    with pytest.raises(RuntimeError):
        with tracked_run(client, experiment_id, name="j", tags={}, params={},
                         ending=ending) as run_id:
            raise RuntimeError("stop")
    assert len(seen) == 1 and isinstance(seen[0], RuntimeError)  # asked once, with the exception
    run = _run(client, run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags[FAILURE] == "why it stopped"
    assert run.data.tags["extra"] == "x"


def test_an_ending_without_status_leaves_the_run_as_it_is(client, experiment_id, ending):
    # a run that yields to another (Yielded) is not closed here: yield_run decides its fate
    winner = client.create_run(experiment_id)
    with pytest.raises(Yielded):
        with tracked_run(client, experiment_id, name="j", tags={}, params={},
                         ending=ending) as run_id:
            raise Yielded(winner)
    run = _run(client, run_id)
    assert run.info.status == "RUNNING"
    assert FAILURE not in run.data.tags


def test_a_store_that_refuses_the_closing_leaves_the_jobs_exception(client, experiment_id,
                                                                    ending, caplog):
    # a run deleted under the job: the store refuses to close it (MlflowException); one warning
    # line says so, and the job's own exception is the one reported
    with pytest.raises(ValueError, match="the job's own"):
        with tracked_run(client, experiment_id, name="j", tags={}, params={},
                         ending=ending) as run_id:
            client.delete_run(run_id)
            raise ValueError("the job's own")
    assert f"could not mark run {run_id} FAILED" in caplog.text


def test_reopening_a_run_sets_it_running_renamed_tagged_without_its_old_failure(
        client, experiment_id, ending):
    old = client.create_run(experiment_id, run_name="before", tags={"kept": "yes"}).info.run_id
    client.log_param(old, "lr", "0.1")
    client.set_tag(old, FAILURE, "interrupted")
    client.set_terminated(old, "KILLED")
    with tracked_run(client, experiment_id, name="after", tags={"new": "2"}, params={"lr": "0.1"},
                     ending=ending, resume_id=old) as run_id:
        assert run_id == old  # the same run continues: no new one
        run = _run(client, run_id)
        assert run.info.status == "RUNNING"
        assert run.info.run_name == "after"
        assert run.data.tags["new"] == "2" and run.data.tags["kept"] == "yes"
        assert FAILURE not in run.data.tags  # no longer true while it trains again
    assert _run(client, old).info.status == "FINISHED"
    assert len(client.search_runs([experiment_id])) == 1


def test_a_failure_reason_set_while_running_is_removed_when_it_finishes(client, experiment_id,
                                                                        ending):
    with tracked_run(client, experiment_id, name="j", tags={}, params={},
                     ending=ending) as run_id:
        client.set_tag(run_id, FAILURE, "the sweep ended first")
    run = _run(client, run_id)
    assert run.info.status == "FINISHED"
    assert FAILURE not in run.data.tags


class _CheckingClient(MlflowClient):
    """A real client that notes whether the claim lock is held when the run is created."""

    def __init__(self, uri, lock):
        super().__init__(tracking_uri=uri)
        self.lock, self.held_at_create = lock, []

    def create_run(self, *args, **kwargs):
        self.held_at_create.append(self.lock.is_locked)
        return super().create_run(*args, **kwargs)


def test_the_claim_lock_is_held_from_before_creation_and_left_held(store_uri, experiment_id,
                                                                   ending):
    lock = store.claim_lock(store_uri)
    client = _CheckingClient(store_uri, lock)
    try:
        with tracked_run(client, experiment_id, name="j", tags={}, params={}, ending=ending,
                         lock=lock):
            pass
        assert client.held_at_create == [True]
        assert lock.is_locked  # the caller releases it once it has claimed its config
    finally:
        lock.release(force=True)


def test_the_claim_lock_is_released_when_the_run_cannot_be_created(store_uri, ending):
    lock = store.claim_lock(store_uri)
    client = _CheckingClient(store_uri, lock)
    with pytest.raises(MlflowException):  # no such experiment: the store refuses the run
        with tracked_run(client, "987654321", name="j", tags={}, params={}, ending=ending,
                         lock=lock):
            pytest.fail("the body must not run without a run")
    assert client.held_at_create == [True]
    assert not lock.is_locked  # else every later job of this store waits on it


def test_a_yielding_run_in_a_sweep_stays_as_a_finished_reference(client, experiment_id):
    winner = client.create_run(experiment_id).info.run_id
    loser = client.create_run(experiment_id).info.run_id
    yield_run(client, loser, winner, reference=True)
    run = _run(client, loser)
    assert run.info.status == "FINISHED"
    assert run.info.lifecycle_stage == "active"
    assert run.data.tags[ROLE] == ROLE_REFERENCE
    assert run.data.tags[SAME_AS] == winner


def test_a_yielding_run_alone_is_deleted(client, experiment_id):
    winner = client.create_run(experiment_id).info.run_id
    loser = client.create_run(experiment_id).info.run_id
    yield_run(client, loser, winner, reference=False)
    run = _run(client, loser)
    assert run.info.lifecycle_stage == "deleted"
    assert run.info.status == "KILLED"
    assert [r.info.run_id for r in client.search_runs([experiment_id])] == [winner]


def test_a_reference_run_stands_for_the_original_with_its_metrics(client, experiment_id, ending):
    original_id = client.create_run(experiment_id).info.run_id
    log_metrics(client, original_id, {"test_acc": 0.75, "test_loss": 1.5}, step=4)
    client.set_terminated(original_id, "FINISHED")
    original = client.get_run(original_id)
    log_reference(client, experiment_id, "ref", {"sweep": "s"}, {"lr": "0.1"}, original, 9,
                  ending)
    (ref,) = [r for r in client.search_runs([experiment_id]) if r.info.run_id != original_id]
    assert ref.info.status == "FINISHED"
    assert ref.info.run_name == "ref"
    assert ref.data.tags[ROLE] == ROLE_REFERENCE
    assert ref.data.tags[SAME_AS] == original_id
    assert ref.data.tags["sweep"] == "s"
    assert ref.data.params == {"lr": "0.1"}
    assert ref.data.metrics == {"test_acc": 0.75, "test_loss": 1.5}
    assert logged_steps(client, ref.info.run_id, "test_acc") == {9}  # at the step given


def test_a_reference_to_a_run_without_metrics_logs_none(client, experiment_id, ending):
    original = client.create_run(experiment_id)
    log_reference(client, experiment_id, "ref", {}, {}, original, 1, ending)
    (ref,) = [r for r in client.search_runs([experiment_id])
              if r.info.run_id != original.info.run_id]
    assert ref.data.metrics == {}
    assert ref.info.status == "FINISHED"


def test_metrics_are_logged_at_their_step_with_tags(client, experiment_id):
    run_id = client.create_run(experiment_id).info.run_id
    log_metrics(client, run_id, {"loss": 2, "acc": 0.5}, step=1, tags={"heartbeat": "t1"})
    log_metrics(client, run_id, {"loss": 1.0}, step=2)
    assert logged_steps(client, run_id, "loss") == {1, 2}
    assert logged_steps(client, run_id, "acc") == {1}
    assert logged_steps(client, run_id, "never") == set()
    history = client.get_metric_history(run_id, "loss")
    assert sorted((m.step, m.value) for m in history) == [(1, 2.0), (2, 1.0)]
    assert client.get_run(run_id).data.tags["heartbeat"] == "t1"


def test_flatten_joins_nested_keys_with_dots_and_writes_values_as_text():
    config = {"model": {"name": "resnet", "depth": 18, "opts": {"bn": True}}, "lr": 0.1,
              "empty": {}, "none": None, "list": [1, 2]}
    assert flatten(config) == {
        "model.name": "resnet", "model.depth": "18", "model.opts.bn": "True", "lr": "0.1",
        "empty": "{}", "none": "None", "list": "[1, 2]"}
    assert flatten({"a": {"b": 1}}, prefix="cfg.") == {"cfg.a.b": "1"}
