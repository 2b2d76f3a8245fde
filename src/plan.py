"""What a sweep will do, job by job, without training or creating any run:

    python src/plan.py ablation=lr trainer.seed=0,1,2      # the overrides you would give `-m`
    make plan ARGS='ablation=lr trainer.seed=0,1,2'

Each job's line is the decision its run would act on (`cifar_sweep.plan.decision.choose`): already
finished as run X / being trained elsewhere / continue run X from epoch k / train, or the one-line
error that would stop it. A search's trials are chosen as it runs: it has no plan.
"""

import sys

from cifar_sweep.commands.plan import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
