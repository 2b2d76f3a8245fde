"""Where runs go: the store made ready (a SQLite file created once, a server that answers) and
the experiment opened, made if new, and checked (not deleted, writable, its artifacts reachable).

`tracking.uri` is either a URI (`http://host:5000`, `sqlite:///...`) or a local folder (default
`mlruns`), which then holds a SQLite database `mlflow.db` and the artifacts under `artifacts/`:
MLflow 3 no longer accepts plain file stores.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from cifar_sweep.errors import UserInputError
from cifar_sweep.tracking import publish, store
from cifar_sweep.tracking.tags import EXPERIMENT_KIND, MODEL_TRAINING


def store_locations(uri: str) -> tuple[str, str | None]:
    """(tracking URI, artifact location for new experiments or None to let the server decide),
    once the store is ready: a SQLite database exists with its schema, a server answers."""
    if uri.startswith(("http://", "https://")):
        store.check_server(uri)
        return uri, None
    if uri.startswith("sqlite:///"):
        db = store.sqlite_file(uri)
        if db is not None:
            store.prepare_sqlite(db, uri, uri)
        return uri, None
    if "://" in uri:
        store.check_uri(uri)
        return uri, None
    folder = Path(uri).expanduser().resolve()
    if folder.is_file():  # a database given without its scheme, or any other file
        refused = store.not_a_database(folder, uri)
        raise refused or UserInputError(
            f"tracking.uri={uri} is an SQLite file, not a store folder: write "
            f"tracking.uri=sqlite:///{folder}")
    tracking_uri = f"sqlite:///{folder / 'mlflow.db'}"
    store.prepare_sqlite(folder / "mlflow.db", tracking_uri, uri)
    return tracking_uri, (folder / "artifacts").as_uri()


def open_store(tracking: DictConfig) -> MlflowClient:
    """A client to read the store; a published store (`make publish-store`) is read through a
    temporary copy of it (`publish.working_copy`), so that reading never writes into the repo."""
    uri = str(tracking.uri)
    if "://" not in uri and publish.is_published(Path(uri).expanduser()):
        uri = str(publish.working_copy(Path(uri).expanduser()))
    return MlflowClient(tracking_uri=store_locations(uri)[0])


def open_experiment(tracking: DictConfig) -> tuple[MlflowClient, str]:
    if "://" not in str(tracking.uri) and publish.is_published(Path(str(tracking.uri)).expanduser()):
        raise UserInputError(
            f"tracking.uri={tracking.uri} is a published store (make publish-store): it is read "
            f"(make tables, report.py), not trained into; train into your working store and "
            f"publish it again")
    uri, artifact_location = store_locations(str(tracking.uri))
    client = MlflowClient(tracking_uri=uri)
    name = str(tracking.experiment)
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            client.create_experiment(name, artifact_location=artifact_location,
                                     tags={EXPERIMENT_KIND: MODEL_TRAINING})
        except MlflowException:  # another job created it first, or it cannot be created
            if client.get_experiment_by_name(name) is None:
                raise
        experiment = client.get_experiment_by_name(name)
        assert experiment is not None  # made here or by another job: raised above otherwise
    if experiment.lifecycle_stage == "deleted":
        raise UserInputError(
            f"tracking.experiment={name}: this experiment is deleted in the store; restore it "
            f"in the UI or choose another name"
        )
    # Made by an older version: tag it. On a server, tag it always: setting a tag needs the
    # permission to write in the experiment, as runs do, and this asks before any run exists.
    if EXPERIMENT_KIND not in experiment.tags or uri.startswith(("http://", "https://")):
        try:
            client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND, MODEL_TRAINING)
        except MlflowException as exc:
            if exc.error_code != "PERMISSION_DENIED":
                raise
            raise UserInputError(
                f"tracking.experiment={name}: the server at {uri} does not let "
                f"{store.who_asks(uri)} write in this experiment (HTTP 403); ask its owner or an "
                f"administrator for EDIT permission, or choose another tracking.experiment"
            ) from None
    if uri.startswith(("http://", "https://")):
        _check_artifact_location(experiment, uri)
    return client, experiment.experiment_id


def _check_artifact_location(experiment, uri: str) -> None:
    """An experiment whose artifacts live at a file path (made by local runs, or by a server
    started without --serve-artifacts) is written by the job itself, not through the server: a
    job on a machine without that path fails there only after training. Refuse it before the run
    unless this machine can write there (a shared file system)."""
    location = experiment.artifact_location or ""
    if location.startswith("file:"):
        path = Path(url2pathname(urlsplit(location).path))
    elif location.startswith("/"):
        path = Path(location)
    else:
        return  # mlflow-artifacts:/ (through the server), s3://, ...; or nothing to judge
    # the experiment's folder if it exists; else the nearest folder above it, where it will be made
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is not None and existing.is_dir() and os.access(existing, os.W_OK | os.X_OK):
        return
    raise UserInputError(
        f"tracking.experiment={experiment.name}: its artifacts live at the file path {location}, "
        f"which jobs write themselves, not through {uri}, and this machine cannot write there; "
        f"choose a new tracking.experiment (with a server that serves artifacts, its artifacts go "
        f"through the server), or run where that path is writable")

