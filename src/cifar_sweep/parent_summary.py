"""What a sweep's parent run carries, so that the MLflow UI compares sweeps and their settings at a
glance: the table (table/table.md, table/table.csv), each row's key numbers as metrics named by
the row (`row/<label>/test_accuracy_mean`, ...: columns of the runs table and of its compare
view), and the study's figures (figures/curves.png, confusion.png, per_class_accuracy.png)."""

from __future__ import annotations

import posixpath
import re
import tempfile
import time
from pathlib import Path

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from cifar_sweep import study_figures
from cifar_sweep.studies import ACCURACY, Table

# the row's numbers a parent carries: (metric of the table's statistics, suffix of the key)
ROW_NUMBERS = [(ACCURACY.metric, "test_accuracy"), ("test_f1_weighted", "test_f1_weighted")]
ROW = "row/"


def row_key(label: str, name: str) -> str:
    """`row/<label>/<name>`, with what MLflow refuses in a metric's name (`=`, `,`, a `/` that
    would nest, a colon on Windows) as `_`: `row/optimizer_sgd lr.value_0.05/...`."""
    clean = re.sub(r"[^\w.\- ]", "_", label).strip() or "_"
    key = f"{ROW}{clean}/{name}"[:250]
    return key if posixpath.normpath(key) == key else f"{ROW}_{clean.strip('.')}/{name}"[:250]


def row_metrics(table: Table) -> dict[str, float]:
    """Each row's mean (and, over more than one seed, std) of the key numbers; 1.0 at
    `row/<label>/at_chance` where the row is at chance."""
    out = {}
    for rec in table.records:
        for metric, name in ROW_NUMBERS:
            mean, std = rec.stats[metric]
            out[row_key(rec.label, f"{name}_mean")] = mean
            if len(rec.run_ids) > 1:
                out[row_key(rec.label, f"{name}_std")] = std
        out[row_key(rec.label, "runs")] = float(len(rec.run_ids))
        out[row_key(rec.label, "at_chance")] = float(rec.label in table.at_chance)
    return out


def log_on_parent(client: MlflowClient, parent_id: str, table: Table, figures: bool) -> None:
    """The table, the rows' metrics and (with `figures`) the figures, on the parent run."""
    now = int(time.time() * 1000)
    metrics = [Metric(k, v, now, 0) for k, v in row_metrics(table).items()]
    for start in range(0, len(metrics), 1000):  # MLflow takes at most 1000 metrics a batch
        client.log_batch(parent_id, metrics=metrics[start:start + 1000])
    with tempfile.TemporaryDirectory() as tmp:
        table.write_tables(Path(tmp) / "table")
        client.log_artifacts(parent_id, f"{tmp}/table", "table")
        if figures:
            out = Path(tmp) / "figures"
            out.mkdir()
            study_figures.write_all(client, table.figure_rows(), out, table.figure_title(),
                                    for_paper=False)
            client.log_artifacts(parent_id, str(out), "figures")
