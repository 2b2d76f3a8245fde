"""MLflow: where runs go, the sweep's parent run, and what every run is tagged with.

`tracking.uri` is either a URI (`http://host:5000`, `sqlite:///...`) or a local folder (default
`mlruns`), which then holds a SQLite database `mlflow.db` and the artifacts under `artifacts/`:
MLflow 3 no longer accepts plain file stores.
"""

from __future__ import annotations

import atexit
import logging
import subprocess
import sys
from pathlib import Path

from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from mlflow.entities import Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from cifar_sweep.errors import UserInputError

log = logging.getLogger(__name__)

PARENT_FILE = "mlflow_parent_run_id"  # in the sweep folder: how jobs (in any process) find their parent
GROUPS = ("model", "optimizer", "lr", "loss", "data", "augment")


def store_locations(uri: str) -> tuple[str, str | None]:
    """(tracking URI, artifact location for new experiments or None to let the server decide)."""
    if "://" in uri:
        return uri, None
    folder = Path(uri).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}", (folder / "artifacts").as_uri()


def open_store(tracking: DictConfig) -> MlflowClient:
    return MlflowClient(tracking_uri=store_locations(str(tracking.uri))[0])


def open_experiment(tracking: DictConfig) -> tuple[MlflowClient, str]:
    uri, artifact_location = store_locations(str(tracking.uri))
    client = MlflowClient(tracking_uri=uri)
    name = str(tracking.experiment)
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client, client.create_experiment(name, artifact_location=artifact_location)
        except MlflowException:  # another job created it first
            experiment = client.get_experiment_by_name(name)
    if experiment.lifecycle_stage == "deleted":
        raise UserInputError(
            f"tracking.experiment={name}: this experiment is deleted in the store; restore it "
            f"in the UI or choose another name"
        )
    return client, experiment.experiment_id


def git_commit() -> str:
    root = Path(__file__).resolve().parents[2]
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


def sweep_job_overrides(config: DictConfig) -> list[list[str]]:
    """The override list of every job the basic sweeper will launch, as it computes them."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    params = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
    params += list(config.hydra.overrides.task)
    parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
    batches = BasicSweeper.split_arguments(parser.parse_overrides(params), None)
    return [job for batch in batches for job in batch]


class MlflowSweepCallback(Callback):
    """Checks every job of a sweep before any trains, then holds one parent run for the sweep."""

    def __init__(self) -> None:
        self.client: MlflowClient | None = None
        self.parent_id: str | None = None
        self.jobs = 0

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        from hydra.utils import instantiate

        from cifar_sweep.data import load_dataset
        from cifar_sweep.validate import check_config

        loader = GlobalHydra.instance().config_loader()
        jobs = sweep_job_overrides(config)
        try:
            sources = {}
            for overrides in jobs:
                job_config = loader.load_sweep_config(config, overrides)
                check_config(job_config)
                sources[OmegaConf.to_yaml(job_config.data)] = job_config.data
            # decode (or download) each data source once, here, before parallel workers start;
            # they then read the disk cache, and in-process jobs the copy in memory
            for data in sources.values():
                load_dataset(instantiate(data.source), data.cache_dir)
            self.client, experiment_id = open_experiment(config.tracking)
        except UserInputError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        sweep = " ".join(config.hydra.overrides.task) or "(no overrides)"
        values: dict[str, set[str]] = {}
        for overrides in jobs:
            for override in overrides:
                key, _, value = override.partition("=")
                values.setdefault(key, set()).add(value)
        varying = [k for k, v in values.items() if len(v) > 1]
        run = self.client.create_run(
            experiment_id,
            run_name=f"sweep: {sweep}"[:250],
            tags={"cifar_sweep.role": "sweep", "sweep.overrides": sweep,
                  "sweep.jobs": str(len(jobs)), "sweep.varying": " ".join(varying),
                  "sweep.dir": str(sweep_dir.resolve()),
                  "study.name": str(config.study.name or ""),
                  "study.baseline": str(config.study.baseline or ""),
                  "git_commit": git_commit(), "mlflow.source.name": "src/train.py"},
        )
        self.parent_id = run.info.run_id
        self.jobs = len(jobs)
        self.client.log_batch(self.parent_id, params=[
            Param("sweep.overrides", sweep[:6000]), Param("sweep.jobs", str(len(jobs)))])
        (sweep_dir / PARENT_FILE).write_text(self.parent_id)
        atexit.register(self._close, "FAILED")  # if the sweep is interrupted or exits early

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        children = self.client.search_runs(
            [self.client.get_run(self.parent_id).info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{self.parent_id}'", max_results=10000,
        )
        finished = [c for c in children if c.info.status == "FINISHED"]
        # a job that stopped before creating its run counts as failed too
        failed = self.jobs - len(finished)
        self._close("FAILED" if failed else "FINISHED")
        if failed:
            names = ", ".join(c.info.run_name for c in children if c.info.status != "FINISHED")
            print(f"error: {failed} of {self.jobs} jobs failed: {names or 'see the log above'}",
                  file=sys.stderr)
            sys.exit(1)

    def _close(self, status: str) -> None:
        if not self.parent_id or self.client.get_run(self.parent_id).info.status != "RUNNING":
            return
        # jobs whose worker process was killed could not close their own runs
        experiment_id = self.client.get_run(self.parent_id).info.experiment_id
        for child in self.client.search_runs(
                [experiment_id], f"tags.mlflow.parentRunId = '{self.parent_id}' "
                                 "and attributes.status = 'RUNNING'"):
            self.client.set_tag(child.info.run_id, "failure_reason", "sweep ended before the job")
            self.client.set_terminated(child.info.run_id, "KILLED")
        self.client.set_terminated(self.parent_id, status)


def parent_run_id(sweep_dir: str) -> str | None:
    path = Path(sweep_dir) / PARENT_FILE
    return path.read_text().strip() if path.is_file() else None
