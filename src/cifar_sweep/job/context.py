"""What a job needs from whatever started it (a command alone, a sweep's launcher, a search), as
one value: the job reads this and never Hydra's runtime config, so `run_job(cfg, ctx)` also runs
in-process (the tests; a notebook). `sweep/job_context.py` builds it from Hydra."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class JobContext:
    sweep_dir: str | None = None  # the folder a sweep (`-m`) and its jobs share; None: a job alone
    job_num: int = 0  # its number in the whole sweep (a launcher numbers only what it launched)
    parent: str | None = None  # the sweep's parent run: its jobs are its children in the UI
    n_jobs: int = 1  # jobs the launcher runs side by side (threads each; bars or lines)
    # jobs running at once where the launcher says (n_jobs, a SLURM array's parallelism; the
    # basic launcher: 1); None where it does not (Ray: the cluster decides)
    side_by_side: int | None = None
    choices: Mapping[str, str] = field(default_factory=dict)  # config group -> option chosen
    overrides: tuple[str, ...] = ()  # the command line's overrides for this job
    # a search's trial: reports each epoch's validation accuracy (raises Pruned to stop it)
    reporter: Callable[[int, float], None] | None = None
    trial_tags: Mapping[str, str] = field(default_factory=dict)  # which search the trial is of
    # called at every training batch: raises a signal's exception its handler lost (src/train.py:
    # commands/interrupted.py's raise_if_lost)
    interrupted: Callable[[], None] | None = None

    @property
    def multirun(self) -> bool:
        """A job of a sweep: its failure is logged and the other jobs go on."""
        return self.sweep_dir is not None
