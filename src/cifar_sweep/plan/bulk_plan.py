"""A sweep planned ahead, in bulk: every job's config checked and its identity computed (configs
composed once per choice of groups, job_configs.py), each data source decoded once, and what each
job will do (decision.choose's answer: finished, elsewhere, continue, train) from a handful of
store queries for all jobs, not several per job. The sweep (sweep/callback.py) then writes the
reference runs of the finished jobs in one pass and launches only the others; `src/plan.py`
prints the same decisions.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from omegaconf import DictConfig, OmegaConf

from cifar_sweep.errors import UserInputError
from cifar_sweep.plan import code_version, disk_space
from cifar_sweep.plan.decision import (
    CONTINUE,
    ELSEWHERE,
    FINISHED,
    Decision,
    Facts,
    choose,
    with_checkpoint,
)
from cifar_sweep.plan.identity import Identity, hashes
from cifar_sweep.plan.job_configs import JobConfigs
from cifar_sweep.tracking import bulk_runs, lifecycle
from cifar_sweep.tracking import tags as t
from cifar_sweep.tracking.paging import all_runs
from cifar_sweep.tracking.runs import flatten
from cifar_sweep.tracking.store import sqlite_file
from cifar_sweep.train import checkpoint


@dataclass
class JobPlan:
    """One job of the plan: what it is, from its config, and its decision; kept small (a sweep
    holds thousands)."""

    num: int
    overrides: list[str]
    identity: Identity | None = None
    fingerprint: str = ""
    data_cache: str = ""
    device: str = ""
    precision: str = ""
    rerun: bool = False
    reuse_other_code: bool = False
    epochs: int = 0
    checkpoint_dir: str = ""
    store: tuple[str, str] = ("", "")  # (tracking.uri, tracking.experiment)
    writes: tuple[int, int] = (0, 0)   # (bytes in the store, bytes of a checkpoint)
    test_images: int = 0               # bytes of its data's test images: the store gets them once
    error: str = ""                    # the one line that stops it (plan only)
    decision: Decision | None = field(default=None, repr=False)


@dataclass
class Plan:
    jobs: list[JobPlan]
    configs: JobConfigs
    first: DictConfig | None  # the first job's config (a copy): the sweep's folders

    def decide(self, client, experiment_id: str | None, load_state: bool = False,
               jobs: list[JobPlan] | None = None) -> None:
        """Each job's decision, as decision.decide would make it, from bulk store queries:
        finished runs of the jobs' data anywhere in the store, unfinished ones in the
        experiment. `load_state`: read a continued run's checkpoint (the plan says its epoch)."""
        jobs = [j for j in (self.jobs if jobs is None else jobs) if not j.error]
        keys = {(j.fingerprint, j.precision) for j in jobs}
        experiments = lifecycle.active_experiments(client)
        finished: dict[str, list] = {}
        unfinished: dict[str, list] = {}
        db = sqlite_file(client.tracking_uri)
        for fingerprint, precision in keys:
            # the config hash covers the data and the precision: no other run can match
            done, undone = _runs_of_data(client, db, experiments, experiment_id, {
                t.ROLE: t.ROLE_JOB, t.DATA_FINGERPRINT: fingerprint, t.PRECISION: precision})
            for run in done:
                finished.setdefault(run.data.tags.get(t.CONFIG_HASH), []).append(run)
            for run in undone:
                unfinished.setdefault(run.data.tags.get(t.CONFIG_HASH), []).append(run)
        for job in jobs:
            config = _identity(job).config_hash
            job.decision = _decide(job, finished.get(config, []), unfinished.get(config, []),
                                   load_state)

    def to_launch(self) -> list[JobPlan]:
        """The jobs a sweep launches: all but those finished before or training elsewhere."""
        return [j for j in self.jobs if j.decision is None
                or j.decision.action not in (FINISHED, ELSEWHERE)]

    def check_space(self, concurrent: int) -> None:
        """The free-space check (disk_space.py) for the jobs that will train."""
        todo = [j for j in self.jobs if j.decision is None or j.decision.action != FINISHED]
        if todo and self.first is not None:
            disk_space.check_writes(self.first, [j.writes for j in todo], concurrent,
                                    disk_space.once_per_data((j.fingerprint, j.test_images)
                                                             for j in todo))

    def write_references(self, client, experiment_id: str, parent: str, varying: list[str],
                         owner: dict[str, str], git_commit: str) -> int:
        """A reference run for each job finished before or training elsewhere (what the job
        would have written itself, job/steps.py's `_reference`: tracking/run_tags.py builds
        both), written in bulk (bulk_writes.py)."""
        from cifar_sweep.tracking import run_tags
        from cifar_sweep.tracking.bulk_writes import CHUNK, FinishedRun, write_finished

        done = [(j, j.decision) for j in self.jobs
                if j.decision is not None and j.decision.action in (FINISHED, ELSEWHERE)]
        for chunk in range(0, len(done), CHUNK):  # one transaction each; its lines printed after it
            jobs, runs = done[chunk:chunk + CHUNK], []
            for job, decision in jobs:
                original = decision.run
                assert original is not None  # finished before, or training elsewhere: found
                with self.configs.applied(job.overrides) as (cfg, choices):
                    params = flatten(cast(dict, OmegaConf.to_container(cfg, resolve=True)))
                    study = str(cfg.study.name or "")
                tags = run_tags.reference(run_tags.job(
                    choices=choices, identity=_identity(job).tags(), fingerprint=job.fingerprint,
                    data_cache=job.data_cache, device=job.device, precision=job.precision,
                    overrides=job.overrides, study=study, git_commit=git_commit, owner=owner,
                    parent=parent, job_num=job.num), original.info.run_id, ahead=True)
                why = "done before" if decision.action == FINISHED else "training elsewhere"
                name = f"#{job.num} {short_overrides(job.overrides, varying)} ({why})"
                runs.append(FinishedRun(
                    name[:250], tags, {k: v[:6000] for k, v in params.items()},
                    {k: (float(v), job.epochs) for k, v in original.data.metrics.items()}))
            write_finished(client, experiment_id, runs)
            for job, decision in jobs:
                print(f"#{job.num} {short_overrides(job.overrides, varying)}: "
                      f"{decision.line(job.epochs)} ({decision.run.info.run_name if decision.run else ''})",
                      flush=True)
        return len(done)


