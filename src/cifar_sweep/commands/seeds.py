"""`src/seeds.py` (`make ablation-<study> SEEDS=auto`): a preset study trained in rounds, seeds
added only to the rows the seeds cannot yet tell from the baseline (report/adaptive_seeds.py),
then its table."""


from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def _train(scripts: Path, *overrides: str) -> int:
    return subprocess.run([sys.executable, str(scripts / "train.py"), "-m", *overrides]).returncode


def main(argv: list[str], scripts: Path) -> int:
    """`scripts`: the folder of train.py and report.py, which each round runs."""
    from cifar_sweep.config import config_dirs
    from cifar_sweep.errors import UserInputError
    from cifar_sweep.report import adaptive_seeds, presets
    from cifar_sweep.report.studies import build_table
    from cifar_sweep.tracking.experiments import open_store

    argv, search_path = config_dirs.config_dir_args(argv)  # --config-dir DIR: a user's presets too
    argv += search_path
    studies = [a.split("=", 1)[1] for a in argv if a.startswith("ablation=")]
    caps = [a.split("=", 1)[1] for a in argv if a.startswith("cap=")]
    overrides = [a for a in argv if not a.startswith(("ablation=", "cap="))]
    if len(studies) != 1 or studies[0] not in presets.studies(argv):
        print(f"error: ablation={'/'.join(studies) or '(none)'} is invalid: allowed: one of "
              f"{', '.join(presets.studies(argv))}", file=sys.stderr)
        return 2
    if len(caps) > 1 or (caps and not (caps[0].isdigit() and int(caps[0]) > adaptive_seeds.FIRST_ROUND)):
        print(f"error: cap={caps[-1]} is invalid: allowed: an integer above "
              f"{adaptive_seeds.FIRST_ROUND}", file=sys.stderr)
        return 2
    if any(o.startswith("trainer.seed=") for o in overrides):
        print("error: trainer.seed is set by the adaptive budget: leave it out", file=sys.stderr)
        return 2
    name, cap = studies[0], int(caps[0]) if caps else adaptive_seeds.CAP
    common = [f"ablation={name}", "study.seeds=auto", *overrides]
    first = ",".join(str(s) for s in range(adaptive_seeds.FIRST_ROUND))
    status = _train(scripts, *common, f"trainer.seed={first}")
    if status != 0:
        return status
    store = [o for o in overrides if o.startswith(("tracking.", config_dirs.SEARCH_PATH))]
    try:
        client = open_store(presets.compose_preset("ablation", name, store).tracking)
        table = build_table(client, presets.study(name, store))
    except UserInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    rounds = adaptive_seeds.second_round(table, cap)
    axis = table.selection.axes[0] if table.selection.axes else ""
    if not rounds:
        print("adaptive seeds: every comparison is decided with 3 seeds (or none can be)")
    for target, values in rounds:
        print(f"adaptive seeds: {', '.join(values[1:])} (and the baseline {values[0]}) up to "
              f"{target} seeds: the seeds cannot yet tell them from the baseline")
        status = _train(scripts, *common, f"{axis}={','.join(values)}",
                        f"trainer.seed={','.join(str(s) for s in range(adaptive_seeds.FIRST_ROUND, target))}")
        if status != 0:
            return status
    return subprocess.run([sys.executable, str(scripts / "report.py"), f"ablation={name}",
                           *store]).returncode
