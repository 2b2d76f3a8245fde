"""What `make ui` costs in memory: the MLflow UI started as the Makefile starts it, with its
default workers and with `--workers 1`, on an empty store; the resident memory of its whole
process tree (psutil) once /health answers and the runs page's API has been asked once.

    .venv/bin/python benchmarks/ui_memory.py
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

MLFLOW = Path(sys.executable).parent / "mlflow"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(store: Path, workers: list[str]) -> tuple[int, float]:
    port = free_port()
    server = subprocess.Popen(
        [str(MLFLOW), "ui", "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}",
         "--host", "127.0.0.1", "--port", str(port), *workers],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                assert time.time() < deadline, "mlflow ui did not start"
                time.sleep(1)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/ajax-api/2.0/mlflow/experiments/search",
            data=b'{"max_results": 10}', headers={"Content-Type": "application/json"})
        for _ in range(8):  # every worker likely asked once
            urllib.request.urlopen(request, timeout=30).read()
        time.sleep(3)
        tree = [psutil.Process(server.pid), *psutil.Process(server.pid).children(recursive=True)]
        return len(tree), sum(p.memory_info().rss for p in tree) / 2**20
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        for name, flags in (("default (4 workers)", []), ("--workers 1", ["--workers", "1"])):
            processes, mib = measure(Path(tmp), flags)
            print(f"mlflow ui, {name}: {processes} processes, {mib:.0f} MiB resident")
