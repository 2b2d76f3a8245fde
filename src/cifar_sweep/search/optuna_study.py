"""Hyperparameter search with Optuna: the study side (used by the `optuna_study` sweeper in
`src/hydra_plugins/cifar_sweep_optuna/`) and the trial side (a job reporting each epoch's
validation accuracy to its trial, and stopping when the pruner says so).
"""

from __future__ import annotations

import logging
import math
import tempfile
import uuid
import warnings
from pathlib import Path
from typing import Any, Literal, cast

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState

from cifar_sweep.errors import Pruned, UserInputError
from cifar_sweep.search.workers import open_storage, taken_over
from cifar_sweep.tracking import tags as t

log = logging.getLogger(__name__)
optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own lines say what happens


# --- the study side ---------------------------------------------------------------------------

def _storage(url: str) -> optuna.storages.BaseStorage:
    return open_storage(url)  # journal:<path>, sqlite:///<path> or a database URL


PRUNERS = {"median": optuna.pruners.MedianPruner,
           "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
           "none": optuna.pruners.NopPruner}
# what a search may optimise: a job's own metrics, never a test-set one (the test set chooses
# nothing)
METRICS = ("best_val_accuracy", "train_seconds", "total_seconds", "peak_memory_mb")


def make_pruner(spec: dict) -> optuna.pruners.BasePruner:
    kind = spec.get("kind", "median")
    args = {k: v for k, v in spec.items() if k != "kind"}
    if kind not in PRUNERS:
        raise UserInputError(f"hydra.sweeper.pruner.kind={kind} is invalid: allowed: "
                             f"{', '.join(PRUNERS)}")
    try:
        return PRUNERS[kind](**args)
    except (TypeError, ValueError) as exc:  # an unknown or out-of-range setting
        raise UserInputError(f"hydra.sweeper.pruner={spec} is invalid for the {kind} pruner: "
                             f"{exc}") from None


def check_settings(settings: dict) -> None:
    """The sweeper's settings, before a parent run or a study exists: one line on the first
    problem (the space's keys and values are checked as configs by the sweep's preflight)."""
    def positive_int(key: str, value, allow_none: bool = False) -> None:
        if (value is None and allow_none) or (isinstance(value, int) and value >= 1):
            return
        raise UserInputError(f"hydra.sweeper.{key}={value} is invalid: allowed: an integer >= 1"
                             + (", or null" if allow_none else ""))

    positive_int("n_trials", settings.get("n_trials"))
    positive_int("trials_per_launch", settings.get("trials_per_launch"), allow_none=True)
    positive_int("heartbeat_interval", settings.get("heartbeat_interval"))
    beat, grace = settings.get("heartbeat_interval"), settings.get("grace_period")
    if not (isinstance(grace, int) and isinstance(beat, int) and grace > beat):
        raise UserInputError(f"hydra.sweeper.grace_period={grace} is invalid: allowed: an integer "
                             f"> hydra.sweeper.heartbeat_interval ({beat}); seconds without a "
                             "heartbeat before a trial's command is taken for dead")
    retries = settings.get("max_retries")
    if not (isinstance(retries, int) and not isinstance(retries, bool) and retries >= 0):
        raise UserInputError(f"hydra.sweeper.max_retries={retries} is invalid: allowed: an "
                             "integer >= 0")
    storage = str(settings.get("storage", ""))
    if storage.startswith("journal:") and not storage.removeprefix("journal:"):
        raise UserInputError("hydra.sweeper.storage=journal: is invalid: allowed: "
                             "journal:<file path>, sqlite:///<file path> or a database URL")
    if settings.get("direction") not in ("maximize", "minimize"):
        raise UserInputError(f"hydra.sweeper.direction={settings.get('direction')} is invalid: "
                             "allowed: maximize, minimize")
    if settings.get("metric") not in METRICS:
        raise UserInputError(f"hydra.sweeper.metric={settings.get('metric')} is invalid: allowed: "
                             f"{', '.join(METRICS)} (never a test-set metric)")
    make_pruner(settings.get("pruner") or {})
    if not settings.get("space"):
        raise UserInputError("hydra.sweeper.space is empty: give it at least one key, e.g. "
                             "{lr.value: {type: float, low: 1e-4, high: 0.3, log: true}}")
    distributions(settings["space"])


def corner_overrides(space: dict[str, dict]) -> list[list[str]]:
    """Overrides that reach every edge of the space once: all lows, all highs, each choice.
    Composed and checked like a grid sweep's jobs, they catch a misspelt key or a bad value."""
    numeric = {k: s for k, s in space.items() if s.get("type", "float") != "categorical"}
    jobs = [[f"{k}={s[end]}" for k, s in numeric.items()] for end in ("low", "high")]
    jobs += [[f"{k}={choice}"] for k, s in space.items()
             if s.get("type", "float") == "categorical" for choice in s["choices"]]
    return [job for job in jobs if job]


def open_study(name: str, storage: str, direction: str, seed: int | None,
               pruner: dict) -> optuna.Study:
    with warnings.catch_warnings():  # Optuna 4 marks constant_liar experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # trials asked together: the sampler assumes the worst for those still running, so that
        # it does not ask the same point again (Optuna 5's default; Optuna 4's is off)
        sampler = optuna.samplers.TPESampler(seed=seed, constant_liar=True)
    study = optuna.create_study(study_name=name, storage=_storage(storage),
                                direction=cast(Literal["minimize", "maximize"], direction),
                                sampler=sampler, pruner=make_pruner(pruner), load_if_exists=True)
    if UID not in study.user_attrs:  # made now: a new id, so that its trials never mix with
        study.set_user_attr(UID, uuid.uuid4().hex[:12])  # an older study of the same name
    return study


