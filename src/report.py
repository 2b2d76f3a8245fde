"""Regenerate tables and figures from the MLflow store, without training and without writing to it.

    python src/report.py ablation=lr [tracking.uri=...]     a preset study -> reports/lr/
    python src/report.py --config-dir DIR ablation=<name>   a preset of DIR/ablation/ -> reports/<name>/
    python src/report.py sweep=latest                       the newest sweep in the store
    python src/report.py sweep=<parent run id>              that sweep
    python src/report.py experiment=<name>                  its newest sweep
        -> reports/<experiment>/<sweep's start>_<id>/, one folder per sweep; LATEST and
           index.md in reports/<experiment>/ name the newest (a preset's: reports/<study>/)
    python src/report.py hpo=modifiednet [tracking.uri=...]  one search -> reports/hpo-modifiednet/
    python src/report.py models                             Tables III, IV, VI -> reports/models.md
    python src/report.py all [tracking.uri=...]             all of these, for what the store holds

Any table: `baseline=<override>` (e.g. baseline=optimizer=adam) names the row the others are
compared with; `where=<key>=<value>` (repeatable) takes the newest sweep whose runs have that
fixed setting (e.g. where=trainer.batch_size=64); `sweep=<id>` with `ablation=` takes that sweep;
`tracking.figures=false` writes the tables only (the figures are most of a report's time).
"""

import sys

from cifar_sweep.commands.report import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
