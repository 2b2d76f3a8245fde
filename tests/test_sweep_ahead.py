"""A sweep planned ahead (bulk_plan.py, job_configs.py): every job's config as Hydra would compose it,
the finished jobs not launched, and the bookkeeping's cost per job flat in the number of jobs."""

import time

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf, open_dict

from conftest import ROOT
from test_resume import jobs

CONF = str(ROOT / "conf")

JOBS = [
    ["data=synthetic", "lr.value=0.01", "trainer.seed=3"],
    ["data=synthetic", "model=origin_net", "optimizer=adam", "lr.value=0.001"],
    ["ablation=lr", "lr.value=0.0005", "trainer.epochs=2"],
    ["data=synthetic", "optimizer.momentum=0.5", "trainer.batch_size=32"],
    ["data=synthetic", "+trainer.note=hello", "lr.value=0.01"],   # adds a key: a copy
    ["data=synthetic", "lr=cosine", "lr.value=0.1", "trainer.epochs=4"],  # schedule interpolates
    ["data=synthetic", "lr.value=0.01", "trainer.seed=3"],  # the first again: the base put back
]


def _hydra(overrides):
    cfg = compose("config", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def test_job_configs_are_what_hydra_composes():
    from cifar_sweep.plan.job_configs import JobConfigs

    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        configs = JobConfigs(lambda groups: compose("config", overrides=groups,
                                                    return_hydra_config=True), loader)
        for overrides in JOBS:
            expected = _hydra(overrides)
            with configs.applied(overrides) as (cfg, choices):
                assert OmegaConf.to_container(cfg) == OmegaConf.to_container(expected), overrides
                assert (OmegaConf.to_container(cfg, resolve=True)
                        == OmegaConf.to_container(expected, resolve=True)), overrides
                assert choices["model"] == ("origin_net" if "model=origin_net" in overrides
                                            else "modified_net")
        # composed once per choice of groups, not once per job
        assert len(configs._bases) == 4


def test_a_finished_job_is_not_launched_and_keeps_its_number(project):
    sweep = ["-m", "hydra/launcher=basic", "tracking.figures=false", "tracking.log_model=false",
             "trainer.seed=0,1"]
    project.train(*sweep, "lr.value=0.01", check=True)
    first = {j.data.params["trainer.seed"]: j.info.run_id for j in jobs(project)}

    out = project.train(*sweep, "lr.value=0.01,0.02", check=True).stdout
    assert out.count("already finished: run") == 2 and out.count("epoch 1/1") == 2, out
    assert "sweep: 2 of 4 jobs finished before" in out
    assert "sweep: 2 of 2 jobs finished" in out  # the progress counts the jobs that train
    client = project.client
    [parent] = client.search_runs(
        [client.get_experiment_by_name("cifar-sweep").experiment_id],
        "tags.`cifar_sweep.role` = 'sweep'", order_by=["attributes.start_time DESC"],
        max_results=1)
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    by_num = {c.data.tags["job.num"]: c for c in children}
    # the jobs in Hydra's order (seed, then lr.value): the launched ones keep their numbers
    assert sorted(by_num) == ["0", "1", "2", "3"]
    for num, (seed, lr) in enumerate([("0", "0.01"), ("0", "0.02"), ("1", "0.01"), ("1", "0.02")]):
        run = by_num[str(num)]
        assert (run.data.params["trainer.seed"], run.data.params["lr.value"]) == (seed, lr)
        assert run.info.status == "FINISHED"
        if lr == "0.02":
            assert run.data.tags["cifar_sweep.role"] == "job"
            continue
        assert run.data.tags["cifar_sweep.role"] == "reference"
        assert run.data.tags["cifar_sweep.same_as"] == first[seed]
        assert run.data.metrics["test_accuracy"] == client.get_run(
            first[seed]).data.metrics["test_accuracy"]
    assert parent.data.tags["sweep.to_train"] == "2" and parent.info.status == "FINISHED"


def _plan_cost(tmp_path, n: int) -> float:
    """Seconds per job to plan a sweep of n jobs (half of them finished before, in the store),
    decide and write the finished half's reference runs: what a sweep's start does."""
    from mlflow.tracking import MlflowClient

    from cifar_sweep.config.override_check import composition_error_line
    from cifar_sweep.plan import bulk_plan
    from cifar_sweep.plan.job_configs import JobConfigs
    from cifar_sweep.tracking import tags as t
    from cifar_sweep.tracking.experiments import open_experiment

    store = tmp_path / f"store{n}"
    base = ["data=synthetic", "data.source.num_train=100", "data.source.num_test=50",
            f"tracking.uri={store}", f"checkpoint.dir={tmp_path / 'ckpt'}"]
    work = [base + [f"lr.value={0.001 + i * 1e-5:.5f}"] for i in range(n)]
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        make = (lambda groups: compose("config", overrides=groups, return_hydra_config=True))
        plan = bulk_plan.plan(make, loader, work, composition_error_line)
        client, experiment_id = open_experiment(OmegaConf.create(
            {"uri": str(store), "experiment": "cost"}))
        for job in plan.jobs[::2]:  # finished before: runs as a trained job leaves them
            run = client.create_run(experiment_id, tags={
                t.ROLE: t.ROLE_JOB, t.DATA_FINGERPRINT: job.fingerprint,
                t.PRECISION: job.precision, **job.identity.tags()})
            client.set_terminated(run.info.run_id, "FINISHED")
        parent = client.create_run(experiment_id, tags={t.ROLE: t.ROLE_SWEEP}).info.run_id
        configs = plan.configs  # composed: a cost once per sweep, not per job
        assert isinstance(configs, JobConfigs)
        start = time.perf_counter()
        plan = bulk_plan.plan(make, loader, work, composition_error_line, configs=configs)
        plan.decide(client, experiment_id)
        written = plan.write_references(client, experiment_id, parent, ["lr.value"], {}, "x")
        seconds = time.perf_counter() - start
    assert written == (n + 1) // 2 and len(plan.to_launch()) == n // 2
    assert isinstance(client, MlflowClient)
    return seconds / n


@pytest.mark.slow  # about a minute on the 2-core CPU
def test_planning_costs_the_same_per_job_at_ten_times_the_jobs(tmp_path, capsys):
    small, large = _plan_cost(tmp_path, 30), _plan_cost(tmp_path, 300)
    with capsys.disabled():
        print(f"\nplanning a sweep: {small * 1000:.1f} ms per job at 30 jobs, "
              f"{large * 1000:.1f} ms at 300: ratio {large / small:.2f}")
    # flat, within the noise of a shared machine; a per-job cost growing with N (a query per
    # job over a growing store, a composition per job) shows as a ratio well above 1
    assert large / small < 1.5
