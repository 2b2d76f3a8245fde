"""The single entrypoint: `python src/train.py [group=option ...] [key=value ...]`, or `-m` to sweep."""

import signal
import sys

import hydra
from omegaconf import DictConfig, OmegaConf


def _concurrent_jobs(jobs_per_gpu: int = 1) -> int:
    from cifar_sweep.runtime import concurrent_jobs  # here, so that `--help` stays fast

    return concurrent_jobs(jobs_per_gpu)


# the `parallel` launcher's n_jobs (conf/hydra/launcher/parallel.yaml)
OmegaConf.register_new_resolver("concurrent_jobs", _concurrent_jobs, use_cache=True)
# `kill` should end runs as KILLED, not leave them RUNNING: turn SIGTERM into a normal exit,
# which runs the handlers that close the MLflow runs.
signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    from cifar_sweep.job import run_job  # imported here so that `--help` stays fast

    return run_job(cfg)


if __name__ == "__main__":
    main()
