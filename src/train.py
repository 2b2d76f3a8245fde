"""The single entrypoint: `python src/train.py [group=option ...] [key=value ...]`, or `-m` to sweep."""

import importlib.util
import sys
from typing import TYPE_CHECKING

import hydra
from omegaconf import DictConfig, OmegaConf

from cifar_sweep.commands import interrupted

if TYPE_CHECKING:
    from cifar_sweep.job.steps import JobResult


def _concurrent_jobs(device: str = "auto", jobs_per_gpu: int = 1) -> int:
    from cifar_sweep.train.runtime import concurrent_jobs  # here, so that `--help` stays fast

    return concurrent_jobs(device, jobs_per_gpu)


# the `parallel` launcher's n_jobs (conf/hydra/launcher/parallel.yaml), from the sweep's device
OmegaConf.register_new_resolver("concurrent_jobs", _concurrent_jobs, use_cache=True)
# Ctrl-C and `kill` end runs as KILLED, not leave them RUNNING: both signals become an exception,
# which runs the handlers that close the MLflow runs (cifar_sweep/commands/interrupted.py).
interrupted.install()


# options whose plugin is an optional extra: without it Hydra only says it cannot load a config
EXTRAS = {"hydra/launcher=ray_tasks": ("hydra_plugins.hydra_ray_launcher", "ray")}


def _check_extras(argv: list[str]) -> None:
    for arg in argv:
        if arg in EXTRAS and importlib.util.find_spec(EXTRAS[arg][0]) is None:
            print(f"error: {arg} needs the [{EXTRAS[arg][1]}] extra, which is not installed: "
                  f"pip install -e '.[{EXTRAS[arg][1]}]'", file=sys.stderr)
            sys.exit(2)


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> "JobResult":
    from hydra.core.hydra_config import HydraConfig

    from cifar_sweep.job.steps import run_job  # imported here so that `--help` stays fast
    from cifar_sweep.sweep import job_context

    result = run_job(cfg, job_context.from_hydra(HydraConfig.get(), cfg, interrupted.raise_if_lost))
    interrupted.raise_if_lost()  # a signal whose exception was lost after the last batch
    if result.exit_code:  # a job alone that did not finish: job/endings.py says with what status
        sys.exit(result.exit_code)
    return result


def _check_overrides(argv: list[str]) -> None:
    from cifar_sweep.config.override_check import (  # Hydra's mistakes, before Hydra composes
        problem,
        sweep_flag_problem,
    )

    line = sweep_flag_problem(argv, f"python {sys.argv[0]}") or problem(argv)
    if line:
        print(f"error: {line}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    _check_extras(sys.argv[1:])
    _check_overrides(sys.argv[1:])
    try:
        main()
    except (KeyboardInterrupt, SystemExit):
        if not interrupted.received:  # an ordinary exit (a job's status, Hydra's --help)
            raise
        for line in interrupted.lines(sys.argv[1:], sys.argv[0]):
            print(line, file=sys.stderr, flush=True)
        sys.exit(interrupted.exit_status())
