"""MLflow: where runs go, the tag names every run carries, and one run's lifecycle from creation
(or reopening, to continue it) to FINISHED, FAILED or KILLED.

`tracking.uri` is either a URI (`http://host:5000`, `sqlite:///...`) or a local folder (default
`mlruns`), which then holds a SQLite database `mlflow.db` and the artifacts under `artifacts/`:
MLflow 3 no longer accepts plain file stores. Either is made ready (store.py) before a client
opens it: a SQLite store is created under a lock, a server must answer.
"""

from __future__ import annotations

import functools
import logging
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

import requests
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from cifar_sweep import faults
from cifar_sweep.errors import Pruned, UserInputError, Yielded
from cifar_sweep.tracking import store
from cifar_sweep.tracking.paging import all_runs

log = logging.getLogger(__name__)

GROUPS = ("model", "optimizer", "lr", "loss", "data", "augment")  # each a tag of every job

# Tag names, written here and read back by the sweep, the lifecycle checks and the report.
ROLE = "cifar_sweep.role"       # what a run is: one of the three below
ROLE_JOB = "job"                # a trained (or training) job
ROLE_SWEEP = "sweep"            # a sweep's parent run
ROLE_REFERENCE = "reference"    # a job of a sweep whose config had already finished: see SAME_AS
SAME_AS = "cifar_sweep.same_as"  # on a reference run: the id of the finished run it stands for
PARENT = "mlflow.parentRunId"
CONFIG_HASH = "config_hash"
SETTING_HASH = "setting_hash"    # the config hash without the seed: a table's row
CODE_VERSION = "code_version"    # the hash of the code parts below (code_version.py)
CODE_PART = "code."              # prefix: code.model, code.training, ... one hash per part
TORCH_VERSION = "torch_version"
PRECISION = "precision"          # what trainer.precision resolved to: fp32, bf16, fp16
DATA_FINGERPRINT = "data_fingerprint"
JOB_NUM = "job.num"
JOB_OVERRIDES = "job.overrides"
SWEEP_OVERRIDES = "sweep.overrides"
SWEEP_JOBS = "sweep.jobs"
SWEEP_VARYING = "sweep.varying"
SWEEP_FIRST_JOB = "sweep.first_job"  # its first job's overrides: the default baseline
SWEEP_TO_TRAIN = "sweep.to_train"   # the jobs a sweep launched (not finished before)
SWEEP_LAUNCHED = "sweep.launched"   # when it launched them (seconds since the epoch)
AHEAD = "cifar_sweep.plan.ahead"          # on a reference run the sweep wrote before launching
PEAK_MEMORY = "peak_memory"     # what the peak_memory_mb metric measured: process_rss, gpu_allocated
FAILURE = "failure_reason"
INTERRUPTED = "interrupted"      # the failure_reason (prefix) of a run that may be continued
OWNER_HOST = "owner.host"
OWNER_PID = "owner.pid"
OWNER_START = "owner.start"
OWNER_SLURM_JOB = "owner.slurm_job"          # on a cluster: the array job and task
OWNER_SLURM_RESTART = "owner.slurm_restart"  # how often SLURM has requeued it
HEARTBEAT = "heartbeat"
HEARTBEAT_TIMEOUT = "heartbeat.timeout_s"
TRIAL = "hpo.trial"              # on a search's job: its trial number in the Optuna study
TRIAL_STATE = "hpo.state"        # on a pruned trial's run: pruned
HPO_STUDY = "hpo.study"          # on a search's job: the Optuna study's name,
HPO_STUDY_UID = "hpo.study_uid"  # the id made when the study was created (a study made again
                                 # under the same name, after its storage was deleted, gets another)
HPO_STORAGE = "hpo.storage"      # and where it is stored
# MLflow 3's UI opens an experiment without this tag on its GenAI traces view, not the runs table
EXPERIMENT_KIND = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"


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
        return uri, None
    folder = Path(uri).expanduser().resolve()
    tracking_uri = f"sqlite:///{folder / 'mlflow.db'}"
    store.prepare_sqlite(folder / "mlflow.db", tracking_uri, uri)
    return tracking_uri, (folder / "artifacts").as_uri()


def open_store(tracking: DictConfig) -> MlflowClient:
    return MlflowClient(tracking_uri=store_locations(str(tracking.uri))[0])


def open_experiment(tracking: DictConfig) -> tuple[MlflowClient, str]:
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


@functools.cache  # once per process: a worker runs many jobs of one checkout
def git_commit() -> str:
    root = Path(__file__).resolve().parents[3]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def flatten(config: dict, prefix: str = "") -> dict[str, str]:
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat


