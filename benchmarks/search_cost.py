"""What a hyperparameter search cost, read back from MLflow: the figures in docs/search.md.

    python benchmarks/search_cost.py hpo-modifiednet [--tracking-uri mlruns]

For the newest search (sweep run with trials) of the experiment: its wall time (the parent
run's), its trials by state and the epochs they trained, how busy the side-by-side job slots
were (the trials' run times over slots x wall time; slots: the most trials that ran at once),
and each trial's cost beyond its epochs (`total_seconds - train_seconds`).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from omegaconf import OmegaConf

from cifar_sweep.tracking import tags as t
from cifar_sweep.tracking.experiments import open_store


def most_at_once(intervals: list[tuple[int, int]]) -> int:
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, step in events:  # an end sorts before a start at the same instant
        running += step
        peak = max(peak, running)
    return peak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment")
    parser.add_argument("--tracking-uri", default="mlruns")
    args = parser.parse_args()
    client = open_store(OmegaConf.create({"uri": args.tracking_uri}))
    experiment = client.get_experiment_by_name(args.experiment)
    if experiment is None:
        print(f"error: no experiment {args.experiment!r} in {args.tracking_uri}", file=sys.stderr)
        return 2
    parents = client.search_runs([experiment.experiment_id], f"tags.`{t.ROLE}` = '{t.ROLE_SWEEP}'",
                                 order_by=["attributes.start_time DESC"])
    for parent in parents:
        trials = client.search_runs([experiment.experiment_id],
                                    f"tags.`{t.PARENT}` = '{parent.info.run_id}'",
                                    max_results=10000)
        trials = [r for r in trials if r.data.tags.get(t.TRIAL) and r.info.end_time]
        if trials:
            break
    else:
        print(f"error: no finished search in {args.experiment!r}", file=sys.stderr)
        return 2
    wall = (parent.info.end_time - parent.info.start_time) / 1000
    intervals = [(r.info.start_time, r.info.end_time) for r in trials]
    slots = most_at_once(intervals)
    busy = sum(end - start for start, end in intervals) / 1000
    epochs = sum(len(client.get_metric_history(r.info.run_id, "val_accuracy")) for r in trials)
    states = Counter("pruned" if r.data.tags.get(t.TRIAL_STATE) == "pruned"
                     else r.info.status.lower() for r in trials)
    extra = sorted(r.data.metrics["total_seconds"] - r.data.metrics["train_seconds"]
                   for r in trials if "total_seconds" in r.data.metrics)
    print(f"search {parent.info.run_id} in {args.experiment}: wall {wall:.0f} s, "
          f"{len(trials)} trials ({', '.join(f'{n} {s}' for s, n in states.items())}), "
          f"{epochs} epochs trained")
    print(f"slots busy: {busy:.0f} s of trials over {slots} slots x {wall:.0f} s = "
          f"{busy / (slots * wall):.0%}")
    if extra:
        print(f"cost beyond the epochs, completed trials: {extra[0]:.2f}-{extra[-1]:.2f} s "
              f"(median {extra[len(extra) // 2]:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
