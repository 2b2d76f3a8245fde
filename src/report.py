"""Regenerate tables and figures from the MLflow store, without training.

    python src/report.py ablation=lr [tracking.uri=...]   one study -> reports/lr/
    python src/report.py models                           Tables III, IV, VI -> reports/models.md
    python src/report.py all [tracking.uri=...]           both, for every study in the store
"""

import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

CONF = Path(__file__).resolve().parents[1] / "conf"
STUDIES = sorted(p.stem for p in (CONF / "ablation").glob("*.yaml"))


def main(argv: list[str]) -> int:
    from cifar_sweep.errors import UserInputError
    from cifar_sweep.model_tables import models_report
    from cifar_sweep.studies import study_report
    from cifar_sweep.tracking import open_store

    words = [a for a in argv if "=" not in a]
    overrides = [a for a in argv if "=" in a and not a.startswith("ablation=")]
    studies = [a.split("=", 1)[1] for a in argv if a.startswith("ablation=")]
    unknown = [w for w in words if w not in ("models", "all")] + [s for s in studies if s not in STUDIES]
    if unknown or not (words or studies):
        print(f"error: report target {' '.join(unknown) or '(none)'} is unknown; allowed: "
              f"ablation=<{'|'.join(STUDIES)}>, models, all", file=sys.stderr)
        return 2
    out = Path("reports")
    if "models" in words or "all" in words:
        out.mkdir(exist_ok=True)
        (out / "models.md").write_text(models_report())
        print(f"wrote {out / 'models.md'}")
    if "all" in words:
        studies = STUDIES
    failed = False
    for study in studies:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("config", overrides=[f"ablation={study}", *overrides])
        try:
            client = open_store(cfg.tracking)
            paper = cfg.study.get("paper")
            md = study_report(client, str(cfg.tracking.experiment), study, cfg.study.baseline,
                              out / study, OmegaConf.to_container(paper) if paper else None)
        except UserInputError as exc:
            print(f"{'note' if 'all' in words else 'error'}: {exc}", file=sys.stderr)
            failed = failed or "all" not in words
            continue
        print(md)
        print(f"wrote {out / study}/ (table.md, table.csv, table.tex, curves.png, confusion.png, "
              f"per_class_accuracy.png)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
