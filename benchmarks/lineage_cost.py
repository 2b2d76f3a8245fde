"""What MLflow's system metrics and the per-run MLflow model cost, in-process (docs/mlflow.md).

    python benchmarks/lineage_cost.py [--samples 50] [--format pickle|pt2]

- one system-metrics sample as MLflow's monitor thread takes it every 10 s: read CPU, memory,
  disk and network (psutil; GPU with pynvml), ask the store for the run's status, log the
  batch; its CPU time and wall time, median of --samples;
- the dataset inputs logged at a run's start;
- a run's MLflow model (ModifiedNet): as runs log it (pickled, saved, then logged as the run's
  logged model), or only saved in MLflow's default pt2 format; the first in a process (its
  imports included) and the next ones.
The store is a scratch SQLite one, as a run's default store.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf


def timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--format", choices=("pickle", "pt2"), default="pickle")
    args = parser.parse_args()
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    from cifar_sweep.data import Dataset, Split
    from cifar_sweep.models import ModifiedNet
    from cifar_sweep.tracking import lineage
    from cifar_sweep.tracking.experiments import open_experiment

    tmp = Path(tempfile.mkdtemp())
    client, experiment_id = open_experiment(OmegaConf.create(
        {"uri": str(tmp / "mlruns"), "experiment": "cost"}))
    run_id = client.create_run(experiment_id).info.run_id

    monitor = SystemMetricsMonitor(run_id, tracking_uri=client.tracking_uri)

    def one_sample() -> None:  # what the monitor's loop does each interval
        monitor.collect_metrics()
        client.get_run(run_id)
        monitor.publish_metrics(monitor.aggregate_metrics())
        monitor.mlflow_logger.flush()

    one_sample()  # the first psutil reads set up their baselines
    costs = [timed(one_sample) for _ in range(args.samples)]
    wall = statistics.median(c[0] for c in costs)
    cpu = statistics.median(c[1] for c in costs)
    print(f"system metrics, one sample: {wall * 1000:.1f} ms wall, {cpu * 1000:.1f} ms CPU "
          f"(median of {args.samples}); every 10 s: {cpu / 10 * 100:.3f}% of one core")

    dataset = Dataset(Split(torch.zeros(2000, 3, 32, 32, dtype=torch.uint8),
                            torch.zeros(2000, dtype=torch.long)),
                      Split(torch.zeros(500, 3, 32, 32, dtype=torch.uint8),
                            torch.zeros(500, dtype=torch.long)),
                      [str(i) for i in range(10)], "synthetic-0123456789abcdef0123")
    cfg = OmegaConf.create({"data": {"title": "synthetic", "mean": [0.5] * 3, "std": [0.5] * 3,
                                     "split_seed": 0, "source": {"seed": 0}},
                            "trainer": {"val_fraction": 0.2}})
    wall, _ = timed(lambda: client.log_inputs(run_id, lineage.dataset_inputs(cfg, dataset)))
    print(f"dataset inputs (3 splits), logged once a run: {wall * 1000:.0f} ms")
    model = ModifiedNet(num_classes=10)

    def save(path: Path) -> None:
        if args.format == "pickle":  # as runs log it: saved, then a logged model of the run
            lineage.log_model(client, run_id, model, cfg, dataset, step=1)
        else:  # MLflow's default format, for comparison: it needs an example to trace
            import mlflow.pytorch

            mlflow.pytorch.save_model(lineage.ImageClassifier(model.eval(), [0.5] * 3, [0.5] * 3),
                                      str(path), serialization_format="pt2",
                                      input_example=dataset.test.images[:2].numpy(),
                                      pip_requirements=lineage.requirements())

    saves = [timed(lambda i=i: save(tmp / f"model{i}"))[0] for i in range(4)]
    lineage.save_model(tmp / "sized", model, cfg, dataset)
    size = sum(f.stat().st_size for f in (tmp / "sized").rglob("*") if f.is_file()) / 1e6
    print(f"MLflow model (ModifiedNet, {args.format}, {size:.2f} MB): first in a process "
          f"{saves[0]:.2f} s, then {statistics.median(saves[1:]):.2f} s (median of 3)")


if __name__ == "__main__":
    main()
