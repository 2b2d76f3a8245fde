"""What MLflow itself shows of a run: its data splits as dataset inputs (the UI's Datasets
column), system metrics while it trains (CPU, memory, disk, network; GPU where pynvml finds
one) and its best-on-validation weights as an MLflow model
(`mlflow.pytorch.load_model("runs:/<run id>/model")`). docs/mlflow.md says what each costs.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import cast

import numpy as np
import torch
from mlflow.entities import Dataset as DatasetEntity
from mlflow.entities import DatasetInput, InputTag, LoggedModelOutput
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT
from omegaconf import DictConfig, OmegaConf
from torch import nn

from cifar_sweep.data import Dataset

log = logging.getLogger(__name__)

MODEL_PATH = "model"     # the run's artifact folder holding the MLflow model


# --- datasets ---------------------------------------------------------------------------------

def dataset_inputs(cfg: DictConfig, dataset: Dataset) -> list[DatasetInput]:
    """The train, validation and test splits as MLflow dataset inputs. Name: `data.title`;
    digest: the data's fingerprint, and for train/validation also the split that made them
    (`trainer.val_fraction`, `data.split_seed`), so that each split's digest names its images."""
    title = str(cfg.data.get("title") or cfg.data.get("name") or "data")
    fingerprint = dataset.fingerprint.rsplit("-", 1)[-1]
    root = cfg.data.get("root")
    source: dict[str, object]
    if root:
        source_type, source = "local", {"uri": Path(str(root)).expanduser().resolve().as_uri()}
    else:  # generated (data=synthetic): the source is its generator's settings
        source_type = "code"
        source = {"tags": {str(k): str(v) for k, v in cast(dict, OmegaConf.to_container(
            cfg.data.source, resolve=True)).items()}}
    val_fraction, split_seed = float(cfg.trainer.val_fraction), int(cfg.data.split_seed)
    n_val = max(1, round(len(dataset.train) * val_fraction))
    sizes = {"train": len(dataset.train) - n_val, "validation": n_val, "test": len(dataset.test)}
    inputs = []
    for context, count in sizes.items():
        digest = fingerprint[:20]
        if context != "test":
            split = f"{dataset.fingerprint} {context} {val_fraction} {split_seed}"
            digest += "-" + hashlib.sha256(split.encode()).hexdigest()[:8]
        profile = {"images": count, "classes": len(dataset.classes),
                   "data_fingerprint": dataset.fingerprint}
        if context != "test":
            profile.update(val_fraction=val_fraction, split_seed=split_seed)
        entity = DatasetEntity(name=title[:500], digest=digest, source_type=source_type,
                               source=json.dumps(source), profile=json.dumps(profile))
        inputs.append(DatasetInput(entity, [InputTag(MLFLOW_DATASET_CONTEXT, context)]))
    return inputs


# --- system metrics ---------------------------------------------------------------------------

@contextmanager
def system_metrics(enabled: bool, client: MlflowClient, run_id: str,
                   resume: bool = False) -> Iterator[None]:
    """MLflow's system-metrics monitor on the run while the block runs: a thread sampling every
    10 s (MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL changes it), logged as `system/*` metrics."""
    monitor = None
    if enabled:
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            monitor = SystemMetricsMonitor(run_id, resume_logging=resume,
                                           tracking_uri=client.tracking_uri)
            monitor.start()
        except Exception as exc:  # psutil missing, an odd platform: the run goes on without
            log.warning("no system metrics: %s", exc)
            monitor = None
    try:
        yield
    finally:
        if monitor is not None:
            monitor.finish()


def log_inputs(client: MlflowClient, run_id: str, inputs: list, tries: int = 3) -> None:
    """MLflow's SQL store inserts a dataset it has not seen, keyed by experiment, name and digest:
    jobs starting together on one experiment race to insert the same one, and the losers get
    UNIQUE constraint errors (seen with 4 jobs at once on SQLite). Again, the row exists and the
    input only links to it."""
    for attempt in range(tries):
        try:
            client.log_inputs(run_id, datasets=inputs)
            return
        except MlflowException as exc:
            if "UNIQUE constraint" not in str(exc) and "IntegrityError" not in str(exc) \
                    or attempt == tries - 1:
                raise
            time.sleep(0.2 * (attempt + 1))


