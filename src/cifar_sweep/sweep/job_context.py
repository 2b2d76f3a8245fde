"""A launched job's context (`job/context.py`) from Hydra's runtime config: the one place that
reads what Hydra and the sweep's launcher tell a job (src/train.py calls it)."""

from __future__ import annotations

from collections.abc import Callable

from hydra.conf import HydraConf
from hydra.types import RunMode
from omegaconf import DictConfig

from cifar_sweep.job.context import JobContext
from cifar_sweep.sweep_folder import original_job_num, parent_run_id


def from_hydra(hydra: DictConfig | HydraConf, cfg: DictConfig,
               interrupted: Callable[[], None] | None = None) -> JobContext:
    """`hydra`: `HydraConfig.get()` inside a Hydra run (or a composed config's `hydra` section);
    `interrupted`: raises a signal's exception its handler lost (see JobContext)."""
    sweep_dir = str(hydra.sweep.dir) if hydra.mode == RunMode.MULTIRUN else None
    reporter, trial_tags = None, {}
    if cfg.get("optuna_trial") is not None:  # a trial of an Optuna search
        from cifar_sweep.search.optuna_study import TrialReporter, study_tags

        reporter = TrialReporter(hydra.sweeper, int(cfg.optuna_trial))
        trial_tags = study_tags(hydra.sweeper)
    return JobContext(
        sweep_dir=sweep_dir,
        job_num=original_job_num(sweep_dir, int(hydra.job.num)) if sweep_dir else 0,
        parent=parent_run_id(sweep_dir) if sweep_dir else None,
        n_jobs=int(hydra.launcher.get("n_jobs") or 1) if sweep_dir else 1,
        side_by_side=side_by_side(hydra.launcher) if sweep_dir else 1,
        choices={group: str(option) for group, option in hydra.runtime.choices.items()},
        overrides=tuple(hydra.overrides.task),
        reporter=reporter, trial_tags=trial_tags, interrupted=interrupted)


def side_by_side(launcher) -> int | None:
    """How many of a sweep's jobs its launcher runs at once, where it says: the parallel (joblib)
    launcher's n_jobs, a SLURM array's array_parallelism, 1 for the basic launcher; None for
    another (Ray's tasks: the cluster's free resources decide)."""
    for key in ("n_jobs", "array_parallelism"):
        value = launcher.get(key)
        if value:
            return int(value)
    return 1 if str(launcher.get("_target_", "")).endswith(".BasicLauncher") else None