def _runs_of_data(client, db: Path | None, experiments: list[str], experiment_id: str | None,
                  tags: dict[str, str]) -> tuple[list, list]:
    """(the finished runs with these tags in any active experiment, the unfinished ones in the
    sweep's experiment), newest first: from a local SQLite store in one bulk read (`bulk_runs`:
    through the client, 1,000 finished runs of the same data cost each plan about 6 s), else
    two searches of the client."""
    wanted = experiments if experiment_id is None else sorted({*experiments, experiment_id})
    found = bulk_runs.find(db, wanted, tags) if db is not None else None
    if found is not None:
        active = set(experiments)
        return ([r for r in found if r.info.status == "FINISHED" and r.info.experiment_id in active],
                [r for r in found if r.info.status != "FINISHED"
                 and r.info.experiment_id == experiment_id])
    narrow = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    return (all_runs(client, experiments, narrow + " and attributes.status = 'FINISHED'"),
            [] if experiment_id is None else
            all_runs(client, [experiment_id], narrow + " and attributes.status != 'FINISHED'"))


def _identity(job: JobPlan) -> Identity:
    """A checked job's identity (set by the check that composed it)."""
    if job.identity is None:
        raise RuntimeError(f"job #{job.num} was decided before it was checked")
    return job.identity


def _decide(job: JobPlan, finished: list, unfinished: list, load_state: bool) -> Decision:
    """decision.choose on runs already read (each list newest first): the facts decision.decide
    would gather for this job. `load_state`: read a continued run's checkpoint (the sweep
    launches it either way: the job reads its checkpoint itself)."""
    identity = _identity(job)
    code = identity.code_version
    same = next((r for r in finished if r.data.tags.get(t.CODE_VERSION) == code), None)
    mine = [r for r in unfinished if r.data.tags.get(t.CODE_VERSION) == code]

    def path(run_id: str) -> Path:
        return checkpoint.path_for(job.checkpoint_dir, identity.config_hash, run_id)

    facts = Facts(same, None if same is not None or not finished else finished[0],
                  lifecycle.live_first(mine),
                  lifecycle.first_continuable(mine, lambda run_id: path(run_id).is_file()))
    decision = choose(job.rerun, job.reuse_other_code, identity, facts)
    if load_state and decision.action == CONTINUE and decision.run is not None:
        return with_checkpoint(decision, path(decision.run.info.run_id))
    return decision


