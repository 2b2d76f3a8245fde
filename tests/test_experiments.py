"""tracking/experiments.py: where a `tracking.uri` puts the store (`store_locations`), opening an
experiment (made with its kind tag, an older one tagged, a deleted one refused in one line), and
`_check_artifact_location`'s judgement of an experiment's file-path artifacts."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from cifar_sweep.errors import UserInputError
from cifar_sweep.tracking.experiments import _check_artifact_location, open_experiment, store_locations
from cifar_sweep.tracking.tags import EXPERIMENT_KIND, MODEL_TRAINING

SERVER = "http://tracking.example:5000"  # only named in messages: nothing is asked of it


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    # One store for the file (its schema takes a second to make); each test its own experiment.
    return tmp_path_factory.mktemp("mlruns")


def _tracking(uri, experiment):
    return OmegaConf.create({"uri": str(uri), "experiment": experiment})


def test_a_folder_becomes_a_sqlite_database_in_it_and_an_artifacts_folder(folder):
    uri, artifacts = store_locations(str(folder))
    assert uri == f"sqlite:///{folder / 'mlflow.db'}"
    assert artifacts == (folder / "artifacts").as_uri()
    assert (folder / "mlflow.db").is_file()  # made ready, with its schema
    assert MlflowClient(tracking_uri=uri).get_experiment_by_name("Default") is not None


def test_a_relative_folder_is_resolved_to_an_absolute_database_path(folder, monkeypatch):
    # a job that changes directory (Hydra's run dir) must still open the same store
    monkeypatch.chdir(folder.parent)
    uri, artifacts = store_locations(folder.name)
    assert uri == f"sqlite:///{folder.resolve() / 'mlflow.db'}"
    assert artifacts == (folder.resolve() / "artifacts").as_uri()


def test_a_sqlite_uri_is_kept_and_its_database_made(tmp_path):
    uri = f"sqlite:///{tmp_path / 'own.db'}"
    assert store_locations(uri) == (uri, None)  # the server-less default location is MLflow's
    assert (tmp_path / "own.db").is_file()


def test_a_database_uri_is_asked_whether_it_answers_and_no_folder_is_made(tmp_path, monkeypatch):
    # no folder is made for it (run from a scratch folder, where a version that took it for a
    # folder would make one); a server that does not answer is one line (test_daily_use.py: the
    # driver, other schemes)
    from conftest import free_port

    monkeypatch.chdir(tmp_path)
    port = free_port()  # nothing answers there
    with pytest.raises(UserInputError, match=f"no postgresql server answers at 127.0.0.1:{port}"):
        store_locations(f"postgresql://user@127.0.0.1:{port}/mlflow")
    assert list(tmp_path.iterdir()) == []


def test_checking_a_store_keeps_the_processs_open_connections_current(tmp_path):
    """Each job checks its store (`store_locations`) in a process whose MLflow connections to it
    are open: a sweep's jobs in one process, a notebook's client. Another process's runs must stay
    visible to them. Before, the check read the file's header with open() and close(), which
    dropped this process's SQLite locks: the other process's check then took itself for the
    last connection and removed the WAL under this one, which read a stale store from then on
    (and "database disk image is malformed": test_evidence.py's sweep run twice)."""
    import subprocess
    import sys

    uri, _ = store_locations(str(tmp_path / "mlruns"))
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("e")
    assert client.search_runs([experiment]) == []  # a connection of this process, pooled
    assert store_locations(str(tmp_path / "mlruns"))[0] == uri  # what the next job does
    # another process: a job's check, then its run (the check's own SQLite connection closes
    # first: the last connection to a database checkpoints its WAL and removes it)
    subprocess.run([sys.executable, "-c", "import sys; from mlflow.tracking import MlflowClient; "
                    "from cifar_sweep.tracking.experiments import store_locations; "
                    "store_locations(sys.argv[3]); MlflowClient(sys.argv[1]).create_run(sys.argv[2])",
                    uri, experiment, str(tmp_path / "mlruns")], check=True, timeout=120,
                   env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")})
    assert len(client.search_runs([experiment])) == 1


def test_a_new_experiment_is_made_with_its_kind_and_artifacts_in_the_folder(folder):
    client, experiment_id = open_experiment(_tracking(folder, "new-one"))
    experiment = client.get_experiment(experiment_id)
    assert experiment.name == "new-one"
    assert experiment.tags[EXPERIMENT_KIND] == MODEL_TRAINING  # the UI opens its runs table
    assert experiment.artifact_location == (folder / "artifacts").as_uri()
    # opened again: the same experiment, not a second one
    assert open_experiment(_tracking(folder, "new-one"))[1] == experiment_id


def test_an_older_experiment_without_its_kind_is_tagged(folder):
    client = MlflowClient(tracking_uri=store_locations(str(folder))[0])
    old_id = client.create_experiment("older")  # as an older version made it: no kind tag
    assert EXPERIMENT_KIND not in client.get_experiment(old_id).tags
    client, experiment_id = open_experiment(_tracking(folder, "older"))
    assert experiment_id == old_id
    assert client.get_experiment(old_id).tags[EXPERIMENT_KIND] == MODEL_TRAINING


def test_a_deleted_experiment_is_one_line_naming_the_setting(folder):
    client = MlflowClient(tracking_uri=store_locations(str(folder))[0])
    client.delete_experiment(client.create_experiment("gone"))
    with pytest.raises(UserInputError) as info:
        open_experiment(_tracking(folder, "gone"))
    message = str(info.value)
    assert message.startswith("tracking.experiment=gone:")
    assert "deleted" in message
    assert "\n" not in message


def _experiment(location: str):
    # what _check_artifact_location reads of an MLflow Experiment
    return SimpleNamespace(name="exp", artifact_location=location)


def test_artifacts_in_a_writable_folder_or_under_one_are_accepted(tmp_path):
    _check_artifact_location(_experiment(tmp_path.as_uri()), SERVER)
    _check_artifact_location(_experiment(str(tmp_path)), SERVER)  # a plain path, as well
    # not made yet: the nearest existing folder above it is where it will be made
    _check_artifact_location(_experiment((tmp_path / "not" / "yet").as_uri()), SERVER)


def test_artifacts_through_the_server_or_elsewhere_are_not_judged():
    for location in ("mlflow-artifacts:/1", "s3://bucket/1", ""):
        _check_artifact_location(_experiment(location), SERVER)


def test_artifacts_in_an_unwritable_folder_are_refused_in_one_line(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as root: a read-only folder is writable all the same")
        for path in (locked, locked / "missing" / "below"):  # there, or to be made in it
            with pytest.raises(UserInputError) as info:
                _check_artifact_location(_experiment(path.as_uri()), SERVER)
            message = str(info.value)
            assert message.startswith("tracking.experiment=exp:")
            assert path.as_uri() in message and SERVER in message
            assert "\n" not in message
    finally:
        locked.chmod(0o700)


def test_artifacts_where_a_file_stands_in_the_way_are_refused(tmp_path):
    # a file where the folder would be: nothing can be written there, whoever runs the job
    # (executable and writable, so that only its not being a folder refuses it, even as root)
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "a_file").chmod(0o777)
    for path in (tmp_path / "a_file", tmp_path / "a_file" / "below"):
        for location in (path.as_uri(), str(path)):  # a file URI or a plain path
            with pytest.raises(UserInputError) as info:
                _check_artifact_location(_experiment(location), SERVER)
            message = str(info.value)
            assert message.startswith("tracking.experiment=exp: ")
            assert location in message and SERVER in message and "cannot write" in message
            assert "\n" not in message


def test_a_file_uri_with_escaped_characters_is_read_as_its_path(tmp_path):
    # a folder with a space is %20 in its URI: judged by the real folder, which exists
    spaced = tmp_path / "with space"
    spaced.mkdir()
    (spaced / "in_the_way").write_text("x")
    assert "%20" in (spaced / "in_the_way").as_uri()
    with pytest.raises(UserInputError):
        _check_artifact_location(_experiment((spaced / "in_the_way").as_uri()), SERVER)
    _check_artifact_location(_experiment(spaced.as_uri()), SERVER)
