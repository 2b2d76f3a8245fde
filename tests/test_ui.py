"""The MLflow UI in a real browser: `mlflow ui` (as `make ui` starts it) over a store holding a
sweep, the experiment page loaded by headless Chromium, the runs table read from the page."""

import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (Debian: apt-get install chromium)")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def page(url: str) -> str:
    """The page's DOM once its scripts have run (headless Chromium, 30 s of virtual time)."""
    proc = subprocess.run([CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu",
                           "--disable-dev-shm-usage", "--virtual-time-budget=30000", "--dump-dom",
                           url], capture_output=True, text=True, timeout=180)
    return proc.stdout


@contextmanager
def mlflow_ui(store: Path):
    """`mlflow ui` on the store, on a free loopback port; yields its base URL once it answers."""
    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "ui",
                               "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}",
                               "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 90
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                assert time.time() < deadline, "mlflow ui did not start"
                time.sleep(1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_the_runs_table_shows_the_sweep_and_its_children(project):
    project.train("-m", "optimizer=sgd,adam", check=True)
    experiment = project.client.get_experiment_by_name("cifar-sweep").experiment_id
    with mlflow_ui(project.store) as ui:
        dom = page(f"{ui}/#/experiments/{experiment}?workflowType=machine_learning")
    # the runs table, not the GenAI overview: the sweep's parent row, named by its overrides,
    # and its two children counted under it (collapsed there until clicked)
    assert "sweep: data=synthetic trainer.epochs=1 trainer.num_threads=1 optimizer=sgd,adam" in dom
    text = re.sub(r"<[^>]+>", "", dom)  # the page's text, without its markup
    assert "3 matching runs" in text, re.findall(r".{40}matching.{40}", text)
