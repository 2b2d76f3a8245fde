"""The single entrypoint: `python src/train.py [group=option ...] [key=value ...]`, or `-m` to sweep."""

import hydra
from omegaconf import DictConfig


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    from cifar_sweep.job import run_job  # imported here so that `--help` stays fast

    return run_job(cfg)


if __name__ == "__main__":
    main()
