"""What the per-example evidence costs (docs/evidence.md): a run's predictions file at CIFAR-10's
test shape (its size and the time to make it), the statistics of a table's rows (10,000 test
images; 3 and 10 seeds a row), and, given a store, its newest sweep's table built with and
without them.

    python benchmarks/evidence_cost.py [--store mlruns --experiment cifar-sweep]

The rows' statistics run on generated predictions where runs err mostly on the same hard images,
as trained models do (the bootstrap's cost grows with the distinct patterns of correctness).
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def best(work, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def the_file() -> None:
    import torch

    from cifar_sweep.data import CIFAR10_CLASSES
    from cifar_sweep.tracking import predictions

    logits, labels = torch.randn(10_000, 10) * 3, torch.randint(0, 10, (10_000,))
    for probabilities in (True, False):
        def make(kept: bool = probabilities) -> bytes:
            return predictions.to_bytes(predictions.arrays(logits, labels, list(CIFAR10_CLASSES),
                                                           probabilities=kept))

        size, seconds = len(make()), best(make, 20)
        print(f"predictions.npz, 10,000 x 10, probabilities={probabilities}: {size / 1000:.0f} KB, "
              f"made in {seconds * 1000:.1f} ms (best of 20)")


def rows(seeds: int, count: int) -> None:
    from cifar_sweep import evidence

    n, classes = 10_000, 10
    label = np.random.default_rng(1).integers(0, classes, n)
    hard = np.random.default_rng(0).random(n)

    def run(accuracy: float, seed: int) -> evidence.Predictions:
        rng = np.random.default_rng(seed)
        right = hard < accuracy + 0.1 * (rng.random(n) - 0.5)
        return evidence.Predictions(np.arange(n), label, np.where(right, label, (label + 1) % classes),
                                    rng.dirichlet(np.ones(classes), n).astype(np.float16))

    base = {str(s): run(0.72, s) for s in range(seeds)}
    table = [{str(s): run(0.70 + 0.002 * k, 100 * k + s) for s in range(seeds)} for k in range(count)]
    seconds = best(lambda: [evidence.compare(row, base) for row in table], 1)
    print(f"{count} rows x {seeds} seeds against the baseline, 10,000 images: {seconds:.2f} s "
          f"({seconds / count * 1000:.0f} ms a row)")


def table(store: str, experiment: str) -> None:
    from omegaconf import OmegaConf

    from cifar_sweep.report import per_example, studies
    from cifar_sweep.tracking.experiments import open_store

    client = open_store(OmegaConf.create({"uri": store}))
    spec = studies.TableSpec("bench", experiment, kind="Sweep")
    attach = per_example.attach
    per_example.attach = lambda *a, **k: None
    without = best(lambda: studies.build_table(client, spec))
    per_example.attach = attach
    with_evidence = best(lambda: studies.build_table(client, spec))
    built = studies.build_table(client, spec)
    runs = [i for r in built.records for i in r.run_ids]
    reading = best(lambda: per_example.read_all(client, built.frame, runs))
    print(f"{store}: a table of {len(runs)} runs in {len(built.records)} rows: {without:.2f} s "
          f"without the evidence, {with_evidence:.2f} s with it (reading the files "
          f"{reading:.2f} s), best of 3")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", help="a store whose newest sweep to table")
    parser.add_argument("--experiment", default="cifar-sweep")
    args = parser.parse_args()
    the_file()
    rows(3, 33)
    rows(10, 9)
    if args.store:
        table(args.store, args.experiment)
