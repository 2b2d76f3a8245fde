"""A run's test predictions as one artifact, `predictions.npz`, written once at the run's end and
read back from any store (a folder, a SQLite URI, a server), following a reference run to the
run it stands for.

The file is a plain NumPy archive, readable without this package (`numpy.load`), one entry per
column, one row per test example in the test set's fixed order:

- `index` (int32): the example's position in the full test set (also when a subset is tested);
- `label`, `predicted` (int16; int32 beyond 32,767 classes): its class and the argmax of the
  logits (a tie: the lower class);
- `probabilities` (float16, N x C): the softmax of the logits, unless
  `tracking.predictions_probabilities=false` (a large class count), then absent;
- `classes` (str, C): the class names.

Why float16: 10 classes x 10,000 images is 200 KB (the whole file 282 KB), two significant
digits more than a table uses (the ensemble averages them in float64). The run carries the tag
`predictions` naming the artifact, so that a table knows which runs have one without asking the
artifact store.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import numpy as np

from cifar_sweep.tracking import tags as t

ARTIFACT = "predictions.npz"
MAX_HOPS = 5  # reference -> original: one hop; a few more in case a reference stands for one


def arrays(logits, labels, classes: list[str], index=None,
           probabilities: bool = True) -> dict[str, np.ndarray]:
    """The artifact's columns from a test evaluation's logits (N x C, a tensor or an array) and
    labels (N). `index`: the examples' positions in the full test set (None: 0..N-1)."""
    logits = np.asarray(logits.float() if hasattr(logits, "float") else logits, dtype=np.float32)
    classes_type = np.int16 if len(classes) <= np.iinfo(np.int16).max else np.int32
    labels = np.asarray(labels).astype(classes_type)
    n = len(labels)
    positions = np.arange(n, dtype=np.int32) if index is None else \
        np.asarray(index).astype(np.int32)
    if positions.shape != (n,) or logits.shape[0] != n:
        raise ValueError(f"predictions: {n} labels, {logits.shape[0]} rows of logits and "
                         f"{positions.shape[0]} indices; all three must be one per test example")
    out = {"index": positions, "label": labels,
           "predicted": logits.argmax(1).astype(classes_type),
           "classes": np.asarray(classes, dtype=str)}
    if probabilities:
        shifted = logits - logits.max(1, keepdims=True)  # a stable softmax
        exp = np.exp(shifted)
        out["probabilities"] = (exp / exp.sum(1, keepdims=True)).astype(np.float16)
    return out


def to_bytes(columns: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    # not compressed: float16 softmax gains little, and reads slower (numpy's stub types
    # **arrays as its allow_pickle flag)
    np.savez(buffer, **columns)  # type: ignore[arg-type]
    return buffer.getvalue()


def log(client, run_id: str, logits, labels, classes: list[str], index=None,
        probabilities: bool = True) -> dict[str, np.ndarray]:
    """Log the run's predictions (see the module) and tag the run; returns the columns."""
    columns = arrays(logits, labels, classes, index, probabilities)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ARTIFACT
        path.write_bytes(to_bytes(columns))
        client.log_artifact(run_id, str(path))
    client.set_tag(run_id, t.PREDICTIONS, ARTIFACT)
    return columns


def original_run(client, run_id: str):
    """The run that holds `run_id`'s results: itself, or the run a reference stands for."""
    run = client.get_run(run_id)
    for _ in range(MAX_HOPS):
        tags = run.data.tags
        if tags.get(t.ROLE) != t.ROLE_REFERENCE or not tags.get(t.SAME_AS):
            return run
        run = client.get_run(tags[t.SAME_AS])
    return run


def read(client, run_id: str, run=None) -> dict[str, np.ndarray] | None:
    """The columns of the run's predictions (following a reference), or None where the run
    logged none (made before predictions were kept). `run`: the run, if already fetched."""
    run = original_run(client, run_id) if run is None else run
    artifact = run.data.tags.get(t.PREDICTIONS)
    if not artifact:
        return None
    return read_artifact(run.info.artifact_uri, artifact, client.tracking_uri)


def read_artifact(artifact_uri: str, artifact: str, tracking_uri: str) -> dict[str, np.ndarray]:
    """One run's predictions file from its artifact store: a local file read where it is,
    anything else (a server) downloaded into a temporary folder first."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    # a table reads a file per run: MLflow's progress bar per download would fill the terminal
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    repo = get_artifact_repository(artifact_uri, tracking_uri=tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        path = repo.download_artifacts(artifact, dst_path=tmp)
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}


def frame(columns: dict[str, np.ndarray]):
    """The columns as a DataFrame: index, label, predicted, and p_0 ... p_<C-1> where kept;
    `attrs["classes"]`: the class names."""
    import pandas as pd

    out = pd.DataFrame({name: columns[name] for name in ("index", "label", "predicted")})
    probabilities = columns.get("probabilities")
    if probabilities is not None:
        # the float16 values exactly, as float32: pandas warns of an overflow printing float16
        out = pd.concat([out, pd.DataFrame(
            probabilities.astype(np.float32),
            columns=[f"p_{c}" for c in range(probabilities.shape[1])])], axis=1)
    out.attrs["classes"] = [str(c) for c in columns.get("classes", [])]
    return out
