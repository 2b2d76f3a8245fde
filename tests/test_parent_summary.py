"""sweep/parent_summary.py: what a sweep's parent run carries, read back from a real local MLflow
store (SQLite): the table's files as artifacts (table/table.md, table/table.csv), each row's
numbers as metrics named by the row (`row/<label>/...`), the shared view of the runs table that
shows them, and figures only when asked.

The Table is built from hand-made frames (as test_statistics.py and test_selection.py do), not by
training: its runs need not exist in the store, only the parent run does.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from cifar_sweep.report import study_figures
from cifar_sweep.report.studies import Table
from cifar_sweep.sweep.parent_summary import (
    MAX_VIEW_CHARS,
    compare_view,
    log_on_parent,
    row_key,
    row_metrics,
)
from cifar_sweep.tracking.tags import COMPARE_VIEW, SHARED_VIEW
from conftest import hand_made_table

# label -> seed -> (test accuracy, weighted F1); two classes, so chance is 1.2 x 1/2 = 0.6
ROWS = {
    "0.005": {"0": (0.90, 0.88), "1": (0.94, 0.90)},  # the baseline, two seeds
    "0.05": {"0": (0.92, 0.91), "1": (0.96, 0.95), "2": (0.95, 0.93)},
    "1.0": {"0": (0.40, 0.30)},                         # diverged, one seed: at chance
}


def table_of(rows: dict[str, dict[str, tuple[float, float]]]) -> Table:
    """A table of hand-made runs of one sweep, rows named by lr.value; `0.005` the baseline."""
    return hand_made_table(
        {label: {seed: {"test_accuracy": acc, "test_f1_weighted": f1, "test_accuracy_0": acc,
                        "test_accuracy_1": acc} for seed, (acc, f1) in by_seed.items()}
         for label, by_seed in rows.items()}, "0.005", kind="Sweep")


def mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[MlflowClient, Path]:
    """One real store for the file (its schema migrations take seconds)."""
    root = tmp_path_factory.mktemp("store")
    return MlflowClient(tracking_uri=f"sqlite:///{root}/mlflow.db"), root


@pytest.fixture
def parent(store, request) -> tuple[MlflowClient, str]:
    """A fresh parent run in an experiment of the test's own (its artifacts in the tmp dir)."""
    client, root = store
    name = request.node.name
    exp = client.create_experiment(name[:200], artifact_location=str(root / "artifacts" / name))
    return client, client.create_run(exp, run_name="sweep-parent").info.run_id


def artifact_text(client: MlflowClient, run_id: str, path: str, tmp_path: Path) -> str:
    return Path(client.download_artifacts(run_id, path, str(tmp_path))).read_text()


# --- the metrics -------------------------------------------------------------------------------

def test_each_rows_numbers_are_metrics_named_by_the_row():
    numbers = row_metrics(table_of(ROWS))
    base_acc, base_acc_sd = mean_std([0.90, 0.94])
    base_f1, base_f1_sd = mean_std([0.88, 0.90])
    acc, acc_sd = mean_std([0.92, 0.96, 0.95])
    assert numbers.keys() == {
        "row/0.005/test_accuracy_mean", "row/0.005/test_accuracy_std",
        "row/0.005/test_f1_weighted_mean", "row/0.005/test_f1_weighted_std",
        "row/0.005/runs", "row/0.005/at_chance",
        "row/0.05/test_accuracy_mean", "row/0.05/test_accuracy_std",
        "row/0.05/test_f1_weighted_mean", "row/0.05/test_f1_weighted_std",
        "row/0.05/runs", "row/0.05/at_chance",
        # one seed: no std (a std of one number is no spread, it is unknown)
        "row/1.0/test_accuracy_mean", "row/1.0/test_f1_weighted_mean",
        "row/1.0/runs", "row/1.0/at_chance",
    }
    assert numbers["row/0.005/test_accuracy_mean"] == pytest.approx(base_acc)
    assert numbers["row/0.005/test_accuracy_std"] == pytest.approx(base_acc_sd)
    assert numbers["row/0.005/test_f1_weighted_mean"] == pytest.approx(base_f1)
    assert numbers["row/0.005/test_f1_weighted_std"] == pytest.approx(base_f1_sd)
    assert numbers["row/0.05/test_accuracy_mean"] == pytest.approx(acc)
    assert numbers["row/0.05/test_accuracy_std"] == pytest.approx(acc_sd)
    assert numbers["row/1.0/test_accuracy_mean"] == pytest.approx(0.40)
    assert numbers["row/1.0/test_f1_weighted_mean"] == pytest.approx(0.30)
    assert [numbers[f"row/{r}/runs"] for r in ROWS] == [2.0, 3.0, 1.0]
    # 0.40 < 1.2 x 1/2: the diverged row is flagged, the others are not
    assert [numbers[f"row/{r}/at_chance"] for r in ROWS] == [0.0, 0.0, 1.0]


