"""What a sweep's parent run carries, so that the MLflow UI compares sweeps and their settings at a
glance: the table (table/table.md, table/table.csv), each row's key numbers as metrics named by
the row (`row/<label>/test_accuracy_mean`, ...: columns of the runs table and of its compare
view), the study's figures (figures/curves.png, confusion.png, per_class_accuracy.png), and a
shared view of the runs table with those columns shown (`compare_view`)."""

from __future__ import annotations

import json
import posixpath
import re
import tempfile
import time
from pathlib import Path

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from cifar_sweep.report import study_figures
from cifar_sweep.report.rows import ACCURACY
from cifar_sweep.report.studies import Table
from cifar_sweep.tracking.tags import COMPARE_VIEW, SHARED_VIEW

# the row's numbers a parent carries: (metric of the table's statistics, suffix of the key)
ROW_NUMBERS = [(ACCURACY.metric, "test_accuracy"), ("test_f1_weighted", "test_f1_weighted")]
ROW = "row/"
# MLflow's UI (3.17) keeps named views of an experiment's runs table (its Views menu) in the
# experiment's tags `mlflow.sharedViewState.<key>`, as {name, createdAt, updatedAt, state}, `state`
# the view as JSON; `#/experiments/<id>/runs?viewStateShareKey=<key>` opens one. Its runs table
# shows no metric columns by default, so without such a view the rows' numbers are hidden.
# (SHARED_VIEW: that prefix; COMPARE_VIEW: the parent's tag with the link, tracking/tags.py)
MAX_VIEW_CHARS = 20000  # MLflow's limit on an experiment tag's value


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


def compare_view(client: MlflowClient, parent_id: str, keys: list[str]) -> str:
    """A named view of the experiment's runs table with a column per key (as many as fit
    MLflow's limit on a tag), its key the parent run's id; returns the part of the UI's URL that
    opens it (`#/experiments/<id>/runs?viewStateShareKey=<parent>`), also tagged on the parent."""
    parent = client.get_run(parent_id)
    now = int(time.time() * 1000)

    def envelope(columns: list[str]) -> str:
        return json.dumps({"name": (parent.info.run_name or parent_id)[:200], "createdAt": now,
                           "updatedAt": now, "state": json.dumps({"selectedColumns": columns})})

    columns: list[str] = []
    for key in keys:
        if len(envelope([*columns, f"metrics.`{key}`"])) > MAX_VIEW_CHARS:
            break
        columns.append(f"metrics.`{key}`")
    experiment_id = parent.info.experiment_id
    client.set_experiment_tag(experiment_id, SHARED_VIEW + parent_id, envelope(columns))
    link = f"#/experiments/{experiment_id}/runs?viewStateShareKey={parent_id}"
    client.set_tag(parent_id, COMPARE_VIEW, link)
    return link


def log_on_parent(client: MlflowClient, parent_id: str, table: Table, figures: bool) -> str:
    """The table, the rows' metrics, the view comparing them and (with `figures`) the figures,
    on the parent run; returns the view's link (`compare_view`)."""
    now = int(time.time() * 1000)
    numbers = row_metrics(table)
    metrics = [Metric(k, v, now, 0) for k, v in numbers.items()]
    for start in range(0, len(metrics), 1000):  # MLflow takes at most 1000 metrics a batch
        client.log_batch(parent_id, metrics=metrics[start:start + 1000])
    link = compare_view(client, parent_id,
                        [k for k in numbers if k.endswith(f"/{ROW_NUMBERS[0][1]}_mean")])
    with tempfile.TemporaryDirectory() as tmp:
        table.write_tables(Path(tmp) / "table")
        client.log_artifacts(parent_id, f"{tmp}/table", "table")
        if figures:
            out = Path(tmp) / "figures"
            out.mkdir()
            study_figures.write_all(client, table.figure_rows(), out, table.figure_title(),
                                    for_paper=False, setting=table.setting())
            client.log_artifacts(parent_id, str(out), "figures")
    return link
