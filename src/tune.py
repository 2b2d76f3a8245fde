"""A tuned study (`make ablation-<study>` for a preset with `study.tune`; docs/tuned.md):

    python src/tune.py ablation=optimizer_tuned [study.tune.trials=N] [trainer.seed=0,1,2] [override ...]

Each arm searched on validation with the same budget, each arm's best trained anew over the
seeds, then the table (src/cifar_sweep/commands/tuned.py).
"""

import sys
from pathlib import Path

from cifar_sweep.commands.tuned import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], Path(__file__).resolve().parent))
