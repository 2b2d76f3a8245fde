"""The study presets expand to the report's settings, and each one runs end to end."""

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from cifar_sweep.sweep.callback import sweep_job_overrides
from conftest import ROOT


def expand(study: str, *extra: str) -> list[dict]:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        master = compose("config", overrides=[f"ablation={study}"], return_hydra_config=True)
        loader = GlobalHydra.instance().config_loader()
        # what the callback checks and the sweeper launches
        master.hydra.overrides.task = [f"ablation={study}", *extra]
        jobs = []
        for overrides in sweep_job_overrides(master):
            cfg = loader.load_sweep_config(master, overrides)
            jobs.append({"optimizer": cfg.optimizer._target_.split(".")[-1], "lr": cfg.lr.value,
                         "model": cfg.model._target_.split(".")[-1], "seed": cfg.trainer.seed,
                         "smoothing": cfg.loss.label_smoothing, "weighted": cfg.loss.class_weighted,
                         "batch": cfg.trainer.batch_size, "experiment": cfg.tracking.experiment,
                         "schedule": cfg.lr.schedule._target_.split(".")[-1]})
    return jobs


def test_lr_study_is_table_viii():
    jobs = expand("lr")
    assert [j["lr"] for j in jobs] == [0.0001, 0.0005, 0.001, 0.005, 0.01]
    assert {(j["model"], j["optimizer"], j["batch"]) for j in jobs} == {("ModifiedNet", "SGD", 64)}
    assert {j["experiment"] for j in jobs} == {"ablation-lr"}


def test_optimizer_study_pairs_each_optimizer_with_the_reports_rate():
    jobs = expand("optimizer")
    assert [(j["optimizer"], j["lr"]) for j in jobs] == [
        ("SGD", 0.005), ("Adam", 0.001), ("RMSprop", 0.001), ("Adagrad", 0.001)]


@pytest.mark.parametrize("study", ["optimizer", "lr"])
def test_onecycle_study_changes_the_schedule_only(study):
    plain, onecycle = expand(study), expand(f"{study}_onecycle")
    assert {j["schedule"] for j in plain} == {"constant"}
    assert {j["schedule"] for j in onecycle} == {"onecycle"}
    assert ([{**j, "schedule": None, "experiment": None} for j in onecycle]
            == [{**j, "schedule": None, "experiment": None} for j in plain])
    assert {j["experiment"] for j in onecycle} == {f"ablation-{study}-onecycle"}


def test_loss_and_arch_studies():
    assert [(j["smoothing"], j["weighted"]) for j in expand("loss")] == [
        (0.0, False), (0.1, False), (0.0, True)]
    assert [j["model"] for j in expand("arch")] == [
        "OriginNet", "ModifiedNet", "ModifiedNetDS", "resnet18_cifar"]


def test_a_study_crossed_with_seeds():
    jobs = expand("optimizer", "trainer.seed=0,1,2")
    assert len(jobs) == 12 and sorted({j["seed"] for j in jobs}) == [0, 1, 2]


@pytest.mark.slow
@pytest.mark.parametrize("study", ["lr", "optimizer", "loss", "arch", "optimizer_onecycle",
                                   "lr_onecycle"])
def test_every_study_runs_and_reports(project, study):
    project.train("-m", f"ablation={study}", "data.source.num_train=400", "data.source.num_test=100",
                  check=True, timeout=1800)
    proc = project.run(f"ablation={study}", script=ROOT / "src" / "report.py", check=True)
    assert "(baseline)" in proc.stdout