@contextmanager
def recorded(cfg: DictConfig, client: MlflowClient, run_id: str, dataset: Dataset,
             resumed: bool = False) -> Iterator[None]:
    """Around a run's training: its dataset inputs logged first, system metrics while it trains."""
    log_inputs(client, run_id, dataset_inputs(cfg, dataset))
    with system_metrics(bool(cfg.tracking.get("system_metrics", True)), client, run_id, resumed):
        yield


# --- the model --------------------------------------------------------------------------------

class ImageClassifier(nn.Module):
    """The trained network with its input normalisation: uint8 images (N x 3 x H x W, as the
    data's splits hold them) in, class logits out."""

    mean: torch.Tensor  # buffers, registered below
    std: torch.Tensor

    def __init__(self, net: nn.Module, mean: list[float], std: list[float]):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net((images.float() / 255 - self.mean) / self.std)


def requirements() -> list[str]:
    """Pinned from this environment, so that logging never spends seconds inferring them."""
    import mlflow
    import torchvision

    return [f"torch=={torch.__version__.split('+')[0]}",
            f"torchvision=={torchvision.__version__.split('+')[0]}",
            f"mlflow=={mlflow.__version__}"]


def log_model(client: MlflowClient, run_id: str, model: nn.Module, cfg: DictConfig,
              dataset: Dataset, step: int) -> str:
    """The run's `model`: an MLflow logged model (the UI's "Logged models"), its output at
    `step`; `mlflow.pytorch.load_model("runs:/<run id>/model")` loads it. Its id."""
    with tempfile.TemporaryDirectory() as tmp:
        save_model(Path(tmp) / MODEL_PATH, model, cfg, dataset)
        experiment_id = client.get_run(run_id).info.experiment_id
        logged = client.create_logged_model(experiment_id, name=MODEL_PATH, source_run_id=run_id,
                                            model_type="pytorch")
        client.log_model_artifacts(logged.model_id, str(Path(tmp) / MODEL_PATH))
        client.finalize_logged_model(logged.model_id, "READY")
    client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step)])
    return logged.model_id


def save_model(path: Path, model: nn.Module, cfg: DictConfig, dataset: Dataset) -> None:
    """An MLflow PyTorch model of `model` (its weights as they are: the best on validation once
    `fit` returns) at `path`.
    Pickled, not `pt2` (MLflow's default, torch.export's graph: 1-7 s a run against 0.02-1 s,
    docs/mlflow.md): loading it needs this package importable (`pip install -e .`), as the
    runs themselves do, and unpickles what this project's own runs wrote."""
    import mlflow.pytorch
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    net = copy.deepcopy(getattr(model, "_orig_mod", model)).cpu().eval()  # torch.compile's wrapper
    net = net.to(memory_format=torch.contiguous_format)
    classifier = ImageClassifier(net, list(cfg.data.mean), list(cfg.data.std)).eval()
    shape = (-1, *dataset.test.images.shape[1:])
    signature = ModelSignature(  # written out: no forward pass, no example to store
        inputs=Schema([TensorSpec(np.dtype(np.uint8), shape, "images")]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, len(dataset.classes)), "logits")]))
    quiet = logging.getLogger("mlflow.pytorch")  # its warning on pickles, once a run: said here
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        mlflow.pytorch.save_model(classifier, str(path), signature=signature,
                                  serialization_format="pickle", pip_requirements=requirements(),
                                  metadata={"classes": list(dataset.classes),
                                            "data_fingerprint": dataset.fingerprint,
                                            "input": "uint8 images N x C x H x W, unnormalised"})
    finally:
        quiet.setLevel(level)
