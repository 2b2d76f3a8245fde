"""One job of `src/train.py`, in a handful of steps: check and load; decide what it will do
(`decision.py`: already finished, training elsewhere, continue from a checkpoint, train); then
skip it, leave a reference to the run that holds it, or train, evaluate on the test set and log.
"""

from __future__ import annotations

import logging
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import cast

import torch
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from cifar_sweep import faults, sweep_folder
from cifar_sweep.batches import Loader
from cifar_sweep.config.validate import check_config
from cifar_sweep.data import Dataset, subsets
from cifar_sweep.errors import UserInputError, Yielded
from cifar_sweep.job import endings, epoch_hooks, wrap_up
from cifar_sweep.job.batch_progress import BatchProgress
from cifar_sweep.job.context import JobContext
from cifar_sweep.job.endings import Ended, EndingClassifier
from cifar_sweep.plan import bulk_plan
from cifar_sweep.plan.decision import CONTINUE, ELSEWHERE, FINISHED, Decision, decide
from cifar_sweep.plan.identity import Identity, identify
from cifar_sweep.tracking import lifecycle, lineage, run_tags, store
from cifar_sweep.tracking import tags as t
from cifar_sweep.tracking.experiments import open_experiment
from cifar_sweep.tracking.queries import sweep_progress_in_store, sweep_varying
from cifar_sweep.tracking.runs import (
    flatten,
    git_commit,
    log_metrics,
    log_reference,
    logged_steps,
    tracked_run,
    yield_run,
)
from cifar_sweep.train import checkpoint, model_build, runtime
from cifar_sweep.train.loop import (
    Progress,
    build,
    early_stop,
    fit,
    restore,
    stop_reason,
)
from cifar_sweep.train.resources import reset_peak_rss

log = logging.getLogger("cifar_sweep")
# the run a signal stopped in this process (its id, name, whether a checkpoint was kept):
# src/train.py's last lines name it (commands/interrupted.py)
INTERRUPTED: dict = {}


@dataclass
class JobResult:
    """What a job hands back to its sweeper (the Optuna sweeper reads it)."""

    state: str  # finished, pruned, failed; stopped (a fault of the environment), not started
    metrics: dict[str, float] = field(default_factory=dict)
    epochs: int = 0
    run_id: str | None = None
    exit_code: int = 0  # a job alone: the command's exit status (src/train.py exits with it)


@dataclass
class Job:
    """A checked job and what it runs with: settled once, read by every step below."""

    cfg: DictConfig
    ctx: JobContext  # what its launcher tells it
    started: float
    rt: runtime.Runtime
    dataset: Dataset
    client: MlflowClient
    experiment_id: str
    identity: Identity
    name: str
    tags: dict[str, str]
    params: dict[str, str]
    ending: EndingClassifier  # how its exceptions end it: job/endings.py

    def checkpoint_path(self, run_id: str):
        return checkpoint.path_for(self.cfg.checkpoint.dir, self.identity.config_hash, run_id)


def run_job(cfg: DictConfig, ctx: JobContext | None = None) -> JobResult:
    """Check and load; decide; act. In a sweep a failure is logged and returned, and the other
    jobs go on; alone, the result carries the command's exit status. A fault of the environment
    (a full disk, GPU memory) stops the sweep: the later jobs do not start (faults.py). Every way
    it can end is a row of job/endings.py. `ctx`: what its launcher tells it (src/train.py builds
    it from Hydra); none: a job alone."""
    started = time.perf_counter()
    ctx = ctx or JobContext()
    reset_peak_rss()  # a worker process runs several jobs: each reports its own peak
    if ctx.sweep_dir is not None:  # a sweep's: parallel jobs' lines interleave, say whose
        _prefix_log_lines(f"#{ctx.job_num} ")
        if sweep_folder.sweep_stopped(ctx.sweep_dir):  # a full disk, GPU memory: see faults.py
            log.info("not started: the sweep stopped on a fault of the environment")
            return JobResult("not started")
    job = _prepare(cfg, ctx, started)
    if isinstance(job, JobResult):
        return job
    lifecycle.close_ghosts(job.client, [job.experiment_id])
    decision = decide(cfg, job.identity, job.client, job.experiment_id)
    claim = nullcontext()
    if decision.action == CONTINUE and decision.run is not None:  # one job continues a run:
        claim = checkpoint.claim(job.checkpoint_path(decision.run.info.run_id))  # held by it
        if claim is None:
            decision = Decision(ELSEWHERE, decision.run, note="continued by another job")
    if decision.note:
        log.info(decision.note)
    if decision.action in (FINISHED, ELSEWHERE):
        try:
            return _reference(job, decision)
        except Exception as exc:
            return _ended(job, job.ending.of(exc), None)
    with claim:
        return _train(job, decision)