def plan(compose: Callable[[list[str]], DictConfig], config_loader, jobs: list[list[str]],
         describe: Callable[[Exception], str], stop_on_error: bool = True,
         configs: JobConfigs | None = None) -> Plan:
    """Every job checked (`validate.check_config`), its data decoded once per source, its
    identity. A bad job: UserInputError naming its overrides (`stop_on_error`, the sweep) or its
    `error` line (the plan). `describe`: a Hydra composition error as one line. `configs`: one
    composing already (what it composed is kept)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from cifar_sweep.config.validate import check_config
    from cifar_sweep.data import subsets
    from cifar_sweep.train import model_build, runtime

    configs = configs or JobConfigs(compose, config_loader)
    datasets: dict[str, tuple] = {}
    sources: set[str] = set()  # the data sources checked (validate.check_config)
    devices: dict[tuple[str, str], tuple[str, str]] = {}
    out, first = [], None
    for num, overrides in enumerate(jobs):
        job = JobPlan(num, list(overrides))
        out.append(job)
        try:
            with configs.applied(overrides) as (cfg, _):
                tree: dict | None
                try:
                    tree = cast(dict, OmegaConf.to_container(cfg, resolve=True))
                except OmegaConfBaseException:  # check_config says which value, section by section
                    tree = None
                check_config(cfg, tree, sources)
                if tree is None:
                    tree = cast(dict, OmegaConf.to_container(cfg, resolve=True))
                data_key = json.dumps(tree["data"], sort_keys=True, default=str)
                if data_key not in datasets:
                    dataset = subsets.load(cfg.data)
                    datasets[data_key] = (dataset.fingerprint, len(dataset.classes),
                                          dataset.cache, tuple(dataset.train.images.shape[1:]),
                                          len(dataset.test), dataset.test.images.numel())
                (job.fingerprint, classes, job.data_cache, shape, test_examples,
                 test_pixels) = datasets[data_key]
                # a forward pass per distinct model and data shape (cached there)
                model_build.check_model(cfg.model, str(cfg.data.name), shape, classes)
                where = (str(cfg.trainer.device), str(cfg.trainer.precision))
                if where not in devices:
                    device = runtime.resolve_device(where[0])
                    devices[where] = (device.type, runtime.resolve_precision(where[1], device))
                job.device, job.precision = devices[where]
                job.identity = Identity(*hashes(tree, job.fingerprint, *devices[where]),
                                        code_version.parts(cfg))
                job.rerun = bool(cfg.trainer.rerun)
                job.reuse_other_code = bool(cfg.trainer.reuse_other_code)
                job.epochs = int(cfg.trainer.epochs)
                job.checkpoint_dir = str(cfg.checkpoint.dir)
                job.store = (str(cfg.tracking.uri), str(cfg.tracking.experiment))
                job.writes = disk_space.job_writes(cfg, classes, test_examples)
                job.test_images = disk_space.test_images_bytes(cfg, test_examples, test_pixels)
                if first is None:
                    import copy

                    first = copy.deepcopy(cfg)
        except HydraException as exc:  # e.g. an option that is not in conf/
            if stop_on_error:
                raise UserInputError(f"{' '.join(overrides)}: {describe(exc)}") from None
            job.error = describe(exc)
        except UserInputError as exc:
            if stop_on_error:
                raise
            job.error = str(exc)
    return Plan(out, configs, first)


def short_overrides(overrides: list[str], keys: list[str]) -> str:
    """`lr.value=0.005 seed=1`: the values the sweep varies, not every override repeated."""
    chosen = [o for o in overrides if o.partition("=")[0] in keys] or overrides
    return " ".join(o.lstrip("+").removeprefix("trainer.") for o in chosen) or "defaults"
