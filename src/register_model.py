"""Register a study's best setting in MLflow's Model Registry, without training.

    python src/register_model.py ablation=lr [name=<model name>] [tracking.uri=...]

The setting with the best mean validation accuracy over seeds; of its runs, the one with the
best validation accuracy; its model (`runs:/<run id>/model`) becomes a new version of the
registered model (default name: cifar-sweep-<study>), tagged with the study, the setting and
its test accuracy mean ± std. Load it with mlflow.pytorch.load_model("models:/<name>/<version>").
"""

import sys

from cifar_sweep.report import presets
from cifar_sweep.report.presets import STUDIES


def main(argv: list[str]) -> int:
    from cifar_sweep.errors import UserInputError
    from cifar_sweep.report.registry import best_of_study, register_best
    from cifar_sweep.tracking.experiments import open_store

    studies = [a.split("=", 1)[1] for a in argv if a.startswith("ablation=")]
    names = [a.split("=", 1)[1] for a in argv if a.startswith("name=")]
    overrides = [a for a in argv if not a.startswith(("ablation=", "name="))]
    if len(studies) != 1 or studies[0] not in STUDIES or any("=" not in a for a in overrides):
        print(f"error: {' '.join(argv) or '(no arguments)'}: allowed: ablation=<"
              f"{'|'.join(STUDIES)}> [name=<model name>] [tracking.uri=...]", file=sys.stderr)
        return 2
    study = studies[0]
    name = names[0] if names else f"cifar-sweep-{study}"
    try:
        client = open_store(presets.compose_preset("ablation", study, overrides).tracking)
        run, tags = best_of_study(client, presets.study(study, overrides))
        version = register_best(client, name, run, tags)
    except UserInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"registered {name} version {version.version}: run {run.info.run_id} ({tags['setting']}, "
          f"test accuracy {tags['test_accuracy']} over {tags['runs']} run(s)); load it with "
          f"mlflow.pytorch.load_model(\"models:/{name}/{version.version}\")")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
