"""Each data fingerprint's test images, logged once into the store, so that a report made elsewhere
(offline, without `data.root`) draws the images behind a difference from the store alone.

One run per fingerprint in the experiment EXPERIMENT (tagged `data_fingerprint`, no role: no
table or sweep reads it as a job), holding `test_images.npz`: `images` (uint8, N x 3 x H x W,
about 31 MB for CIFAR-10's 10,000), `label`, `index` (each image's position in the full test set,
as the runs' predictions name it) and `classes`. The first job of a fingerprint writes it; the
others find it and write nothing (one query). Two jobs that start together may both write one:
readers take the oldest finished.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from cifar_sweep.tracking import tags as t

log = logging.getLogger(__name__)

EXPERIMENT = "cifar_sweep.test_images"
ARTIFACT = "test_images.npz"
WRITING_S = 600  # a RUNNING one younger than this is being written: not written again


def _runs(client, fingerprint: str) -> list:
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        return []
    return client.search_runs([experiment.experiment_id],
                              f"tags.`{t.DATA_FINGERPRINT}` = '{fingerprint}'",
                              order_by=["attributes.start_time ASC"], max_results=50)


def log_once(client, store_uri: str, fingerprint: str, images, labels, classes: list[str],
             index=None) -> bool:
    """Log the test images of `fingerprint` unless the store holds them (or a job is writing
    them); `store_uri`: the job's `tracking.uri` (a folder store's artifacts go inside it).
    Returns whether this call wrote them."""
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is not None and experiment.lifecycle_stage == "deleted":
        # someone deleted it in the UI: a finished training run is not failed over its figures
        log.warning("the experiment %s is deleted: the test images of %s are not logged (restore "
                    "it for the report's flipped-images figure)", EXPERIMENT, fingerprint)
        return False
    now_ms = time.time() * 1000
    for run in _runs(client, fingerprint):
        if run.info.status == "FINISHED" or (
                run.info.status == "RUNNING" and now_ms - run.info.start_time < WRITING_S * 1000):
            return False
    from cifar_sweep.tracking.experiments import open_experiment

    client, experiment_id = open_experiment(OmegaConf.create(
        {"uri": store_uri, "experiment": EXPERIMENT}))
    images = np.asarray(images, dtype=np.uint8)
    n = len(images)
    columns = {"images": images, "label": np.asarray(labels).astype(np.int16),
               "index": (np.arange(n) if index is None else np.asarray(index)).astype(np.int32),
               "classes": np.asarray(classes, dtype=str)}
    run_id = client.create_run(experiment_id, run_name=f"test images {fingerprint}",
                               tags={t.DATA_FINGERPRINT: fingerprint}).info.run_id
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / ARTIFACT
            np.savez(path, **columns)  # type: ignore[arg-type]
            client.log_artifact(run_id, str(path))
        client.set_terminated(run_id, "FINISHED")
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    log.info("logged the test images of %s once into the store (%.0f MB)", fingerprint,
             images.nbytes / 1e6)
    return True


def read(client, fingerprint: str) -> dict[str, np.ndarray] | None:
    """The test images of `fingerprint` from the store (the oldest finished copy), or None."""
    from cifar_sweep.tracking.predictions import read_artifact

    for run in _runs(client, fingerprint):
        if run.info.status == "FINISHED":
            return read_artifact(run.info.artifact_uri, ARTIFACT, client.tracking_uri)
    return None
