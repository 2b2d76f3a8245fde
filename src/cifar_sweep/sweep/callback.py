"""A sweep's preflight and its parent run, as a Hydra callback (`hydra.callbacks` in config.yaml).

Before any job starts: every job's config is composed and checked, each data source decoded
once (parallel workers then read the disk cache), ghosts of earlier sweeps closed, and one parent
run made, whose id the jobs (in any process) read from a file in the sweep folder. At the end the
parent is closed, and so are children whose worker process died. A sweep that a job stopped on
a fault of the environment (a full disk, GPU memory: faults.py) ends with one line saying so.
"""

from __future__ import annotations

import atexit
import itertools
import sys
import time
import traceback
from pathlib import Path
from typing import cast

import requests
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from mlflow.entities import Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf, open_dict

from cifar_sweep import faults, sweep_folder
from cifar_sweep.config.override_check import composition_error_line
from cifar_sweep.errors import UserInputError, exit_on_user_error
from cifar_sweep.plan import bulk_plan, disk_space
from cifar_sweep.plan.identity import SEED_KEY
from cifar_sweep.sweep import slurm
from cifar_sweep.tracking import lifecycle, run_tags
from cifar_sweep.tracking import tags as t
from cifar_sweep.tracking.experiments import open_experiment
from cifar_sweep.tracking.queries import sweep_children
from cifar_sweep.tracking.runs import git_commit
from cifar_sweep.tracking.store import lost_server_line, lost_server_problem
from cifar_sweep.train import checkpoint, model_build