def _prepare(cfg: DictConfig, ctx: JobContext, started: float) -> Job | JobResult:
    """The checks, the runtime, the data and the store: a bad value is one line, exit 2 (alone)
    or a failed job (in a sweep: the others run, the sweep's exit status reports it): endings'
    BAD_VALUE, before any run."""
    try:
        check_config(cfg)
        rt = runtime.resolve(cfg.trainer, ctx.n_jobs, ctx.job_num)
        dataset = subsets.load(cfg.data)
        if not ctx.multirun:  # a sweep's preflight checked each model on its data, once
            model_build.check_job(cfg, dataset)
        client, experiment_id = open_experiment(cfg.tracking)
    except UserInputError as exc:
        _say_error(ctx, str(exc))
        row = endings.WAYS[endings.BAD_VALUE]
        return JobResult(row.sweep, exit_code=0 if ctx.multirun else row.exit_code or 0)
    identity = identify(cfg, dataset.fingerprint, rt.device.type, rt.precision)
    name, tags = _name_and_tags(cfg, ctx, rt, dataset, client, identity)
    params = flatten(cast(dict, OmegaConf.to_container(cfg, resolve=True)))
    ending = EndingClassifier(str(cfg.tracking.uri), faults.write_folders(cfg), str(rt.device),
                              _gpu_advice(cfg, ctx.multirun))
    return Job(cfg, ctx, started, rt, dataset, client, experiment_id, identity, name, tags, params,
               ending)


def _reference(job: Job, decision: Decision) -> JobResult:
    """Train nothing. In a sweep, a reference run stands for the run that holds this config."""
    original = decision.run
    assert original is not None  # finished before, or training elsewhere: decide found it
    log.info("%s (%s)%s", decision.line(job.cfg.trainer.epochs), original.info.run_name,
             "; trainer.rerun=true trains it again" if decision.action == FINISHED else "")
    if job.ctx.parent:
        why = "done before" if decision.action == FINISHED else "training elsewhere"
        log_reference(job.client, job.experiment_id, f"{job.name} ({why})", job.tags,
                        job.params, original, job.cfg.trainer.epochs, job.ending.of)
        _log_sweep_progress(job)
    return JobResult("finished", dict(original.data.metrics), job.cfg.trainer.epochs,
                     original.info.run_id)


