"""The single entrypoint: `python src/train.py [group=option ...] [key=value ...]`, or `-m` to sweep."""

import os
import signal
import sys

import hydra
from omegaconf import DictConfig, OmegaConf


def concurrent_jobs() -> int:
    """Sweep jobs to run at once. On a CPU, small models scale poorly over threads, so one thread
    per job and one job per core is faster (measured in the README); a GPU runs one job at a time."""
    import torch

    return 1 if torch.cuda.is_available() else max(1, os.cpu_count() or 1)


OmegaConf.register_new_resolver("concurrent_jobs", concurrent_jobs, use_cache=True)
# `kill` should end runs as KILLED, not leave them RUNNING: turn SIGTERM into a normal exit,
# which runs the handlers that close the MLflow runs.
signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    from cifar_sweep.job import run_job  # imported here so that `--help` stays fast

    return run_job(cfg)


if __name__ == "__main__":
    main()
