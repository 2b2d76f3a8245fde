"""`hydra/sweeper=planned` (config.yaml's default): Hydra's basic sweeper (the cartesian product
of the overrides' values, `hydra.sweeper.params` first) that launches only the jobs the sweep's
start (cifar_sweep/sweep/callback.py, cifar_sweep/plan/bulk_plan.py) left to train, as its launch
file in the sweep folder lists them (cifar_sweep/sweep_folder.py): those finished before, or
training elsewhere, have their reference runs already. The launcher numbers the jobs it is
given; each job reads its number in the whole sweep back from the same file.

Unlike the basic sweeper it does not compose every job's config again before launching it: the
sweep's start has composed and checked each one (bulk_plan.plan).
"""

# No `from __future__ import annotations` here: Hydra scans plugin modules outside sys.modules,
# where dataclasses cannot resolve string annotations.
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from cifar_sweep import sweep_folder
from cifar_sweep.hydra_private import BasicSweeper


@dataclass
class PlannedSweeperConf:
    _target_: str = "hydra_plugins.cifar_sweep_planned.planned_sweeper.PlannedSweeper"
    max_batch_size: int | None = None
    params: dict[str, str] | None = None


ConfigStore.instance().store(group="hydra/sweeper", name="planned", node=PlannedSweeperConf,
                             provider="cifar-sweep")


class PlannedSweeper(BasicSweeper):
    def sweep(self, arguments: list[str]) -> Any:
        assert self.config is not None and self.launcher is not None
        assert self.hydra_context is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        overrides = parser.parse_overrides(self._parse_config() + list(arguments))
        jobs = [job for batch in self.split_arguments(overrides, None) for job in batch]
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        launched = sweep_folder.launched(str(sweep_dir))
        if launched is not None:  # written by the sweep's start: the job numbers to launch
            jobs = [jobs[num] for num in launched]
        returns: list = []
        first = 0
        if not jobs:  # every job finished before: nothing to launch
            return returns
        for batch in self.split_overrides_to_chunks(jobs, self.max_batch_size):
            results = self.launcher.launch(batch, initial_job_idx=first)
            for result in results:
                _ = result.return_value  # raise where a job failed, as the basic sweeper does
            first += len(batch)
            returns.append(results)
        return returns