def _train(job: Job, decision: Decision) -> JobResult:
    """Train (anew, or from the decision's checkpoint), evaluate, log; then end as the table in
    job/endings.py says, whichever way it ended."""
    cfg, client = job.cfg, job.client
    resume = decision.run if decision.action == CONTINUE else None
    reporter = job.ctx.reporter  # a search's trial reports every epoch (and may be pruned)
    run_id = None
    lock = store.claim_lock(client.tracking_uri) if resume is None else None
    try:
        with tracked_run(client, job.experiment_id, name=job.name, tags=job.tags,
                         params=job.params, ending=job.ending.of,
                         resume_id=resume.info.run_id if resume else None, lock=lock) as run_id:
            if resume is None:  # two commands with one config: the first run created trains
                try:
                    _claim(job, run_id, locked=lock is not None)
                finally:
                    if lock is not None:
                        lock.release()
            log.info("run %s (%s) on %s, %d threads, data %s (%s), config %s%s", run_id, job.name,
                     job.rt.device, job.rt.threads, job.dataset.fingerprint, job.dataset.cache,
                     job.identity.config_hash, _continuing(decision.state, cfg))
            with lineage.recorded(cfg, client, run_id, job.dataset,
                                  resumed=decision.state is not None):
                summary = _fit_and_log(job, run_id, decision.state, reporter)
    except Exception as exc:  # (a signal's SystemExit goes on: the run is closed KILLED)
        return _ended(job, job.ending.of(exc), run_id)
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C, kill: train.py's last lines name the run
        if run_id is not None:
            INTERRUPTED.update(run_id=run_id, name=job.name,
                               checkpoint=job.checkpoint_path(run_id).is_file())
        raise
    if not cfg.checkpoint.keep:
        checkpoint.remove(job.checkpoint_path(run_id))
    if job.ctx.parent:
        _log_sweep_progress(job, whole=resume is None)
    return JobResult("finished", summary, cfg.trainer.epochs, run_id)


def _ended(job: Job, ended: Ended, run_id: str | None) -> JobResult:
    """What follows a job's end, by its row of endings.WAYS: its checkpoint, its line, the sweep's
    stop marker, what the sweeper is told and, alone, the exit status (or the error goes on)."""
    row, exc = ended.row, ended.exc
    job.ending.forget(exc)
    path = job.checkpoint_path(run_id) if run_id else None
    if row.checkpoint == endings.REMOVED and path is not None:
        checkpoint.remove(path)
    # another command trains this config: stand aside. Its own branch: it acts on the store and
    # the sweep from the job's state, and answers with the run that trains it
    if ended.way == endings.ELSEWHERE:
        assert isinstance(exc, Yielded)
        if run_id:
            yield_run(job.client, run_id, exc.winner.info.run_id, reference=bool(job.ctx.parent))
        if job.ctx.parent:
            _log_sweep_progress(job)
        log.info("%s (%s)", Decision(ELSEWHERE, exc.winner).line(0), exc.winner.info.run_name)
        return JobResult(row.sweep, {}, 0, exc.winner.info.run_id)
    # a failed run in a sweep: the other jobs still run, and the sweep's exit status reports it
    if job.ctx.multirun and row.status == "FAILED":
        log.error("run %s failed: %s", run_id, ended.reason)
        _log_sweep_progress(job, failed=True)
    elif row.line is not None and row.logged:
        log.info(row.line(ended, run_id, path))
    elif row.line is not None:
        _say_error(job.ctx, row.line(ended, run_id, path))
    if row.stops_sweep and job.ctx.sweep_dir and ended.fault is not None:
        sweep_folder.stop_sweep(job.ctx.sweep_dir, ended.fault, f"#{job.ctx.job_num}")
    if job.ctx.multirun:
        return JobResult(row.sweep, epochs=ended.epochs, run_id=run_id)
    if row.exit_code is endings.RAISED:
        raise exc
    return JobResult(row.sweep, epochs=ended.epochs, run_id=run_id, exit_code=row.exit_code)


def _claim(job: Job, run_id: str, locked: bool) -> None:
    """Raise Yielded where another live run of this config and code was created first.
    `locked`: this run was created and checks under the store's claim lock, so any other live
    run was written before it and wins; on a server, the first started wins."""
    live = lifecycle.live_runs(job.client, job.experiment_id, job.identity.config_hash,
                               job.identity.code_version)
    first = next((r for r in live if r.info.run_id != run_id), None) if locked else \
        (live[0] if live else None)
    if first is not None and first.info.run_id != run_id:
        raise Yielded(first)


