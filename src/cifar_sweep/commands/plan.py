"""`src/plan.py` (`make plan`): what a sweep will do, job by job, planned in bulk as the sweep's
start plans it (cifar_sweep/plan/bulk_plan.py), without training or creating any run."""


from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf import OmegaConf, open_dict

    from cifar_sweep.config.config_dirs import CONF, config_dir_args
    from cifar_sweep.config.override_check import composition_error_line, problem
    from cifar_sweep.plan import bulk_plan
    from cifar_sweep.sweep.callback import sweep_job_overrides, varying_keys
    from cifar_sweep.tracking.experiments import open_store

    line = problem(argv)  # Hydra's own mistakes, as train.py says them
    if line:
        print(f"error: {line}", file=sys.stderr)
        return 2
    argv, search_path = config_dir_args(argv)  # --config-dir DIR, as train.py takes it
    argv = search_path + argv
    if any(a.startswith(("hpo=", "+hpo=")) for a in argv):
        print("error: a search (hpo=...) has no plan: its trials are chosen as it runs",
              file=sys.stderr)
        return 2
    counts: dict[str, int] = {}
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        parser = OverridesParser.create(config_loader=loader)
        try:
            fixed = [line for line, o in zip(argv, parser.parse_overrides(argv), strict=True)
                     if not o.is_sweep_override()]
            base = compose("config", overrides=fixed, return_hydra_config=True)
        except HydraException as exc:
            print(f"error: {composition_error_line(exc)}", file=sys.stderr)
            return 2
        with open_dict(base):
            base.hydra.overrides.task = list(argv)
        jobs = sweep_job_overrides(base)
        shown = varying_keys(jobs)
        # the same bulk planning as the sweep's start (cifar_sweep/plan/bulk_plan.py): configs
        # composed once per choice of groups, each store asked a handful of queries for all its jobs
        plan = bulk_plan.plan(lambda groups: compose("config", overrides=groups,
                                                 return_hydra_config=True),
                          loader, jobs, composition_error_line, stop_on_error=False)
        stores: dict[tuple[str, str], list] = {}
        for job in plan.jobs:
            if not job.error:
                stores.setdefault(job.store, []).append(job)
        for (uri, name), those in stores.items():
            try:
                client = open_store(OmegaConf.create({"uri": uri}))
                experiment = client.get_experiment_by_name(name)
                plan.decide(client, experiment.experiment_id if experiment else None,
                            load_state=True, jobs=those)
            except bulk_plan.UserInputError as exc:
                for job in those:
                    job.error = str(exc)
    first: dict[str, int] = {}  # each error said once: the jobs after the first point to it
    for job in plan.jobs:
        name = " ".join(o for o in job.overrides if o.partition("=")[0] in shown) or "(defaults)"
        if job.error:
            line = (f"invalid: as #{first[job.error]}" if job.error in first
                    else f"invalid: {job.error}")
            action = "invalid"
            first.setdefault(job.error, job.num)
        else:
            assert job.decision is not None  # every job without an error is decided
            line, action = job.decision.line(job.epochs), job.decision.action
        counts[action] = counts.get(action, 0) + 1
        print(f"#{job.num} {name}: {line}")
    print(f"plan: {len(jobs)} jobs: " + ", ".join(f"{n} {a}" for a, n in counts.items()))
    return 2 if "invalid" in counts else 0