UID = "cifar_sweep.uid"  # a study's user attribute: the id its trials' runs are tagged with


def study_tags(sweeper: Any) -> dict[str, str]:
    """What a trial's run is tagged with: its study's name, id and storage (the search's table
    takes the trials of one study only)."""
    study = optuna.load_study(study_name=sweeper.study_name, storage=_storage(sweeper.storage))
    return {t.HPO_STUDY: str(sweeper.study_name), t.HPO_STUDY_UID: study.user_attrs.get(UID, ""),
            t.HPO_STORAGE: str(sweeper.storage)}


def distributions(space: dict[str, dict]) -> dict[str, Any]:
    out: dict[str, BaseDistribution] = {}
    for key, spec in space.items():
        kind = spec.get("type", "float") if isinstance(spec, dict) else None
        try:
            if kind == "float":
                out[key] = FloatDistribution(spec["low"], spec["high"], log=spec.get("log", False),
                                             step=spec.get("step"))
            elif kind == "int":
                out[key] = IntDistribution(spec["low"], spec["high"], log=spec.get("log", False),
                                           step=spec.get("step", 1))
            elif kind == "categorical":
                out[key] = CategoricalDistribution(list(spec["choices"]))
            else:
                raise UserInputError(f"hydra.sweeper.space.{key}={spec} is invalid: its type "
                                     "must be float, int or categorical")
        except (KeyError, TypeError, ValueError) as exc:  # a missing bound, low > high, ...
            missing = f"it lacks {exc}" if isinstance(exc, KeyError) else str(exc)
            raise UserInputError(f"hydra.sweeper.space.{key}={spec} is invalid: {missing}; "
                                 "allowed: {type: float|int, low, high, log, step} or "
                                 "{type: categorical, choices: [...]}") from None
    return out


def tell(study: optuna.Study, trial: optuna.trial.Trial, launched, metric: str) -> None:
    if taken_over(study, trial):  # several commands on one study: see hpo_workers
        return
    try:
        result = launched.return_value
    except Exception as exc:  # the job raised: Hydra keeps the exception in its JobReturn
        log.warning("trial %d failed: %s", trial.number, exc)
        study.tell(trial, state=TrialState.FAIL)
        return
    state = getattr(result, "state", "failed")  # a job.JobResult
    if state == "failed":
        study.tell(trial, state=TrialState.FAIL)
        log.info("trial %d failed", trial.number)
    elif state == "pruned":
        study.tell(trial, state=TrialState.PRUNED)
        log.info("trial %d pruned after epoch %d", trial.number, result.epochs)
    elif not math.isfinite(result.metrics.get(metric, math.nan)):
        study.tell(trial, state=TrialState.FAIL)
    else:
        study.tell(trial, result.metrics[metric])
        log.info("trial %d: %s %.4f %s", trial.number, metric, result.metrics[metric],
                 trial.params)


def summarise(study: optuna.Study, client, parent: str | None, metric: str) -> None:
    """The best trial's value and parameters, the optimisation history and the parameters'
    importance, on the sweep's parent run."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        log.warning("study %s: no trial completed", study.study_name)
        return
    best = study.best_trial
    log.info("study %s: best trial %d, %s %.4f, %s", study.study_name, best.number, metric,
             best.value, best.params)
    if parent is None:
        return
    client.log_metric(parent, f"best_{metric}", best.value)
    client.log_metric(parent, "trials_complete", len(complete))
    client.set_tag(parent, t.HPO_BEST_TRIAL, str(best.number))
    for key, value in best.params.items():
        client.set_tag(parent, t.HPO_BEST + key, str(value))
    with tempfile.TemporaryDirectory() as tmp:
        figures(study, Path(tmp))
        client.log_artifacts(parent, tmp)


def figures(study: optuna.Study, out: Path) -> None:
    with warnings.catch_warnings():  # Optuna marks its matplotlib plots experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        _figures(study, out)


def _figures(study: optuna.Study, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    ovm.plot_optimization_history(study)
    plt.gcf().set_size_inches(8, 5)
    plt.tight_layout()
    plt.savefig(out / "optimization_history.png", dpi=110)
    plt.close("all")
    if len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) > 1:
        try:
            ovm.plot_param_importances(study)
        except (RuntimeError, ValueError) as exc:  # e.g. every trial had the same parameters
            log.warning("no parameter importance figure: %s", exc)
        else:
            plt.gcf().set_size_inches(8, 5)
            plt.tight_layout()
            plt.savefig(out / "param_importances.png", dpi=110)
        plt.close("all")


# --- the trial side ---------------------------------------------------------------------------

class TrialReporter:
    """Reports each epoch's validation accuracy to the job's trial; raises Pruned when the
    study's pruner stops it."""

    def __init__(self, sweeper: Any, number: int):
        storage = _storage(sweeper.storage)
        study = optuna.load_study(study_name=sweeper.study_name, storage=storage,
                                  pruner=make_pruner(dict(sweeper.pruner)))
        study_id = storage.get_study_id_from_name(sweeper.study_name)
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
        self.trial = optuna.trial.Trial(study, trial_id)

    def __call__(self, epoch: int, value: float) -> None:
        self.trial.report(value, epoch)
        if self.trial.should_prune():
            raise Pruned(epoch)  # the job ends its run KILLED, tagged as pruned
