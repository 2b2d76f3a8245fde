"""report/epochs_run.py: how long a table's runs trained, on hand-made runs: the Epochs column
(the cap without early stopping; else mean (range) of the epochs run and the runs that reached
the cap), and the caption's budget ("early-stopped (patience P) within E epochs")."""

from __future__ import annotations

import pandas as pd

from cifar_sweep.report import epochs_run
from cifar_sweep.report.cells import cells, csv_records
from conftest import hand_made_table


def run(stopped: int | None, reason: str | None, patience: str = "3", cap: str = "10",
        accuracy: float = 0.5) -> dict:
    out = {"test_accuracy": accuracy, "trainer.epochs": cap, "trainer.early_stop.patience": patience}
    if stopped is not None:
        out["stopped_epoch"] = float(stopped)  # as MLflow gives a metric back
    if reason is not None:
        out["stop_reason"] = reason
    return out


def epochs_cells(table) -> dict[str, str]:
    header, rows, _ = cells(table.records, table.axis_title)
    at = header.index("Epochs")
    return {row[0].removesuffix(" (baseline)"): row[at] for row in rows}


def test_early_stopped_rows_show_the_epochs_run_and_the_runs_that_hit_the_cap():
    table = hand_made_table({
        "0.01": {"0": run(6, "early_stop"), "1": run(8, "early_stop"), "2": run(10, "epochs")},
        "0.02": {"0": run(4, "early_stop"), "1": run(4, "early_stop")},
        "0.03": {"0": run(10, "early_stop")},  # stopped by patience exactly at the cap
    }, baseline="0.01")
    assert epochs_cells(table) == {
        "0.01": f"{(6 + 8 + 10) / 3:.1f} (6-10), not converged (1 of 3)",
        "0.02": "4", "0.03": "10"}
    assert table.length == "early-stopped (patience 3) within 10 epochs"
    assert "early-stopped (patience 3) within 10 epochs" in table.caption()
    assert "early-stopped (patience 3) within 10 epochs" in table.budget
    assert any(n.startswith("Early stopping:") for n in table.caption_notes())
    csv = {r["setting"]: r["epochs_run"] for r in csv_records(table.records, table.data)}
    assert csv == {"lr.value=0.01": "6 8 10", "lr.value=0.02": "4 4", "lr.value=0.03": "10"}


def test_without_early_stopping_the_cap_as_before():
    """Runs from before early stopping (no patience, no stopped_epoch) and runs with it off."""
    old = {"test_accuracy": 0.5, "trainer.epochs": "30"}
    table = hand_made_table({"0.01": {"0": old, "1": old},
                             "0.02": {"0": run(30, "epochs", patience="None", cap="30")}},
                            baseline="0.01")
    assert epochs_cells(table) == {"0.01": "30", "0.02": "30"}
    assert table.length == "30 epochs per run"
    assert not any(n.startswith("Early stopping:") for n in table.caption_notes())
    assert "epochs_run" not in csv_records(table.records, table.data)[0]


def test_a_run_that_logged_no_stopped_epoch_counts_its_cap():
    runs = pd.DataFrame([run(None, None, cap="12"), run(5, "early_stop", cap="12")])
    length = epochs_run.of_runs(runs)
    assert length.ran == [12, 5] and length.reached_cap == 1
    assert epochs_run.cell(length) == "8.5 (5-12), not converged (1 of 2)"


def test_budget_of_mixed_caps_and_patience():
    a = epochs_run.Length(["100"], [40], ["10"])
    b = epochs_run.Length(["50"], [20], ["5"])
    off = epochs_run.Length(["100"], [100])
    assert epochs_run.budget([a, b]) == "early-stopped (patience 5/10) within 50/100 epochs"
    assert epochs_run.budget([a, off]) == ("early-stopped (patience 10) within 100 epochs "
                                          "(rows without early stopping: all of them)")
    assert epochs_run.budget([epochs_run.Length(["1"])]) == "1 epoch per run"