def sweep_job_overrides(config: DictConfig) -> list[list[str]]:
    """The override list of every job the basic sweeper launches, in its order: the sweeper's
    `params` first, then the command line's (which replace a `params` entry of the same key),
    each `a,b` list expanded, as a cartesian product."""
    params = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
    params += list(config.hydra.overrides.task)
    parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
    choices: dict[str, list[str]] = {}
    for override in parser.parse_overrides(params):
        key = override.get_key_element()
        if override.is_sweep_override():
            choices[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:
            choices[key] = [f"{key}={override.get_value_element_as_str()}"]
    return [list(job) for job in itertools.product(*choices.values())]


def varying_keys(jobs: list[list[str]]) -> list[str]:
    values: dict[str, set[str]] = {}
    for overrides in jobs:
        for override in overrides:
            key, _, value = override.partition("=")
            values.setdefault(key, set()).add(value)
    return [k for k, v in values.items() if len(v) > 1]


def preflight(config: DictConfig, jobs: list[list[str]]) -> list[disk_space.PlannedJob]:
    """Check every job's values, and decode (or download) each data source once; each job's
    config and data, for the free-space check."""

    from cifar_sweep.config.validate import check_config
    from cifar_sweep.data import subsets

    loader = GlobalHydra.instance().config_loader()
    sources, configs = {}, []
    for overrides in jobs:
        try:
            job_config = loader.load_sweep_config(config, overrides)
        except HydraException as exc:  # e.g. a search space's option that is not in conf/
            raise UserInputError(f"{' '.join(overrides)}: {composition_error_line(exc)}") from None
        check_config(job_config)
        sources[OmegaConf.to_yaml(job_config.data)] = job_config.data
        with open_dict(job_config):  # the config as the job gets it
            del job_config["hydra"]
        configs.append(job_config)
    loaded, datasets = {}, {}
    for key, data in sources.items():
        datasets[key] = subsets.load(data)
        test = datasets[key].test
        loaded[key] = (datasets[key].fingerprint, len(datasets[key].classes), len(test),
                       test.images.numel())
    for c in configs:  # a forward pass per distinct model and data shape (cached there)
        model_build.check_job(c, datasets[OmegaConf.to_yaml(c.data)])
    return [disk_space.PlannedJob(c, *loaded[OmegaConf.to_yaml(c.data)]) for c in configs]


class MlflowSweepCallback(Callback):
    # the sweep this process runs, once started: what a Ctrl-C interrupts (commands/interrupted.py)
    running: MlflowSweepCallback | None = None

    def __init__(self) -> None:
        self.client: MlflowClient | None = None
        self.parent_id: str | None = None
        self.jobs = 0
        self.search = False
        self.varying: list[str] = []  # what the sweep varies but the seed: a table's rows
        self.plan: bulk_plan.Plan | None = None
        self.checkpoint_dir = "checkpoints"

    def _started(self) -> tuple[MlflowClient, str]:
        """The store and the parent run, which every step after the start writes to."""
        if self.client is None or self.parent_id is None:
            raise RuntimeError("the sweep's callback was not started (on_multirun_start)")
        return self.client, self.parent_id

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        # Hydra turns a callback's exception into a warning and sweeps on, without a parent run
        # or a preflight: stop the sweep here instead
        try:
            self._start(config)
        except Exception:
            traceback.print_exc()
            print("error: the sweep could not start (see above)", file=sys.stderr)
            sys.exit(1)

    def _start(self, config: DictConfig) -> None:
        jobs = sweep_job_overrides(config)  # a search's: its base config
        # a search's jobs are its trials, asked one batch at a time: it judges its own trials
        self.search = "n_trials" in config.hydra.sweeper
        with exit_on_user_error():
            if slurm.is_slurm_sweep(config):  # what the cluster cannot run, before any run
                slurm.check_preset(config.hydra.launcher)  # its settings (sbatch asked if there)
                slurm.check_installed()
            if self.search:  # its settings, and its space's edges composed as jobs would be
                from cifar_sweep.search import optuna_study

                settings = cast(dict, OmegaConf.to_container(config.hydra.sweeper, resolve=True))
                optuna_study.check_settings(settings)
                checked = [jobs[0] + c for c in optuna_study.corner_overrides(settings["space"])]
                planned = preflight(config, checked)
                client, experiment_id = open_experiment(config.tracking)
                disk_space.check_sweep(planned, client, self._concurrent(config),
                                  int(config.hydra.sweeper.n_trials))
            else:  # every job composed, checked and decided in bulk (bulk_plan.py)
                loader = GlobalHydra.instance().config_loader()
                self.plan = bulk_plan.plan(lambda groups: loader.load_sweep_config(config, groups),
                                       loader, jobs, composition_error_line)
                client, experiment_id = open_experiment(config.tracking)
                here = (str(config.tracking.uri), str(config.tracking.experiment))
                # a job logged elsewhere (its own tracking.*) decides for itself when it runs
                self.plan.decide(client, experiment_id,
                                 jobs=[j for j in self.plan.jobs if j.store == here])
                self.plan.check_space(self._concurrent(config))
        self.client = client
        lifecycle.close_ghosts(client, [experiment_id])
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_folder.clear_stop(str(sweep_dir))  # a stop of an earlier sweep in this same folder
        sweep_dir.mkdir(parents=True, exist_ok=True)
        # the sweep's own overrides, without where it is logged or reads from: paths make poor
        # names (the keys Hydra's output folder names leave out too)
        hidden = tuple(config.hydra.job.config.override_dirname.exclude_keys)
        shown = [o for o in config.hydra.overrides.task if o.partition("=")[0] not in hidden]
        sweep = " ".join(shown) or "(no overrides)"
        run = client.create_run(
            experiment_id,
            run_name=f"sweep: {sweep}"[:250],
            tags={t.ROLE: t.ROLE_SWEEP, t.SWEEP_OVERRIDES: sweep,
                  t.SWEEP_JOBS: str(config.hydra.sweeper.n_trials if self.search else len(jobs)),
                  t.SWEEP_VARYING: " ".join(varying_keys(jobs) if not self.search
                                            else config.hydra.sweeper.space),
                  t.SWEEP_FIRST_JOB: " ".join(jobs[0]) if jobs and not self.search else "",
                  **run_tags.common(git_commit(), lifecycle.owner_tags())},
        )
        self.parent_id = run.info.run_id
        self.checkpoint_dir = str(config.checkpoint.dir)
        MlflowSweepCallback.running = self
        self.jobs = len(jobs)
        self.varying = [k for k in varying_keys(jobs) if k != SEED_KEY] if not self.search else []
        client.log_batch(run.info.run_id, params=[
            Param("sweep.overrides", sweep[:6000]), Param("sweep.jobs", str(len(jobs)))])
        sweep_folder.write_parent_run_id(str(sweep_dir), run.info.run_id)
        atexit.register(self._close, "KILLED")  # if the sweep is interrupted or exits early
        if not self.search:
            self._launch_only_what_trains(experiment_id, sweep_dir, varying_keys(jobs))

    def _launch_only_what_trains(self, experiment_id: str, sweep_dir: Path,
                                 varying: list[str]) -> None:
        """Reference runs for the jobs finished before (or training elsewhere), written here;
        the sweeper (hydra_plugins/cifar_sweep_planned) launches only the others."""
        client, parent = self._started()
        assert self.plan is not None  # planned at the start of a sweep that is not a search
        launched = [j.num for j in self.plan.to_launch()]
        written = self.plan.write_references(client, experiment_id, parent,
                                             varying, lifecycle.owner_tags(), git_commit())
        sweep_folder.write_launched(str(sweep_dir), launched)
        client.log_batch(parent, tags=[
            RunTag(t.SWEEP_TO_TRAIN, str(len(launched))),
            RunTag(t.SWEEP_LAUNCHED, f"{time.time():.3f}")])
        if written:
            print(f"sweep: {written} of {self.jobs} jobs finished before or are training "
                  f"elsewhere (reference runs written); {len(launched)} to launch", flush=True)

    @staticmethod
    def _concurrent(config: DictConfig) -> int:
        """Jobs side by side: each has a checkpoint (and, while saving, its temporary copy)."""
        try:
            return max(1, int(config.hydra.launcher.get("n_jobs") or 1))
        except Exception:  # a launcher without n_jobs (basic) or one that cannot resolve it here
            return 1

    def _stopped_by_environment(self, config: DictConfig, stop: dict) -> None:
        """The sweep's last line when a job stopped it: what, where, the jobs that did not
        start, what to do; exit EXIT_STOPPED."""
        total = int(config.hydra.sweeper.n_trials) if self.search else self.jobs
        try:
            children = sweep_children(*self._started())
            not_started = f"{max(0, total - len(children))} of {total} jobs did not start"
        except Exception:  # the store cannot be read either
            not_started = "the jobs after it did not start"
        self._close("KILLED")
        print(f"error: the sweep stopped early: {stop['what']} on {stop['where']} (job "
              f"{stop['job']}); {not_started}; {stop['advice']}: killed runs continue from their "
              f"checkpoints, finished ones are skipped (exit {faults.EXIT_STOPPED})",
              file=sys.stderr)
        sys.exit(faults.EXIT_STOPPED)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        stop = sweep_folder.sweep_stopped(config.hydra.sweep.dir)
        if stop is not None:
            self._stopped_by_environment(config, stop)
        client, parent = self._started()
        try:
            children = sweep_children(client, parent)
        except Exception as exc:
            problem = lost_server_problem(client.tracking_uri, exc)
            if problem is None:
                raise
            # the parent stays RUNNING: the next sweep's start closes it (its process is gone)
            self.parent_id = None
            line = lost_server_line(client.tracking_uri, problem, "the jobs' checkpoints are kept")
            print(f"error: {line}", file=sys.stderr)
            sys.exit(1)
        if self.search:  # pruned and failed trials are part of a search, and it goes on
            self._close("FINISHED")
            return
        finished = [c for c in children if c.info.status == "FINISHED"]
        # a job that stopped before creating its run counts as failed too
        failed = self.jobs - len(finished)
        if finished and self.varying:
            self._result_table(config)
        self._close("FAILED" if failed else "FINISHED")
        if failed:
            names = ", ".join(c.info.run_name for c in children if c.info.status != "FINISHED")
            print(f"error: {failed} of {self.jobs} jobs failed: {names or 'see the log above'}",
                  file=sys.stderr)
            sys.exit(1)

    def _result_table(self, config: DictConfig) -> None:
        """The sweep's table (one row per setting, seeds pooled): printed, written to the user's
        folder (`results/<study or experiment>/<start>_<id>/`, `report/folders.py`), and logged
        on the parent run with each row's numbers and the figures (`parent_summary`), where the
        UI shows the sweep."""
        from cifar_sweep.report import folders, studies, unfinished
        from cifar_sweep.sweep import parent_summary

        paper = config.study.get("paper")
        experiment = str(config.tracking.experiment)
        study = studies.TableSpec(
            name=str(config.study.name or experiment), experiment=experiment,
            baseline=config.study.baseline, sweep=self.parent_id,
            axes=list(config.hydra.sweeper.get("params") or {}) if config.study.name else [],
            paper=cast(dict, OmegaConf.to_container(paper)) if paper else None,
            kind="Ablation" if config.study.name else "Sweep")
        client, parent = self._started()
        try:
            table = studies.build_table(client, study)
            print("\n" + studies.terminal(table) + "\n", flush=True)
            link = parent_summary.log_on_parent(client, parent, table,
                                                bool(config.tracking.figures))
            folder = folders.user_folder(client, study.name, parent)
            table.write(folder, None, figures=False)
            folders.index_sweeps(folder.parent)
            print(f"wrote {folder}/ (the tables; with the figures for a paper: python "
                  f"src/report.py sweep={parent}{_store_arg(config)})", flush=True)
            print(f"compare its rows in {ui_line(str(config.tracking.uri))}/{link}", flush=True)
            if table.missing:  # rows another command still trains, or that failed: it is partial
                print(unfinished.line(table.missing, parent), flush=True)
        except Exception as exc:  # the table is a summary: it never fails the sweep
            print(f"warning: no table for this sweep: {type(exc).__name__}: "
                  f"{str(exc).splitlines()[0][:300] if str(exc) else ''}", file=sys.stderr)

    def interrupted(self) -> str:
        """Close the sweep KILLED now (a signal stopped it) and say what it had done: the jobs
        finished and the runs stopped, whose checkpoints the same command continues from."""
        if self.client is None or not self.parent_id:
            return "the sweep (before its first job)"
        client, parent = self.client, self.parent_id
        try:
            running = {c.info.run_id for c in sweep_children(client, parent, running=True)}
            self._close("KILLED")
            children = sweep_children(client, parent)
        except Exception:  # the store is gone too: the next start closes its runs
            return f"sweep {parent}"
        finished = sum(c.info.status == "FINISHED" for c in children)
        stopped = [c for c in children if c.info.run_id in running or
                   c.info.status == "KILLED" and c.data.tags.get(t.FAILURE, "").startswith(
                       t.INTERRUPTED)]
        stopped.sort(key=lambda c: int(c.data.tags.get(t.JOB_NUM) or 0))
        names = ", ".join(c.info.run_name.split(" ", 1)[0] for c in stopped[:8])
        kept = sum(checkpoint.path_for(self.checkpoint_dir, c.data.tags.get(t.CONFIG_HASH, "-"),
                                       c.info.run_id).is_file() for c in stopped)
        saved = ("its checkpoint kept" if kept == len(stopped) == 1 else
                 "their checkpoints kept" if kept == len(stopped) else
                 "no checkpoint yet: it starts over" if len(stopped) == 1 else
                 f"{kept} with a checkpoint, the others start over")
        # a search: its children here are this command's trials, while n_trials counts those
        # of every command on the study (self.jobs: its first batch): no total fits
        done = f"{finished} trials finished" if self.search else \
            f"{finished} of {self.jobs} jobs finished"
        return (f"sweep {parent}: {done}"
                + (f", {len(stopped)} stopped KILLED ({names}), {saved}" if stopped else ""))

    def _close(self, status: str) -> None:
        if self.client is None or not self.parent_id:  # not started, or its parent given up
            return
        client, parent = self.client, self.parent_id
        try:
            if client.get_run(parent).info.status != "RUNNING":
                return
            # jobs whose worker process was killed could not close their own runs; their
            # checkpoints stay, so the same sweep again continues them
            for child in sweep_children(client, parent, running=True):
                client.set_tag(child.info.run_id, t.FAILURE,
                               f"{t.INTERRUPTED}: the sweep ended before the job")
                client.set_terminated(child.info.run_id, "KILLED")
            client.set_terminated(parent, status)
        except (MlflowException, requests.RequestException) as exc:  # e.g. the server is gone:
            # the runs stay RUNNING and the next sweep's start closes them; no second traceback
            print(f"warning: could not close the sweep's runs: {str(exc).splitlines()[0][:300]}",
                  file=sys.stderr)


def ui_line(uri: str) -> str:
    """Where the sweep's UI link opens, and the command that serves it: a server's own UI, or
    `make ui` on the store's folder (`STORE=` where it is not the default `mlruns`)."""
    if uri.startswith(("http://", "https://")):
        return f"the MLflow UI: {uri.rstrip('/')}"
    store = "" if uri in ("mlruns", "./mlruns", "mlruns/") else f" STORE={uri}"
    return f"the MLflow UI (make ui{store}): http://127.0.0.1:5000"


def _store_arg(config: DictConfig) -> str:
    uri = str(config.tracking.uri)
    return "" if uri == "mlruns" else f" tracking.uri={uri}"