def _fit_and_log(job: Job, run_id: str, state: dict | None, reporter) -> dict[str, float]:
    """Build, continue from `state` if given, fit with the epoch hooks, test and log."""
    cfg, client = job.cfg, job.client
    parts = build(model_build.for_build(cfg), job.dataset, job.rt)
    progress, seconds_before = None, 0.0
    if state is not None:  # continue where the checkpoint stands
        progress = restore(parts, state)
        seconds_before = state["job_seconds"]
        _log_missing_epochs(client, run_id, progress)
    if job.rt.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(job.rt.device)
    shown = epoch_hooks.ShowProgress(cfg.trainer.epochs, progress.epoch if progress else 0)
    # progress inside each epoch, from outside the (hashed) loop: it iterates parts.train;
    # jobs side by side on one terminal would draw over each other's bars: lines instead
    side_by_side = job.ctx.multirun and job.ctx.n_jobs > 1
    parts.train = cast(Loader, BatchProgress(parts.train, cfg.trainer.epochs,
                                             progress.epoch if progress else 0,
                                             terminal=False if side_by_side else None,
                                             interrupted=job.ctx.interrupted))
    after_epoch = epoch_hooks.chain(
        epoch_hooks.SaveCheckpoint(job.checkpoint_path(run_id), parts, seconds_before,
                                   job.started),
        epoch_hooks.LogMetrics(client, run_id), shown,
        epoch_hooks.ReportToTrial(reporter) if reporter else None)
    stop = early_stop(cfg.trainer)
    result = fit(parts, cfg.trainer.epochs, progress, after_epoch, stop)
    shown.close()
    _log_stop(client, run_id, result, stop)
    if cfg.trainer.get("skip_test"):  # a tuned study's trial: the test set stays unseen
        summary = wrap_up.validation_only(cfg, parts, result, client, run_id)
    else:
        summary = wrap_up.test_and_log(cfg, parts, job.dataset, result, client, run_id)
    summary["stopped_epoch"] = result.epoch
    summary["total_seconds"] = seconds_before + time.perf_counter() - job.started
    log_metrics(client, run_id, summary, result.epoch)  # the last epoch trained: early stopping
    tested = (f"test accuracy {summary['test_accuracy']:.4f}" if "test_accuracy" in summary
              else f"validation accuracy {summary['best_val_accuracy']:.4f} (test set not used)")
    log.info("%s  (best epoch %d, %.1f s, %.0f images/s)", tested,
             result.best_epoch, summary["total_seconds"], summary["train_images_per_second"])
    return summary


def _log_stop(client, run_id: str, result: Progress, stop) -> None:
    """Why training ended (the `stop_reason` tag; the epoch: the `stopped_epoch` metric)."""
    reason = stop_reason(result, stop)
    client.set_tag(run_id, t.STOP_REASON, reason)
    if reason != t.REACHED_EPOCHS:
        log.info("early-stopped after epoch %d: validation accuracy not above %.4f + %g for %d "
                 "epochs (best %.4f at epoch %d)", result.epoch, result.stop_reference,
                 stop.min_delta, stop.patience, result.best_val_accuracy, result.best_epoch)


def _log_missing_epochs(client, run_id: str, progress: Progress) -> None:
    """Log the epochs the checkpoint holds but the store lacks (a kill between the two writes),
    so that every epoch is logged exactly once."""
    logged = logged_steps(client, run_id, "val_accuracy")
    for epoch in range(1, progress.epoch + 1):
        if epoch not in logged:
            log_metrics(client, run_id, {k: v[epoch - 1] for k, v in progress.history.items()},
                          epoch)


def _continuing(state: dict | None, cfg: DictConfig) -> str:
    if state is None:
        return ""
    done, stop = state["progress"]["epoch"], early_stop(cfg.trainer)
    # its results could not be written (a full disk): they are now
    if done >= cfg.trainer.epochs or (stop is not None and stop.reached(Progress(**state["progress"]))):
        return f", trained ({done} epochs): evaluating and logging it from its checkpoint"
    return f", continuing from epoch {done + 1}"


