"""`hydra/sweeper=optuna_study`: an Optuna study over a search space written in config, each
trial a job of the configured launcher (so trials run side by side as sweep jobs do).

Why our own and not Hydra's `hydra-optuna-sweeper` 1.3: that one caps optuna below 3 (pip
resolves it to optuna 2.10.1 here, next to MLflow 3's SQLAlchemy 2), aborts the study on a
failed trial, has no pruning, leaves trials in flight RUNNING when killed, and adds `n_trials`
more on a re-run. Here, on current Optuna's ask/tell API:
- the study lives in `storage` (SQLite by default, apart from MLflow's database; on a cluster
  `journal:<path>` on the shared file system), and the same command again continues it up to
  `n_trials` in all; several commands on one storage share the work (docs/search.md): each keeps
  a heartbeat on its trials, and a trial whose command died is failed and its parameters asked
  again, at most `max_retries` times (its MLflow run continues from its checkpoint: same config,
  same run); `cifar_sweep.search.workers`;
- a failed trial (NaN loss, an error) is told FAIL and the study goes on;
- jobs report validation accuracy each epoch to their trial (`cifar_sweep.search.optuna_study`), and the
  pruner (median or successive halving) stops bad ones early: they are told PRUNED.
"""

# No `from __future__ import annotations` here: Hydra scans plugin modules outside sys.modules,
# where dataclasses cannot resolve string annotations.
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


@dataclass
class OptunaStudySweeperConf:
    _target_: str = "hydra_plugins.cifar_sweep_optuna.optuna_sweeper.OptunaStudySweeper"
    study_name: str = "study"
    storage: str = "sqlite:///hpo/optuna.db"  # relative paths: to where the command runs
    direction: str = "maximize"
    n_trials: int = 20            # in all, over every run of the same command
    metric: str = "best_val_accuracy"  # what the study optimises: never a test-set metric
    seed: int | None = 0       # the sampler's (TPE) seed
    pruner: dict[str, Any] = field(default_factory=lambda: {"kind": "median"})
    # key -> {type: float|int|categorical, low, high, log, step, choices}
    space: dict[str, Any] = field(default_factory=dict)
    # parameter sets to try first (a known good point, a baseline), once per study
    enqueue: list[Any] = field(default_factory=list)
    # trials handed to the launcher at once. null: with the parallel launcher, twice its n_jobs
    # (a worker whose trial was pruned early takes the next one instead of waiting for the
    # others of its launch); with any other, 1. On a cluster set it to the trials that should
    # run at once: each launch's trials are chosen without knowing how the others end
    trials_per_launch: int | None = None
    # several commands on one storage (docs/search.md): each writes a heartbeat on its trials every
    # heartbeat_interval s; a RUNNING trial silent for grace_period s is failed and asked again, at
    # most max_retries times (then it stays FAIL)
    heartbeat_interval: int = 60
    grace_period: int = 180
    max_retries: int = 2
    # a study preset's grid (conf/ablation/), unused by a search: here so that a tuned study's
    # arm composes its preset with this sweeper (commands/tuned.py sets it to null)
    params: dict[str, Any] | None = None


ConfigStore.instance().store(group="hydra/sweeper", name="optuna_study",
                             node=OptunaStudySweeperConf, provider="cifar-sweep")


def _plain(settings: Any) -> dict:
    """A mapping of the sweeper's settings as plain Python (Hydra hands them over as config)."""
    return cast(dict, OmegaConf.to_container(OmegaConf.create(settings)))


class OptunaStudySweeper(Sweeper):
    def __init__(self, **settings: Any) -> None:
        super().__init__()
        self.settings = settings
        self.config: DictConfig | None = None
        self.launcher: Launcher | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        from cifar_sweep.search import optuna_study, workers

        s = self.settings
        config, launcher = self.config, self.launcher
        if config is None or launcher is None:
            raise RuntimeError("the optuna_study sweeper was not set up (Hydra calls setup first)")
        study = optuna_study.open_study(s["study_name"], s["storage"], s["direction"], s["seed"],
                                        _plain(s["pruner"]))
        space = optuna_study.distributions(_plain(s["space"]))
        for params in cast(list, OmegaConf.to_container(OmegaConf.create(s["enqueue"]))):
            study.enqueue_trial(params, skip_if_exists=True)
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(config, sweep_dir / "multirun.yaml")
        per_launch = s.get("trials_per_launch")  # checked by the sweep's preflight
        if per_launch is None:  # joblib's workers take queued jobs as they free up
            n_jobs = int(config.hydra.launcher.get("n_jobs") or 1)
            per_launch = 2 * n_jobs if n_jobs > 1 else 1
        job_index, waiting_said = 0, False
        with workers.Heartbeats(study, s["heartbeat_interval"]) as beats:
            while True:
                # count and ask under the lock: commands on one storage ask n_trials in all
                with workers.ask_lock(s["storage"]):
                    workers.fail_stale(study, s["grace_period"], s["max_retries"])
                    others = workers.running(study)  # other commands' trials in flight
                    left = s["n_trials"] - workers.trials_ended(study) - others
                    trials = []
                    for _ in range(min(per_launch, max(left, 0))):
                        workers.reseed(study.sampler, s["seed"], len(study.get_trials(False)))
                        trials.append(study.ask(space))
                        beats.add(trials[-1])
                if not trials:
                    if others == 0:
                        break
                    # the study's last trials run elsewhere: wait, to take over any whose
                    # command dies
                    if not waiting_said:
                        log.info("%d trial(s) of study %s run in other commands: waiting for "
                                 "them", others, s["study_name"])
                        waiting_said = True
                    time.sleep(min(10, s["heartbeat_interval"]))
                    continue
                batch = [list(arguments) + [f"{k}={v}" for k, v in t.params.items()]
                         + [f"optuna_trial={t.number}"] for t in trials]
                try:
                    results = launcher.launch(batch, initial_job_idx=job_index)
                except BaseException:  # Ctrl-C, kill: the next command asks them again
                    workers.requeue(study, trials)
                    raise
                job_index += len(batch)
                for trial, result in zip(trials, results):
                    optuna_study.tell(study, trial, result, s["metric"])
                    beats.discard(trial)
        from cifar_sweep.sweep_folder import parent_run_id
        from cifar_sweep.tracking.experiments import open_store

        optuna_study.summarise(study, open_store(config.tracking), parent_run_id(str(sweep_dir)),
                               s["metric"])
