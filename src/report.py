"""Regenerate tables and figures from the MLflow store, without training.

    python src/report.py ablation=lr [tracking.uri=...]   one study -> reports/lr/
    python src/report.py hpo=modifiednet [tracking.uri=...]  one search -> reports/hpo-modifiednet/
    python src/report.py models                           Tables III, IV, VI -> reports/models.md
    python src/report.py all [tracking.uri=...]           all of these, for what the store holds
"""

import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

CONF = Path(__file__).resolve().parents[1] / "conf"
STUDIES = sorted(p.stem for p in (CONF / "ablation").glob("*.yaml"))
SEARCHES = sorted(p.stem for p in (CONF / "hpo").glob("*.yaml"))


def main(argv: list[str]) -> int:
    from cifar_sweep.errors import UserInputError
    from cifar_sweep.model_tables import models_report
    from cifar_sweep.studies import study_report, trials_report
    from cifar_sweep.tracking import open_store

    words = [a for a in argv if "=" not in a]
    targets = [tuple(a.split("=", 1)) for a in argv if a.startswith(("ablation=", "hpo="))]
    overrides = [a for a in argv if "=" in a and not a.startswith(("ablation=", "hpo="))]
    known = {"ablation": STUDIES, "hpo": SEARCHES}
    unknown = ([w for w in words if w not in ("models", "all")]
               + [f"{g}={n}" for g, n in targets if n not in known[g]])
    if unknown or not (words or targets):
        print(f"error: report target {' '.join(unknown) or '(none)'} is unknown; allowed: "
              f"ablation=<{'|'.join(STUDIES)}>, hpo=<{'|'.join(SEARCHES)}>, models, all",
              file=sys.stderr)
        return 2
    out = Path("reports")
    if "models" in words or "all" in words:
        out.mkdir(exist_ok=True)
        (out / "models.md").write_text(models_report())
        print(f"wrote {out / 'models.md'}")
    if "all" in words:
        targets = [("ablation", s) for s in STUDIES] + [("hpo", s) for s in SEARCHES]
    failed = False
    for group, name in targets:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("config", overrides=[f"{group}={name}", *overrides],
                          return_hydra_config=group == "hpo")
        experiment = str(cfg.tracking.experiment)
        try:
            client = open_store(cfg.tracking)
            if group == "ablation":
                paper = cfg.study.get("paper")
                folder = out / name
                md = study_report(client, experiment, name, cfg.study.baseline, folder,
                                  OmegaConf.to_container(paper) if paper else None)
            else:
                folder = out / experiment
                md = trials_report(client, experiment, name, list(cfg.hydra.sweeper.space),
                                   str(cfg.hydra.sweeper.metric), folder)
        except UserInputError as exc:
            print(f"{'note' if 'all' in words else 'error'}: {exc}", file=sys.stderr)
            failed = failed or "all" not in words
            continue
        print(md)
        print(f"wrote {folder}/")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
