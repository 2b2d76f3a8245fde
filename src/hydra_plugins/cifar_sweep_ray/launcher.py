"""hydra-ray-launcher's launcher (`hydra/launcher=ray_tasks`), with a job that Ray loses (its
node gone, its worker killed) reported as one line instead of a traceback that leaves the other
jobs unwatched: the others are still waited for, the sweep ends non-zero, and the lost run
(KILLED at the sweep's end, its checkpoint kept) continues when the same command runs again."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
from omegaconf import open_dict

try:  # the [ray] extra; Hydra imports every plugin module at start, with or without it
    from hydra_plugins.hydra_ray_launcher.ray_launcher import RayLauncher as _PluginLauncher
except ImportError:  # without it: a class Hydra's plugin scan ignores; train.py says what to install
    _PluginLauncher = object

log = logging.getLogger(__name__)


class RayLauncher(_PluginLauncher):
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
               ) -> Sequence[JobReturn]:
        """The plugin's launch() (hydra-ray-launcher 1.2.2, `_core.launch`), each job's result
        taken on its own."""
        import ray
        from hydra_plugins.hydra_ray_launcher._launcher_util import launch_job_on_ray, start_ray

        setup_globals()
        assert self.config is not None and self.hydra_context is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        log.info(f"Ray Launcher is launching {len(job_overrides)} jobs, sweep output dir: {sweep_dir}")
        start_ray(self.ray_cfg.init)
        runs = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            name = f"#{idx} {' '.join(filter_overrides(overrides))}"
            log.info(f"\t{name}")
            sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config,
                                                                              list(overrides))
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = f"job_id_for_{idx}"
                sweep_config.hydra.job.num = idx
                runs.append((name, list(overrides), launch_job_on_ray(
                    self.hydra_context, self.ray_cfg.remote, sweep_config, self.task_function,
                    Singleton.get_state())))
        returns = []
        for name, overrides, run in runs:
            try:
                returns.append(ray.get(run))
            except ray.exceptions.RayError as exc:  # the node or worker died, the object lost
                first = (str(exc).strip().splitlines() or [""])[0][:300]
                print(f"error: Ray lost job {name}: {type(exc).__name__}: {first}; its run is "
                      f"KILLED, its checkpoint kept: run the same command again to continue it",
                      file=sys.stderr)
                # COMPLETED with no value: failed to the sweepers, and Hydra raises nothing
                returns.append(JobReturn(overrides=overrides, status=JobStatus.COMPLETED,
                                         _return_value=None))
        return returns