@contextmanager
def tracked_run(client: MlflowClient, experiment_id: str, *, name: str, tags: dict[str, str],
                params: dict[str, str], resume_id: str | None = None,
                lock=None) -> Iterator[str]:
    """Create a run (or reopen `resume_id`, whose params are already logged) and yield its id;
    on leaving, mark it FINISHED, KILLED (Ctrl-C, `kill`: it may be continued) or FAILED with
    the reason, and let the exception go on. `lock` (store.claim_lock): acquired before the run
    is created and left held for the caller to release once it has claimed its config."""
    if resume_id is None:
        if lock is not None:
            lock.acquire()
        try:
            run_id = client.create_run(experiment_id, run_name=name[:250], tags=tags).info.run_id
            client.log_batch(run_id, params=[Param(k, v[:6000]) for k, v in params.items()])
        except BaseException:
            if lock is not None:
                lock.release()
            raise
    else:
        run_id = resume_id
        client.update_run(run_id, status="RUNNING", name=name[:250])
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        client.delete_tag(run_id, FAILURE)
    try:
        yield run_id
        if FAILURE in client.get_run(run_id).data.tags:  # a reason set while it ran (a sweep
            client.delete_tag(run_id, FAILURE)           # that ended first) is no longer true
        client.set_terminated(run_id, "FINISHED")
    except (KeyboardInterrupt, SystemExit):
        _close(client, run_id, "KILLED", INTERRUPTED)
        raise
    except Yielded:  # it stands aside for another run of its config: see yield_run
        raise
    except Pruned as exc:  # a search stopped it: KILLED, and said so; not continued later
        client.set_tag(run_id, TRIAL_STATE, "pruned")
        _close(client, run_id, "KILLED", str(exc))
        raise
    except Exception as exc:
        if out_of_time(exc):  # it may be continued, as a killed run
            _close(client, run_id, "KILLED", f"{INTERRUPTED}: {exc}"[:5000])
            raise
        lost = lost_server(client.tracking_uri, exc)
        if lost is not None:  # nothing can be written: see TrackingServerLost
            raise lost from exc
        store_folder = faults.store_folder(client.tracking_uri)
        fault = faults.classify(exc, [("tracking.uri", store_folder)] if store_folder else [])
        if fault is not None:  # a full disk, a read-only store, GPU memory: continued later
            # on a full store this write fails too: the run stays RUNNING, and the next start
            # closes it as KILLED (its process is gone), its checkpoint kept
            _close(client, run_id, "KILLED", f"{INTERRUPTED}: {fault}"[:5000])
            if fault is exc:
                raise
            raise fault from exc
        _close(client, run_id, "FAILED", f"{type(exc).__name__}: {exc}"[:5000])
        raise


def out_of_time(exc: BaseException) -> bool:
    """submitit's UncompletedJobError: its SIGUSR2 handler stopped a job at its time limit with
    no requeue left (hydra.launcher.max_num_timeout); the run can be continued like a killed one.
    (Matched by name: submitit is only there on a cluster.)"""
    return type(exc).__name__ == "UncompletedJobError"


class TrackingServerLost(Exception):
    """The tracking server stopped answering during a run. Its run stays RUNNING (the next start
    on this host finds its process gone and marks it KILLED, see lifecycle.close_ghosts) and its
    checkpoint is kept, so the same command continues it once the server is back."""


def lost_server(uri: str, exc: BaseException,
                kept: str = "the run's checkpoint is kept") -> TrackingServerLost | None:
    """The error to report when `exc` came from a tracking server that no longer answers."""
    if not uri.startswith(("http://", "https://")):
        return None
    if not isinstance(exc, (MlflowException, requests.RequestException)):
        return None
    problem = store.server_problem(uri)
    if problem is None:  # it answers: an ordinary failure
        return None
    return TrackingServerLost(f"lost the tracking server {uri}: {problem}; {kept}: run the same "
                              "command again when the server is back")


def _close(client: MlflowClient, run_id: str, status: str, reason: str) -> None:
    """Mark an ending run; if the store cannot take it, say so in one line and let the exception
    that ends the run be the one reported. (A run left RUNNING is closed by the next start.)"""
    try:
        client.set_tag(run_id, FAILURE, reason)
        client.set_terminated(run_id, status)
    except (MlflowException, requests.RequestException) as exc:
        log.warning("could not mark run %s %s: %s", run_id, status, str(exc).splitlines()[0][:300])


# --- what a job logs, besides its run's lifecycle ----------------------------------------------

def log_metrics(client: MlflowClient, run_id: str, values: dict, step: int,
                tags: dict[str, str] | None = None) -> None:
    """One batch: metrics at `step` (an epoch) and tags."""
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in values.items()],
                     tags=[RunTag(k, v) for k, v in (tags or {}).items()])


def logged_steps(client: MlflowClient, run_id: str, key: str) -> set[int]:
    return {m.step for m in client.get_metric_history(run_id, key)}


def log_reference(client: MlflowClient, experiment_id: str, name: str, tags: dict[str, str],
                  params: dict[str, str], original, step: int) -> None:
    """A run standing in a sweep for `original` (finished before, or training elsewhere): the UI
    shows the sweep whole, and tables read the original in its place."""
    ref_tags = {**tags, ROLE: ROLE_REFERENCE, SAME_AS: original.info.run_id}
    with tracked_run(client, experiment_id, name=name, tags=ref_tags, params=params) as ref_id:
        if original.data.metrics:
            log_metrics(client, ref_id, original.data.metrics, step)


def sweep_children(client: MlflowClient, parent: str, experiment_id: str | None = None,
                   running: bool = False) -> list:
    """Every run of the sweep whose parent run is `parent` (only its RUNNING ones: `running`),
    in the parent's experiment unless given: the one query for "this sweep's runs"."""
    if experiment_id is None:
        experiment_id = client.get_run(parent).info.experiment_id
    query = f"tags.`{PARENT}` = '{parent}'" + (" and attributes.status = 'RUNNING'" if running else "")
    return all_runs(client, [experiment_id], query)


def sweep_progress(client: MlflowClient, experiment_id: str, parent: str) -> tuple[int, int, int, float]:
    """(jobs the sweep launched, finished, failed or killed, seconds since it launched them):
    the reference runs it wrote before launching (finished before) are not counted."""
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


def yield_run(client: MlflowClient, run_id: str, winner_id: str, reference: bool) -> None:
    """A run that lost the claim on its config to `winner_id` (created first): in a sweep it stays
    as a reference to the winner, so that the sweep shows the job; alone it is deleted (no ghost)."""
    if reference:
        client.log_batch(run_id, tags=[RunTag(ROLE, ROLE_REFERENCE), RunTag(SAME_AS, winner_id)])
        client.set_terminated(run_id, "FINISHED")
    else:
        client.set_terminated(run_id, "KILLED")
        client.delete_run(run_id)
