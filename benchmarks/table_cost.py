"""What a table of many runs costs: `src/report.py sweep=latest` over a store of N finished runs,
at two sizes, per run and how it grows (the figures in docs/speed.md, issue 28 item 5).

    python benchmarks/table_cost.py 1000 10000 [report overrides]   # make bench-table

Training 10,000 runs to time their table would take hours, so the store is grown instead: one
real sweep (10 jobs: 5 `lr.value` x 2 seeds, 1 epoch on 200 generated images, extras off) is
trained once, then each of its runs is copied in the SQLite file, with every param, tag, metric
and metric history, as a run of a new `lr.value` (its setting and config hashes, job number,
overrides and name changed to match), held by the same sweep. The copies are what the real
runs are, row for row, so the report reads and computes what it would for a sweep of N jobs.
Each size gets its own copy of the store; the report runs as a user runs it, in its own process.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEED_JOBS = 10


def train_seed_sweep(folder: Path) -> Path:
    rates = ",".join(f"{0.001 * (i + 1):.3f}" for i in range(SEED_JOBS // 2))
    args = [str(ROOT / "src" / "train.py"), "-m", f"lr.value={rates}", "trainer.seed=0,1",
            "trainer.epochs=1", "data=synthetic", "data.source.num_train=200",
            "data.source.num_test=100", f"tracking.uri={folder / 'mlruns'}",
            f"checkpoint.dir={folder / 'checkpoints'}", "tracking.figures=false",
            "tracking.log_model=false", "tracking.system_metrics=false",
            f"hydra.sweep.dir={folder / 'multirun'}"]
    log = folder / "sweep.log"
    with log.open("w") as out:
        if subprocess.run([sys.executable, *args], cwd=folder, stdout=out,
                          stderr=subprocess.STDOUT).returncode:
            sys.exit(f"error: the seed sweep failed; see {log}")
    return folder / "mlruns" / "mlflow.db"


def _short(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def grow(db: Path, runs: int) -> None:
    """Copy the sweep's job runs until the store holds `runs` of them (see the docstring)."""
    con = sqlite3.connect(db)
    jobs = [r for (r,) in con.execute(
        "SELECT run_uuid FROM tags WHERE key = 'cifar_sweep.role' AND value = 'job'")]
    lr = dict(con.execute("SELECT run_uuid, value FROM params WHERE key = 'lr.value'"))
    hashes = {(r, k): v for r, k, v in con.execute(
        "SELECT run_uuid, key, value FROM tags WHERE key IN ('setting_hash', 'config_hash')")}
    columns = {t: [c[1] for c in con.execute(f"PRAGMA table_info({t})")]
               for t in ("runs", "params", "tags", "metrics", "latest_metrics")}
    copies = -(-(runs - len(jobs)) // len(jobs))
    made = len(jobs)
    for k in range(1, copies + 1):
        for original in jobs:
            if made >= runs:
                break
            new, value = uuid.uuid4().hex, f"{float(lr[original]) + k * 1e-6:.6f}"
            for table, cols in columns.items():
                picked = ", ".join("?" if c == "run_uuid" else f'"{c}"' for c in cols)
                con.execute(f'INSERT INTO {table} ({", ".join(chr(34) + c + chr(34) for c in cols)}) '
                            f"SELECT {picked} FROM {table} WHERE run_uuid = ?", (new, original))
            con.execute("UPDATE params SET value = ? WHERE run_uuid = ? AND key = 'lr.value'",
                        (value, new))
            for key in ("setting_hash", "config_hash"):
                con.execute("UPDATE tags SET value = ? WHERE run_uuid = ? AND key = ?",
                            (_short(f"{hashes[original, key]}{k}"), new, key))
            con.execute("UPDATE tags SET value = replace(value, 'lr.value=' || ?, 'lr.value=' || ?)"
                        " WHERE run_uuid = ? AND key IN ('job.overrides', 'mlflow.runName')",
                        (lr[original], value, new))
            # each copy its own accuracy, so that the statistics have a spread to work on
            jitter = (zlib.crc32(f"{original}{k}".encode()) % 2001 - 1000) * 1e-5
            con.execute("UPDATE latest_metrics SET value = value + ? WHERE run_uuid = ?"
                        " AND key = 'test_accuracy'", (jitter, new))
            con.execute("UPDATE tags SET value = CAST(CAST(value AS INTEGER) + ? AS TEXT)"
                        " WHERE run_uuid = ? AND key = 'job.num'", (k * len(jobs), new))
            con.execute("UPDATE runs SET name = replace(name, 'lr.value=' || ?, 'lr.value=' || ?),"
                        " start_time = start_time + ?, end_time = end_time + ?"
                        " WHERE run_uuid = ?", (lr[original], value, k, k, new))
            made += 1
        con.commit()
    con.execute("UPDATE tags SET value = ? WHERE key = 'sweep.jobs'", (str(made),))
    con.commit()
    con.close()


def report_seconds(folder: Path, extra: list[str]) -> float:
    log = folder / "report.log"
    start = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.run([sys.executable, str(ROOT / "src" / "report.py"), "sweep=latest",
                               f"tracking.uri={folder / 'mlruns'}", *extra], cwd=folder,
                              stdout=out, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"error: the report failed (exit {proc.returncode}); see {log}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="+", type=int, help="runs in the store, e.g. 1000 10000")
    parser.add_argument("overrides", nargs="*", help="for report.py, e.g. tracking.figures=false")
    args, extra = parser.parse_known_args()
    overrides = [*args.overrides, *extra] or ["tracking.figures=false"]
    with tempfile.TemporaryDirectory(prefix="bench-table-") as tmp:
        seed = Path(tmp) / "seed"
        seed.mkdir()
        db = train_seed_sweep(seed)
        results = []
        for size in args.sizes:
            folder = Path(tmp) / f"n{size}"
            (folder / "mlruns").mkdir(parents=True)
            shutil.copy(db, folder / "mlruns" / "mlflow.db")
            grow(folder / "mlruns" / "mlflow.db", size)
            seconds = report_seconds(folder, overrides)
            results.append((size, seconds))
            print(f"{size:>7} runs ({size // 2} rows): report {seconds:7.1f} s, "
                  f"{seconds / size * 1000:6.2f} ms per run", flush=True)
        if len(results) > 1:
            (n1, s1), (n2, s2) = results[0], results[-1]
            print(f"beyond a fixed cost: {(s2 - s1) / (n2 - n1) * 1000:.2f} ms per run; "
                  f"growth per run {s2 / n2 / (s1 / n1):.2f} ({n1} -> {n2} runs)")


if __name__ == "__main__":
    main()
