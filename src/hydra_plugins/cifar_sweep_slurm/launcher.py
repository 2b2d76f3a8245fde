"""hydra-submitit-launcher's SLURM launcher, as a cluster user needs it (`hydra/launcher=slurm`):

- in the job's process, SIGTERM (what `scancel`, a requeue and the time limit send first) ends
  the job at once, its run KILLED and its checkpoint kept; submitit only logs it, so a cancelled
  job trained on for SLURM's KillWait;
- the command waits for the jobs through squeue, which answers without accounting, and a job
  that leaves the queue without a result (cancelled, its node lost) is one line naming it, not a
  wait forever (no sacct) nor a traceback that leaves the array's other jobs unwatched; the
  sweep then ends non-zero, and the same command continues the lost runs from their checkpoints.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher import submitit_launcher
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from omegaconf import OmegaConf

log = logging.getLogger(__name__)
POLL_S = 5.0
# a job that ended may need a moment before its result file shows (a shared file system)
GRACE_S = 10.0


def _exit_on_sigterm(signum, frame) -> None:
    sys.exit(128 + signum)  # SystemExit: tracked_run marks the run KILLED on its way out


class SlurmLauncher(submitit_launcher.SlurmLauncher):
    def __call__(self, *args: Any, **kwargs: Any) -> JobReturn:
        # in the job's process, after submitit set its handlers (it only logs SIGTERM); its
        # SIGUSR2 handler (requeue at a preemption or the time limit) stays
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        return super().__call__(*args, **kwargs)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
               ) -> Sequence[JobReturn]:
        """The plugin's launch() (hydra-submitit-launcher 1.2.0), waiting in wait_for."""
        import submitit

        assert self.config is not None
        params = self.params
        init_params = {"folder": params["submitit_folder"],
                       "slurm_max_num_timeout": params["max_num_timeout"]}
        executor = submitit.AutoExecutor(cluster="slurm", **init_params)
        baseparams = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{
            k if k in baseparams else f"slurm_{k}": v for k, v in params.items()
            if k not in {"submitit_folder", "max_num_timeout"}})
        log.info(f"Submitit 'slurm' sweep output dir : {self.config.hydra.sweep.dir}")
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        job_params = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            job_params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}",
                               Singleton.get_state()))
        jobs = executor.map_array(self, *zip(*job_params))
        names = [f"#{idx} {' '.join(filter_overrides(o))}"
                 for idx, o in enumerate(job_overrides, start=initial_job_idx)]
        return wait_for(jobs, names, [list(o) for o in job_overrides])


def wait_for(jobs: list, names: list[str], overrides: list[list[str]],
             poll_s: float = POLL_S, grace_s: float = GRACE_S) -> list[JobReturn]:
    """Every job's JobReturn once it has ended: its result, or, for a job that left SLURM's
    queue without one, a JobReturn of None (a failed job, to the sweepers) and one line."""
    from submitit.core.utils import pickle_load

    from cifar_sweep.sweep import slurm

    returns: list[JobReturn | None] = [None] * len(jobs)
    left = dict(enumerate(jobs))
    ended: dict[int, float] = {}  # when the queue first showed it ended
    silent_since = None
    while left:
        states = slurm.queue_states([j.job_id for j in left.values()])
        now = time.monotonic()
        if states is None:  # squeue does not answer (slurmctld restarting): keep waiting
            if silent_since is None:
                silent_since = now
                print("warning: squeue does not answer; still waiting for the jobs",
                      file=sys.stderr)
        else:
            silent_since = None
        for i, job in list(left.items()):
            if job.paths.result_pickle.exists():
                outcome, value = pickle_load(job.paths.result_pickle)
                if outcome == "success":
                    returns[i] = value
                else:  # submitit's own failure around the job: its traceback's last line
                    last = str(value).strip().splitlines()[-1:] or ["?"]
                    print(f"error: SLURM job {job.job_id} ({names[i]}) failed: {last[0]}",
                          file=sys.stderr)
                    returns[i] = _lost(overrides[i])
                del left[i]
                continue
            if states is None:
                continue
            state = states.get(job.job_id)
            if state in slurm.ACTIVE:
                ended.pop(i, None)
                continue
            if now - ended.setdefault(i, now) < grace_s:
                continue
            state = state or slurm.final_state(job.job_id)
            print(f"error: SLURM job {job.job_id} ({names[i]}) ended {state} without a result; "
                  f"its run is KILLED, its checkpoint kept: run the same command again to "
                  f"continue it (its log: {job.paths.stderr})", file=sys.stderr)
            returns[i] = _lost(overrides[i])
            del left[i]
        if left:
            time.sleep(poll_s)
    return cast(list[JobReturn], returns)  # every job's slot is filled above


def _lost(overrides: list[str]) -> JobReturn:
    # COMPLETED with no value: the sweepers count it failed (hpo.tell; the sweep's end reads
    # the runs), and Hydra raises nothing, so the other jobs' results are still read
    return JobReturn(overrides=overrides, status=JobStatus.COMPLETED, _return_value=None)