@pytest.mark.parametrize("label, key", [
    ("0.005", "row/0.005/n"),
    ("optimizer=sgd lr.value=0.05", "row/optimizer_sgd lr.value_0.05/n"),  # `=`: refused by MLflow
    ("a,b", "row/a_b/n"),
    ("models/resnet", "row/models_resnet/n"),  # a `/` would nest the metric one level deeper
    ("c:\\x", "row/c__x/n"),
    ("", "row/_/n"),
    ("  ", "row/_/n"),
    ("..", "row/_/n"),   # `row/../n` would climb out of `row/`
    (".", "row/_/n"),
])
def test_a_rows_label_becomes_a_metric_name_mlflow_takes(label, key):
    assert row_key(label, "n") == key


def test_a_long_label_is_cut_to_mlflows_limit_on_a_name():
    key = row_key("x" * 400, "test_accuracy_mean")
    assert len(key) == 250 and key.startswith("row/xxx")


def test_every_odd_label_is_accepted_by_a_real_store(parent):
    # MLflow validates metric names: every name row_key makes must be one it stores
    client, run_id = parent
    labels = ["optimizer=sgd lr.value=0.05", "a,b;c", "models/resnet", "..", "", "x" * 400,
              "ünïcode Δ", "tab\there", "a:b|c?d*e"]
    keys = {row_key(label, "test_accuracy_mean") for label in labels}
    for key in keys:
        client.log_metric(run_id, key, 0.5)
    assert set(client.get_run(run_id).data.metrics) == keys


# --- what log_on_parent writes -----------------------------------------------------------------

def test_the_parent_carries_every_rows_numbers_as_metrics(parent):
    client, run_id = parent
    table = table_of(ROWS)
    log_on_parent(client, run_id, table, figures=False)
    logged = client.get_run(run_id).data.metrics
    assert logged.keys() == row_metrics(table).keys()
    for key, value in row_metrics(table).items():
        assert logged[key] == pytest.approx(value), key
    # one value each, at step 0: a column of the runs table, not a curve
    history = client.get_metric_history(run_id, "row/0.05/test_accuracy_mean")
    assert [(m.step, round(m.value, 6)) for m in history] == [(0, round(mean_std(
        [0.92, 0.96, 0.95])[0], 6))]


def test_the_parent_carries_the_tables_files_and_no_figures_unless_asked(parent, tmp_path):
    client, run_id = parent
    table = table_of(ROWS)
    log_on_parent(client, run_id, table, figures=False)
    assert [a.path for a in client.list_artifacts(run_id)] == ["table"]
    assert sorted(a.path for a in client.list_artifacts(run_id, "table")) == [
        "table/table.csv", "table/table.md"]
    # the Markdown is the table's own, as `report` prints it
    assert artifact_text(client, run_id, "table/table.md", tmp_path) == table.markdown()
    rows = list(csv.DictReader(io.StringIO(
        artifact_text(client, run_id, "table/table.csv", tmp_path))))
    assert len(rows) == len(ROWS)
    assert any("0.05" in json.dumps(row) for row in rows)


