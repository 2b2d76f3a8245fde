"""What the sweep machinery costs per job, apart from training: the figures in docs/speed.md.

    python benchmarks/sweep_cost.py 100 1000      # make bench-sweep N=100 N2=1000

For each size N, in a fresh temporary folder (its own SQLite store): a sweep of N jobs (N/2
`lr.value` x 2 seeds, 1 epoch of ModifiedNet on 200 generated images, the parallel launcher with
2 workers), timed step by step; the same command again, every job finished; `src/plan.py` of the
same sweep; `src/report.py sweep=latest`. Each step is printed as seconds per job and as a ratio
to the jobs' training time (read the ratios: the machine may be shared); with two sizes, how
each step's cost per job grows from the first to the last (1.0: flat).

Steps, from the command's wall clock and the store's run times:
  before the first job   the command's start to the first trained run's start
  worker time per job    the trained runs' span x workers / jobs trained (a worker's whole time
                         for one job: start-up, the store, training, evaluation, logging)
  in-run overhead        a trained run's total_seconds - train_seconds (its evaluation, figures,
                         logged model, uploads), the mean
  after the last job     the last run's end to the command's exit (the sweep's table, closing)
  re-run, all finished   the same command's whole wall time, per job
  plan                   `src/plan.py` with the same overrides, per job
  report                 `src/report.py sweep=latest`, per run in the store
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKERS = 2
IMAGES = 200


def sweep_overrides(jobs: int, store: Path, extra: list[str]) -> list[str]:
    rates = ",".join(f"{0.001 + i * 1e-5:.5f}" for i in range(max(1, jobs // 2)))
    return [f"lr.value={rates}", "trainer.seed=0,1", "trainer.epochs=1", "data=synthetic",
            f"data.source.num_train={IMAGES}", "data.source.num_test=100",
            f"tracking.uri={store / 'mlruns'}", f"checkpoint.dir={store / 'checkpoints'}",
            *extra]


def timed(args: list[str], cwd: Path, log: Path) -> tuple[float, float, float]:
    """(start, end, seconds) of one command; its output in `log`; a failure stops the benchmark."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "PYTHONUNBUFFERED": "1"}
    start = time.time()
    with log.open("w") as out:
        proc = subprocess.run([sys.executable, *args], cwd=cwd, env=env, stdout=out,
                              stderr=subprocess.STDOUT)
    end = time.time()
    if proc.returncode != 0:
        sys.exit(f"error: {' '.join(args[:2])} failed (exit {proc.returncode}); see {log}")
    return start, end, end - start


def newest_sweep_runs(client, experiment_id: str):
    from cifar_sweep.tracking import tags as t

    parent = client.search_runs([experiment_id], f"tags.`{t.ROLE}` = '{t.ROLE_SWEEP}'",
                                order_by=["attributes.start_time DESC"], max_results=1)[0]
    children = client.search_runs([experiment_id], f"tags.`{t.PARENT}` = '{parent.info.run_id}'",
                                  max_results=50000)
    return parent, children


def measure(jobs: int, folder: Path, extra: list[str]) -> dict[str, float]:
    from mlflow.tracking import MlflowClient

    from cifar_sweep.tracking import tags as t

    overrides = sweep_overrides(jobs, folder, extra)
    train = [str(ROOT / "src" / "train.py"), "-m", *overrides,
             f"hydra.launcher.n_jobs={WORKERS}", f"hydra.sweep.dir={folder / 'multirun' / 'a'}"]
    start, end, _ = timed(train, folder, folder / "sweep.log")
    client = MlflowClient(f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}")
    experiment_id = client.get_experiment_by_name("cifar-sweep").experiment_id
    _, children = newest_sweep_runs(client, experiment_id)
    trained = [r for r in children if r.data.tags.get(t.ROLE) == t.ROLE_JOB]
    if len(trained) != jobs:
        sys.exit(f"error: {len(trained)} of {jobs} jobs trained; see {folder / 'sweep.log'}")
    first = min(r.info.start_time for r in trained) / 1000
    last = max(r.info.end_time for r in trained) / 1000
    training = statistics.mean(r.data.metrics["train_seconds"] for r in trained)
    in_run = statistics.mean(r.data.metrics["total_seconds"] - r.data.metrics["train_seconds"]
                             for r in trained)
    again = train[:-1] + [f"hydra.sweep.dir={folder / 'multirun' / 'b'}"]
    _, _, rerun = timed(again, folder, folder / "rerun.log")
    _, rerun_children = newest_sweep_runs(client, experiment_id)
    if any(r.data.tags.get(t.ROLE) == t.ROLE_JOB for r in rerun_children):
        sys.exit(f"error: the re-run trained a job; see {folder / 'rerun.log'}")
    _, _, plan = timed([str(ROOT / "src" / "plan.py"), *overrides], folder, folder / "plan.log")
    runs = len(client.search_runs([experiment_id], max_results=50000))
    _, _, report = timed([str(ROOT / "src" / "report.py"), "sweep=latest",
                          f"tracking.uri={folder / 'mlruns'}"], folder, folder / "report.log")
    return {"training": training,
            "before the first job": (first - start) / jobs,
            "worker time per job": (last - first) * WORKERS / jobs,
            "  of it, in-run overhead": in_run,
            "after the last job": (end - last) / jobs,
            "re-run, all finished": rerun / jobs,
            "plan": plan / jobs,
            "report (per run)": report / runs,
            "_runs": runs}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="+",
                        help="jobs per sweep (even), e.g. 100 1000; then any overrides for every "
                             "command, e.g. tracking.figures=false")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folders")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes if "=" not in s]
    extra = [s for s in args.sizes if "=" in s]
    results = {}
    for jobs in sizes:
        folder = Path(tempfile.mkdtemp(prefix=f"sweep_cost_{jobs}_"))
        results[jobs] = measure(jobs, folder, extra)
        print(f"N={jobs}: measured in {folder}" + ("" if args.keep else " (removed)"), flush=True)
        if not args.keep:
            subprocess.run(["rm", "-rf", str(folder)], check=False)
    print_table(results)
    return 0


def print_table(results: dict[int, dict[str, float]]) -> None:
    sizes = list(results)
    head = "| step | " + " | ".join(f"N={n}: s per job | x training" for n in sizes)
    if len(sizes) > 1:
        head += f" | growth N={sizes[0]} to {sizes[-1]}"
    print(head + " |")
    print("|---|" + "---:|---:|" * len(sizes) + ("---:|" if len(sizes) > 1 else ""))
    for step in results[sizes[0]]:
        if step.startswith("_"):
            continue
        cells = []
        for n in sizes:
            value, training = results[n][step], results[n]["training"]
            cells.append(f"{value:.3f} | {value / training:.2f}")
        line = f"| {step} | " + " | ".join(cells)
        if len(sizes) > 1:
            first, last = results[sizes[0]][step], results[sizes[-1]][step]
            line += f" | {last / first:.2f}" if first > 0 else " | -"
        print(line + " |")


if __name__ == "__main__":
    sys.exit(main())
