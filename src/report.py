"""Regenerate tables and figures from the MLflow store, without training and without writing to it.

Every table goes to your folder, results/ (ignored by git), one folder per sweep:
results/<study or experiment>/<sweep's start, UTC>_<sweep id>/, with LATEST and index.md in
results/<study or experiment>/ naming the newest; the command prints the folder.

    python src/report.py ablation=lr [tracking.uri=...]     a preset study -> results/lr/<start>_<id>/
    python src/report.py --config-dir DIR ablation=<name>   a preset of DIR/ablation/ -> results/<name>/...
    python src/report.py sweep=latest                       the newest sweep in the store
    python src/report.py sweep=<parent run id>              that sweep
    python src/report.py experiment=<name>                  its newest sweep
        -> results/<experiment>/<start>_<id>/ (a preset's sweep: results/<study>/<start>_<id>/)
    python src/report.py hpo=modifiednet [tracking.uri=...]  one search -> results/hpo-modifiednet/
    python src/report.py models                             Tables III, IV, VI -> results/models.md
    python src/report.py all [tracking.uri=...]             all of these, for what the store holds,
        and claims.md: the report's claims read across the studies (report/claims.py)
    python src/report.py all published                      `make tables`: the project's published
        tables -> reports/<study>/ (reports/hpo-modifiednet/ where the published store holds
        that search), reports/models.md, reports/claims.md (tracked by git)

table.tex holds the columns a paper prints (setting, accuracy, Δ with its interval, p (Holm),
the report's number), table_more.tex the others, notes.md what the caption leaves out;
`report.columns=accuracy,f1,delta` chooses table.tex's columns (its error names the allowed ones).
Any table: `baseline=<override>` (e.g. baseline=optimizer=adam) names the row the others are
compared with; `where=<key>=<value>` (repeatable) takes the newest sweep whose runs have that
fixed setting (e.g. where=trainer.batch_size=64); `sweep=<id>` with `ablation=` takes that sweep;
`tracking.figures=false` writes the tables only (the figures are most of a report's time).
"""

import os
import sys

from cifar_sweep.commands.report import main

# a report reads runs' artifacts (predictions, figures): without a progress bar for each, which
# would bury its one line of output or error
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

if __name__ == "__main__":
    if {"-h", "--help"} & set(sys.argv[1:]):  # its usage and targets: this file's docstring
        print(__doc__.strip())
        sys.exit(0)
    sys.exit(main(sys.argv[1:]))
