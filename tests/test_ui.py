"""The MLflow UI in a real browser: `make ui` (conftest.make_ui) over a store holding a
sweep, the experiment page loaded by headless Chromium, the runs table read from the page."""

import re
import shutil
import subprocess

import pytest

from conftest import make_ui

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (Debian: apt-get install chromium)")]


def page(url: str) -> str:
    """The page's DOM once its scripts have run (headless Chromium, 30 s of virtual time)."""
    proc = subprocess.run([CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu",
                           "--disable-dev-shm-usage", "--virtual-time-budget=30000", "--dump-dom",
                           url], capture_output=True, text=True, timeout=180)
    return proc.stdout


def test_the_runs_table_shows_the_sweep_and_its_children(project):
    project.train("-m", "optimizer=sgd,adam", check=True)
    experiment = project.client.get_experiment_by_name("cifar-sweep").experiment_id
    with make_ui(f"STORE={project.store}") as ui:
        dom = page(f"{ui.base}/#/experiments/{experiment}?workflowType=machine_learning")
    # the runs table, not the GenAI overview: the sweep's parent row, named by its overrides,
    # and its two children counted under it (collapsed there until clicked)
    assert "sweep: data=synthetic trainer.epochs=1 trainer.num_threads=1 optimizer=sgd,adam" in dom
    text = re.sub(r"<[^>]+>", "", dom)  # the page's text, without its markup
    assert "3 matching runs" in text, re.findall(r".{40}matching.{40}", text)


def test_the_sweeps_parent_shows_each_rows_accuracy_and_the_figures(project):
    """The parent row compares at a glance: the link the sweep prints opens the runs table with a
    column per row's mean accuracy, the parent's number in it; the figures beside the table in
    the parent's artifacts."""
    proc = project.train("-m", "optimizer=sgd,adam", check=True)
    [link] = re.findall(r"compare its rows in the MLflow UI \(make ui\): "
                        r"http://127\.0\.0\.1:5000/(#/experiments/\S+)", proc.stdout)
    client = project.client
    experiment = client.get_experiment_by_name("cifar-sweep").experiment_id
    [parent] = [r for r in project.runs() if r.data.tags["cifar_sweep.role"] == "sweep"]
    accuracy = parent.data.metrics["row/adam/test_accuracy_mean"]
    with make_ui(f"STORE={project.store}") as ui:
        runs = page(f"{ui.base}/{link}")
        plain = page(f"{ui.base}/#/experiments/{experiment}?workflowType=machine_learning")
        artifacts = page(f"{ui.base}/#/experiments/{experiment}/runs/{parent.info.run_id}/artifacts")
    text = re.sub(r"<[^>]+>", " ", runs)
    assert "row/adam/test_accuracy_mean" in text and "row/sgd/test_accuracy_mean" in text, \
        re.findall(r".{60}row/.{60}", text)[:5] or text[-2000:]
    assert f"{accuracy:.4f}"[:5] in text, accuracy  # the parent's number, shown in its row
    # the view is the link's, not the UI's default: without it no such column
    assert "row/adam/test_accuracy_mean" not in re.sub(r"<[^>]+>", " ", plain)
    listed = re.sub(r"<[^>]+>", " ", artifacts)
    assert "figures" in listed and "table" in listed, listed[-2000:]