def _gpu_advice(cfg, multirun: bool) -> str:
    batch = f"trainer.batch_size (now {cfg.trainer.batch_size}: a new batch size starts anew)"
    if multirun:
        return f"lower trainer.jobs_per_gpu (now {cfg.trainer.jobs_per_gpu}) or {batch}"
    return f"free the GPU of other processes or lower {batch}"


def _name_and_tags(cfg, ctx: JobContext, rt, dataset, client,
                   identity: Identity) -> tuple[str, dict]:
    tags = run_tags.job(
        choices=ctx.choices, identity=identity.tags(), fingerprint=dataset.fingerprint,
        data_cache=dataset.cache, device=str(rt.device), precision=rt.precision,
        overrides=ctx.overrides, study=str(cfg.study.name or ""), git_commit=git_commit(),
        owner=lifecycle.owner_tags(), parent=ctx.parent, job_num=ctx.job_num,
        threads=rt.threads, trial=cfg.optuna_trial, trial_tags=ctx.trial_tags)
    if not ctx.parent:
        return f"{tags['model']} {tags['optimizer']} lr={cfg.lr.value}", tags
    varying = sweep_varying(client, ctx.parent)
    return f"#{ctx.job_num} {bulk_plan.short_overrides(list(ctx.overrides), varying)}", tags


def _say_error(ctx: JobContext, line: str) -> None:
    """A job's one error line, on stderr; in a sweep it names the job, as its log lines do
    (parallel jobs' lines interleave)."""
    print(f"error: job #{ctx.job_num}: {line}" if ctx.multirun else f"error: {line}",
          file=sys.stderr)


def _prefix_log_lines(prefix: str) -> None:
    for handler in logging.getLogger().handlers:
        if handler.formatter is not None:
            fmt = (handler.formatter._fmt or "%(message)s").replace("%(message)s",
                                                                  prefix + "%(message)s")
            handler.setFormatter(logging.Formatter(fmt, handler.formatter.datefmt))


def _log_sweep_progress(job: Job, failed: bool = False, whole: bool = False) -> None:
    """Parallel jobs' progress bars cannot show the sweep's: each job ends with a line for it
    (the jobs it launched: not those finished before), from the sweep folder's record, else
    from the parent run's children. `whole`: the job trained from its first epoch."""
    seconds = time.perf_counter() - job.started if whole else None
    progress = (sweep_folder.record_job_end(job.ctx.sweep_dir, job.ctx.job_num, failed, seconds)
                if job.ctx.sweep_dir else None)
    whole_jobs = (sweep_folder.whole_job_seconds(job.ctx.sweep_dir)
                  if progress and job.ctx.sweep_dir else None)
    if progress is None:
        if job.ctx.parent is None:  # a sweep without its callback (hydra.callbacks replaced)
            return
        progress = sweep_progress_in_store(job.client, job.experiment_id, job.ctx.parent)
    total, done, n_failed, elapsed = progress
    left = max(0, total - done - n_failed)
    at_once = min(job.ctx.side_by_side, total) if job.ctx.side_by_side else None
    log.info("sweep: %d of %d jobs finished, %d failed%s", done, total, n_failed,
             _time_left(left, elapsed, done + n_failed, whole_jobs, at_once))


def _time_left(left: int, elapsed: float, ended: int, whole_jobs: list[float] | None,
               at_once: int | None) -> str:
    """`, about N min left`: from the jobs that trained from their first epoch (the sweep
    folder's record: the mean of their times, `at_once` of them running together), because a
    continued job ends early: from the time since the launch over the jobs ended, a sweep
    continued after a stop said "2.0 min left" with 20 to go. Without that record or where the
    launcher does not say how many run at once (`whole_jobs` or `at_once` None: a search, Ray),
    from the time since the launch; nothing until a whole job has ended."""
    if not left or not ended:
        return ""
    if whole_jobs is None or at_once is None:
        seconds = elapsed / ended * left
    elif whole_jobs:
        seconds = sum(whole_jobs) / len(whole_jobs) * left / at_once
    else:
        return ""
    return f", about {seconds / 60:.1f} min left"