def test_figures_are_drawn_into_the_parents_figures_folder_when_asked(parent, monkeypatch,
                                                                      tmp_path):
    # the real drawing reads the rows' runs from the store and costs seconds of matplotlib: it
    # is replaced by one that records what it was asked and writes a file where it was told
    client, run_id = parent
    table = table_of(ROWS)
    asked = {}

    def draw(client_, rows, out, title, for_paper=True, setting=""):
        asked.update(rows=rows, title=title, for_paper=for_paper, setting=setting)
        (out / "curves.png").write_bytes(b"png")

    monkeypatch.setattr(study_figures, "write_all", draw)
    log_on_parent(client, run_id, table, figures=True)
    assert sorted(a.path for a in client.list_artifacts(run_id)) == ["figures", "table"]
    assert [a.path for a in client.list_artifacts(run_id, "figures")] == ["figures/curves.png"]
    assert [r.label for r in asked["rows"]] == list(ROWS)
    assert [r.at_chance for r in asked["rows"]] == [False, False, True]
    assert asked["title"] == table.figure_title() and asked["for_paper"] is False
    assert asked["setting"] == "lr.value"  # the figures name the setting the rows vary


def test_more_than_a_thousand_numbers_are_logged_in_batches(parent):
    # MLflow takes at most 1000 metrics a request: 250 rows of 4 numbers and more must all land
    client, run_id = parent
    rows = {"0.005": {"0": (0.9, 0.9)}}
    rows.update({f"{0.01 + i / 10000:.4f}": {"0": (0.8, 0.7)} for i in range(260)})
    table = table_of(rows)
    log_on_parent(client, run_id, table, figures=False)
    logged = client.get_run(run_id).data.metrics
    assert len(row_metrics(table)) > 1000
    assert logged.keys() == row_metrics(table).keys()


# --- the shared view ---------------------------------------------------------------------------

def view_of(client: MlflowClient, run_id: str) -> tuple[dict, list[str]]:
    run = client.get_run(run_id)
    envelope = json.loads(client.get_experiment(run.info.experiment_id).tags[SHARED_VIEW + run_id])
    return envelope, json.loads(envelope["state"])["selectedColumns"]


def test_the_view_shows_each_rows_accuracy_and_is_linked_from_the_parent(parent):
    client, run_id = parent
    link = log_on_parent(client, run_id, table_of(ROWS), figures=False)
    experiment_id = client.get_run(run_id).info.experiment_id
    assert link == f"#/experiments/{experiment_id}/runs?viewStateShareKey={run_id}"
    assert client.get_run(run_id).data.tags[COMPARE_VIEW] == link
    envelope, columns = view_of(client, run_id)
    # the accuracy means only, in the table's order, as the UI names a metric's column
    assert columns == [f"metrics.`row/{r}/test_accuracy_mean`" for r in ROWS]
    assert envelope["name"] == "sweep-parent"
    assert envelope["createdAt"] == envelope["updatedAt"] > 0


def test_the_view_holds_as_many_columns_as_fit_mlflows_limit_on_a_tag(parent):
    client, run_id = parent
    keys = [f"row/{'x' * 200}{i:04d}/test_accuracy_mean" for i in range(200)]
    compare_view(client, run_id, keys)
    run = client.get_run(run_id)
    text = client.get_experiment(run.info.experiment_id).tags[SHARED_VIEW + run_id]
    _, columns = view_of(client, run_id)
    assert len(text) <= MAX_VIEW_CHARS
    # the first keys, in order, as many as fit: one more would pass the limit
    assert 0 < len(columns) < len(keys)
    assert columns == [f"metrics.`{k}`" for k in keys[:len(columns)]]
    envelope, _ = view_of(client, run_id)
    one_more = json.dumps({**envelope, "state": json.dumps({"selectedColumns": [
        *columns, f"metrics.`{keys[len(columns)]}`"]})})
    assert len(one_more) > MAX_VIEW_CHARS
