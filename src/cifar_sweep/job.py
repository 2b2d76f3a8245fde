"""One job of `src/train.py`: check, load; skip it if its config already finished, or continue
it from its checkpoint if it was interrupted; train, evaluate on the test set, log it all."""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from mlflow.entities import Metric, RunTag
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from cifar_sweep import checkpoint, lifecycle, lineage, plots, runtime
from cifar_sweep import tracking as t
from cifar_sweep.data import load_dataset
from cifar_sweep.errors import NonFiniteLossError, Pruned, UserInputError
from cifar_sweep.identity import config_hash
from cifar_sweep.metrics import classification_report
from cifar_sweep.models import parameter_count, state_dict_fp32_mb
from cifar_sweep.resources import peak_rss_mb, reset_peak_rss
from cifar_sweep.sweep import parent_run_id
from cifar_sweep.training import Progress, build, evaluate, fit, restore, training_state
from cifar_sweep.validate import check_config

log = logging.getLogger("cifar_sweep")


def _metrics(values: dict, step: int = 0) -> list[Metric]:
    now = int(time.time() * 1000)
    return [Metric(k, float(v), now, step) for k, v in values.items()]


def _peak_memory(device: torch.device) -> tuple[float, str]:
    """(peak MB, what was measured): on a GPU the peak of tensor memory allocated by torch; on a
    CPU this process's peak resident memory since the job started, the data in memory included."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e6, "gpu_allocated"
    return peak_rss_mb(), "process_rss"


@dataclass
class JobResult:
    """What a job hands back to its sweeper (the Optuna sweeper reads it)."""

    state: str  # finished, pruned, failed
    metrics: dict[str, float] = field(default_factory=dict)
    epochs: int = 0
    run_id: str | None = None


FAILED = JobResult("failed")


def run_job(cfg: DictConfig) -> JobResult:
    """One job, top to bottom: preflight; skip it if its config finished before, continue it
    if it was interrupted; train, evaluate, log. In a sweep a failure is logged and returned,
    and the other jobs go on; alone, it exits non-zero."""
    started = time.perf_counter()
    reset_peak_rss()  # a worker process runs several jobs: each reports its own peak
    hydra = HydraConfig.get()
    multirun = hydra.mode == RunMode.MULTIRUN
    if multirun:  # parallel jobs' lines interleave: say whose each one is
        _prefix_log_lines(f"#{hydra.job.num} ")
    try:
        check_config(cfg)
        rt = runtime.resolve(cfg.trainer, int(hydra.launcher.get("n_jobs") or 1) if multirun else 1,
                             int(hydra.job.num or 0) if multirun else 0)
        dataset = load_dataset(instantiate(cfg.data.source), cfg.data.cache_dir)
        client, experiment_id = t.open_experiment(cfg.tracking)
    except UserInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if multirun:  # let the other jobs run; the sweep's exit status reports this one
            return FAILED
        sys.exit(2)

    identity = config_hash(cfg, dataset.fingerprint, rt.device.type)
    parent = parent_run_id(hydra.sweep.dir) if multirun else None
    run_name, tags = _name_and_tags(cfg, hydra, rt, dataset, identity, client, parent)
    params = t.flatten(OmegaConf.to_container(cfg, resolve=True))

    lifecycle.close_ghosts(client, [experiment_id])
    finished = None if cfg.trainer.rerun else lifecycle.find_finished(client, identity)
    if finished is not None:
        return _already_finished(client, experiment_id, finished, parent, run_name, tags, params,
                                 cfg.trainer.epochs)
    path_of = lambda run_id: checkpoint.path_for(cfg.checkpoint.dir, identity, run_id)  # noqa: E731
    previous = lifecycle.find_resumable(client, experiment_id, identity,
                                        lambda run_id: path_of(run_id).is_file())
    state = checkpoint.load(path_of(previous.info.run_id)) if previous else None
    run_id = resume_id = previous.info.run_id if state is not None else None
    report = None
    if cfg.optuna_trial is not None:  # a trial of an Optuna study: it reports every epoch
        from cifar_sweep.hpo import TrialReporter

        report = TrialReporter(hydra.sweeper, int(cfg.optuna_trial))
    try:
        with t.tracked_run(client, experiment_id, name=run_name, tags=tags, params=params,
                           resume_id=resume_id) as run_id:
            log.info("run %s (%s) on %s, %d threads, data %s (%s), config %s%s", run_id, run_name,
                     rt.device, rt.threads, dataset.fingerprint, dataset.cache, identity,
                     f", continuing from epoch {state['progress']['epoch'] + 1}" if state else "")
            with lineage.recorded(cfg, client, run_id, dataset, resumed=state is not None):
                summary = _train_and_log(cfg, dataset, rt, client, run_id, started,
                                         path_of(run_id), state, report)
    except Pruned as exc:  # the run is KILLED with the reason; nothing to continue
        checkpoint.remove(path_of(run_id))
        log.info("run %s: %s", run_id, exc)
        return JobResult("pruned", epochs=exc.epoch, run_id=run_id)
    except t.TrackingServerLost as exc:  # its checkpoint stays: the same command continues it
        print(f"error: {exc}", file=sys.stderr)
        if multirun:  # the sweep goes on, and reports the server
            return FAILED
        sys.exit(1)
    except Exception as exc:  # the run is FAILED; a checkpoint of a failed run is no use
        if t.out_of_time(exc):  # KILLED, its checkpoint kept: the same command continues it
            print(f"error: run {run_id} stopped: {exc}", file=sys.stderr)
            if multirun:
                return FAILED
            sys.exit(1)
        if run_id:
            checkpoint.remove(path_of(run_id))
        reason = f"{type(exc).__name__}: {exc}"
        if multirun:  # the other jobs still run; the sweep's exit status reports the failure
            log.error("run %s failed: %s", run_id, reason)
            _log_sweep_progress(client, experiment_id, parent)
            return JobResult("failed", run_id=run_id)
        if isinstance(exc, NonFiniteLossError):
            print(f"error: run {run_id} failed: {reason}", file=sys.stderr)
            sys.exit(1)
        raise
    if not cfg.checkpoint.keep:
        checkpoint.remove(path_of(run_id))
    if parent:
        _log_sweep_progress(client, experiment_id, parent)
    return JobResult("finished", summary, cfg.trainer.epochs, run_id)


def _name_and_tags(cfg, hydra, rt, dataset, identity, client, parent) -> tuple[str, dict]:
    choices = {g: str(hydra.runtime.choices.get(g)) for g in t.GROUPS}
    tags = {**choices, "git_commit": t.git_commit(), t.DATA_FINGERPRINT: dataset.fingerprint,
            "data_cache": dataset.cache, "device": str(rt.device), "num_threads": str(rt.threads),
            t.ROLE: t.ROLE_JOB, t.CONFIG_HASH: identity, "mlflow.source.name": "src/train.py",
            t.JOB_OVERRIDES: " ".join(hydra.overrides.task), "study.name": str(cfg.study.name or ""),
            **lifecycle.owner_tags()}
    tags.update(lineage.source_tags(tags["git_commit"]))  # the UI's Source column
    if cfg.optuna_trial is not None:
        tags[t.TRIAL] = str(cfg.optuna_trial)
    if not parent:
        return f"{choices['model']} {choices['optimizer']} lr={cfg.lr.value}", tags
    tags[t.PARENT] = parent
    tags[t.JOB_NUM] = str(hydra.job.num)
    varying = client.get_run(parent).data.tags.get(t.SWEEP_VARYING, "").split()
    return f"#{hydra.job.num} {_short_overrides(hydra.overrides.task, varying)}", tags


def _short_overrides(overrides: list[str], keys: list[str]) -> str:
    """`lr.value=0.005 seed=1`: the values the sweep varies, not every override repeated."""
    chosen = [o for o in overrides if o.partition("=")[0] in keys] or overrides
    return " ".join(o.lstrip("+").removeprefix("trainer.") for o in chosen) or "defaults"


def _prefix_log_lines(prefix: str) -> None:
    for handler in logging.getLogger().handlers:
        if handler.formatter is not None:
            fmt = handler.formatter._fmt.replace("%(message)s", prefix + "%(message)s")
            handler.setFormatter(logging.Formatter(fmt, handler.formatter.datefmt))


def _already_finished(client, experiment_id, finished, parent, run_name, tags, params,
                      epochs) -> float | None:
    """Train nothing. In a sweep, a reference run stands in the sweep for the finished run: the
    UI shows the sweep whole, and the report reads the finished run in its place."""
    log.info("already finished: run %s (%s); trainer.rerun=true trains it again",
             finished.info.run_id, finished.info.run_name)
    if parent:
        ref_tags = {**tags, t.ROLE: t.ROLE_REFERENCE, t.SAME_AS: finished.info.run_id}
        with t.tracked_run(client, experiment_id, name=f"{run_name} (done before)", tags=ref_tags,
                           params=params) as ref_id:
            client.log_batch(ref_id, metrics=_metrics(finished.data.metrics, step=epochs))
        _log_sweep_progress(client, experiment_id, parent)
    return JobResult("finished", dict(finished.data.metrics), epochs, finished.info.run_id)


def _log_sweep_progress(client, experiment_id: str, parent: str) -> None:
    """Parallel jobs' progress bars cannot show the sweep's: each job ends with a line for it."""
    sweep = client.get_run(parent)
    total = int(sweep.data.tags.get(t.SWEEP_JOBS, "0"))
    children = client.search_runs([experiment_id], f"tags.`{t.PARENT}` = '{parent}'",
                                  max_results=10000)
    done = sum(c.info.status == "FINISHED" for c in children)
    failed = sum(c.info.status in ("FAILED", "KILLED") for c in children)
    elapsed = time.time() - sweep.info.start_time / 1000
    left = max(0, total - done - failed)
    eta = f", about {elapsed / (done + failed) * left / 60:.1f} min left" if done + failed else ""
    log.info("sweep: %d of %d jobs finished, %d failed%s", done, total, failed, eta)


def _train_and_log(cfg, dataset, rt, client, run_id, started, checkpoint_path, state,
                   report=None) -> dict[str, float]:
    parts = build(cfg, dataset, rt)
    progress, seconds_before = None, 0.0
    if state is not None:  # continue where the checkpoint stands
        progress = restore(parts, state)
        seconds_before = state["job_seconds"]
        _log_missing_epochs(client, run_id, progress)
    if rt.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(rt.device)
    epochs = cfg.trainer.epochs
    show_bar = sys.stderr.isatty()
    bar = tqdm(total=epochs, initial=progress.epoch if progress else 0, desc="epochs",
               disable=not show_bar, leave=False)
    last = [time.perf_counter()]

    def after_epoch(p: Progress, row: dict) -> None:
        # the checkpoint first: a kill before the metrics are logged loses no epoch, as the
        # resumed run logs what its checkpoint holds and the store lacks
        job_seconds = seconds_before + time.perf_counter() - started
        checkpoint.save(checkpoint_path, {**training_state(parts, p), "job_seconds": job_seconds})
        now = time.perf_counter()
        heartbeat = lifecycle.epoch_heartbeat(now - last[0])
        last[0] = now
        client.log_batch(run_id, metrics=_metrics(row, step=p.epoch),
                         tags=[RunTag(k, v) for k, v in heartbeat.items()])
        line = (f"epoch {p.epoch}/{epochs}  train loss {row['train_loss']:.4f} acc "
                f"{row['train_accuracy']:.4f}  val loss {row['val_loss']:.4f} acc "
                f"{row['val_accuracy']:.4f}  lr {row['lr']:.2e}  {row['epoch_seconds']:.1f}s")
        if show_bar:
            bar.update(1)
            bar.set_postfix_str(f"val acc {row['val_accuracy']:.4f}")
        log.info(line)
        if report is not None:  # may raise Pruned: the study's pruner stops this trial
            report(p.epoch, row["val_accuracy"])

    result = fit(parts, epochs, progress, after_epoch)
    bar.close()

    test = evaluate(parts, parts.test)
    peak_mb, peak_kind = _peak_memory(rt.device)
    client.set_tag(run_id, t.PEAK_MEMORY, peak_kind)
    report = classification_report(test.logits, test.labels, len(dataset.classes))
    summary = {
        **report["scalars"],
        "test_loss": test.loss,
        "best_epoch": result.best_epoch,
        "best_val_accuracy": result.best_val_accuracy,
        "parameters": parameter_count(parts.model),
        "model_size_fp32_mb": state_dict_fp32_mb(parts.model),
        "peak_memory_mb": peak_mb,
        "train_seconds": result.fit_seconds,
        "train_images_per_second": result.images_seen / result.train_seconds,
        **{f"test_accuracy_{c}": a for c, a in zip(dataset.classes, report["per_class_accuracy"])},
    }
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        if cfg.tracking.figures:  # about 3 s a run on a CPU: searches turn them off
            plots.learning_curves(result.history, out / "curves.png", title=run_id)
            plots.confusion_matrix(report["confusion"], dataset.classes,
                                   out / "confusion_matrix.png")
            probs = test.logits.softmax(1)
            images = dataset.test.images.float() / 255
            for correct, name in ((True, "correct.png"), (False, "wrong.png")):
                plots.prediction_grid(images, test.labels, probs, dataset.classes, correct,
                                      out / name)
        (out / "evaluation.json").write_text(json.dumps({
            "classes": dataset.classes, "confusion": report["confusion"],
            "per_class_accuracy": report["per_class_accuracy"], **report["scalars"]}, indent=1))
        plain = getattr(parts.model, "_orig_mod", parts.model)  # torch.compile's wrapper
        torch.save({k: v.cpu() for k, v in plain.state_dict().items()}, out / "best_weights.pt")
        client.log_artifacts(run_id, str(out))
        if cfg.tracking.log_model:  # the run's `model` (docs/mlflow.md); searches turn it off
            lineage.log_model(client, run_id, plain, cfg, dataset, epochs)
    summary["total_seconds"] = seconds_before + time.perf_counter() - started
    client.log_batch(run_id, metrics=_metrics(summary, step=epochs))
    log.info("test accuracy %.4f  (best epoch %d, %.1f s, %.0f images/s)", summary["test_accuracy"],
             result.best_epoch, summary["total_seconds"], summary["train_images_per_second"])
    return summary


def _log_missing_epochs(client, run_id: str, progress: Progress) -> None:
    """Log the epochs the checkpoint holds but the store lacks (a kill between the two writes),
    so that every epoch is logged exactly once."""
    logged = {m.step for m in client.get_metric_history(run_id, "val_accuracy")}
    for epoch in range(1, progress.epoch + 1):
        if epoch not in logged:
            row = {k: v[epoch - 1] for k, v in progress.history.items()}
            client.log_batch(run_id, metrics=_metrics(row, step=epoch))
