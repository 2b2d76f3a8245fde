"""A preset study with an adaptive seed budget (`make ablation-<study> SEEDS=auto`):

    python src/seeds.py ablation=lr [cap=8] [override ...]

Round 1 trains every row with seeds 0-2; round 2 adds seeds, from 3 up, only to the rows whose
difference to the baseline the seeds cannot yet tell apart (Holm-adjusted p >= 0.05), as many as
the table's "Seeds for 80% power" column says (`statistics.judge`: a two-sided test at 5% over
the table's comparisons, by the measured spread), at most `cap` per row; the baseline gets the
same seeds, so each comparison stays paired over the shared seeds. Then the table, as
`src/report.py` writes it.
Every run is tagged `study.seeds=auto`, and the table's caption says the budget was adaptive.
"""

import sys
from pathlib import Path

from cifar_sweep.commands.seeds import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], Path(__file__).resolve().parent))
