"""Bad input: a clear error, a non-zero exit, and never a run left RUNNING."""

import pytest

from conftest import ROOT

PLAN = ROOT / "src" / "plan.py"


def assert_no_running(project):
    assert all(r.info.status != "RUNNING" for r in project.runs())


@pytest.mark.parametrize("overrides, message", [
    (["optimizer=foo"], "error: optimizer=foo: no such option; allowed: adagrad, adam, rmsprop, sgd"),
    # in a sweep too, before any job
    (["-m", "optimizer=sgd,foo"], "error: optimizer=foo: no such option; allowed: adagrad, adam, "
                                  "rmsprop, sgd"),
    (["optimizer=adamw"], "error: optimizer=adamw: no such option (did you mean optimizer=adam?); "
                          "allowed: adagrad, adam, rmsprop, sgd"),
    # a value given to a group: its options, and the setting meant
    (["lr=0.01"], "error: lr=0.01: lr is a group of options (constant, cosine, onecycle, step), "
                  "not a value; the setting you may mean: lr.value=0.01"),
    (["trainer.epoch=3"], "error: trainer.epoch: no such setting (did you mean trainer.epochs?); "
                          "trainer has: epochs, batch_size,"),
    (["traner.epochs=3"], "error: traner.epochs: no such setting (did you mean trainer.epochs?)"),
    (["trainer.not_a_key=1"], "error: trainer.not_a_key: no such setting; trainer has: epochs,"),
    # what Hydra's grammar refuses, and what to type instead
    (["data.root=~/x"], "error: data.root=~/x: Hydra's override grammar cannot read '~' here; "
                        "for your home folder write data.root=$HOME/x (the shell expands it)"),
    (["data.root=x[1"], "error: data.root=x[1: Hydra's override grammar cannot read this value"),
])
def test_hydras_mistakes_are_one_line_before_any_run(project, overrides, message):
    proc = project.train(*overrides)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(message) and proc.stderr.count("\n") == 1, proc.stderr
    assert project.runs() == []


def test_the_plan_says_hydras_mistake_once(project):
    proc = project.run("trainer.epoch=3", "optimizer=sgd,adam", script=PLAN)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: trainer.epoch: no such setting (did you mean "
                                  "trainer.epochs?)") and proc.stderr.count("\n") == 1, proc.stderr


@pytest.mark.parametrize("overrides", [
    ["-m", "optimizer=sgd,adam", "experiment=null", "+trainer.extra=1", "study.paper.x=1"],
])
def test_what_the_config_allows_passes_the_check(overrides):
    """The check refuses only mistakes: a sweep, a null option, an added key, a free-form one."""
    from cifar_sweep.config.override_check import problem

    assert problem(overrides) is None


@pytest.mark.parametrize("overrides, message", [
    (["lr.value=0"], "lr.value=0 is invalid: must be a number > 0"),
    pytest.param(["lr.value=-0.1"], "lr.value=-0.1 is invalid: must be a number > 0"),
    pytest.param(["trainer.epochs=0"], "trainer.epochs=0 is invalid: must be an integer >= 1"),
    pytest.param(["trainer.batch_size=0"], "trainer.batch_size=0 is invalid: must be an integer >= 1"),
    pytest.param(["trainer.val_fraction=1.0"], "trainer.val_fraction=1.0 is invalid: must be a number strictly between 0 and 1"),
    pytest.param(["trainer.val_fraction=0"], "trainer.val_fraction=0 is invalid"),
    pytest.param(["trainer.device=tpu"], "trainer.device=tpu is invalid: allowed: auto, cpu, cuda, cuda:N, mps"),
    pytest.param(["data=image_folder", "data.root=does/not/exist"], "no 'train/' folder there"),
    pytest.param(["data=image_folder"], "data.root is missing"),
    # in a sweep, every job is checked before the first one trains
    (["-m", "lr.value=0.01,-1"], "lr.value=-1 is invalid"),
    # types and keys, checked against the config's schema before any run exists (more cases
    # in test_configs.py, in-process)
    pytest.param(["optimizer.momentum=abc"], "optimizer.momentum=abc is invalid: must be a number", marks=pytest.mark.slow),
    (["-m", "optimizer=sgd,rmsprop", "+model.widht=2"], "model.widht is not a setting here; allowed: dropout"),
])
def test_invalid_value_is_one_line_before_training(project, overrides, message):
    # the sweeps (-m) and lr.value=0 (the one job alone through the command: its exit status and
    # stderr as src/train.py prints them) run the real command; the other jobs alone, in-process
    command = overrides[0] == "-m" or overrides == ["lr.value=0"]
    proc = project.train(*overrides) if command else project.job(*overrides)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert errors == [errors[-1]] and errors[-1].startswith("error: ") and message in errors[-1], proc.stderr
    assert "epoch 1" not in proc.stdout
    assert project.runs() == []  # nothing half-written: no run at all


def test_nan_loss_fails_its_job_and_the_sweep_goes_on(project):
    proc = project.train("-m", "lr.value=1e12,0.005")
    assert proc.returncode == 1
    assert "1 of 2 jobs failed" in proc.stderr
    runs = project.runs()
    assert_no_running(project)
    [parent] = [r for r in runs if r.data.tags["cifar_sweep.role"] == "sweep"]
    jobs = {r.data.params["lr.value"]: r for r in runs if r.data.tags["cifar_sweep.role"] == "job"}
    assert parent.info.status == "FAILED"
    assert jobs["1000000000000.0"].info.status == "FAILED"
    assert "NonFiniteLossError" in jobs["1000000000000.0"].data.tags["failure_reason"]
    assert jobs["0.005"].info.status == "FINISHED"
    assert "test_accuracy" in jobs["0.005"].data.metrics


@pytest.mark.slow  # over a minute on the 2-core CPU: make test-full (a default test covers its core)
def test_nan_loss_in_a_single_run_exits_non_zero(project):
    proc = project.job("lr.value=1e12")
    assert proc.returncode == 1
    assert "error: run" in proc.stderr and "training loss became" in proc.stderr
    [run] = project.runs()
    assert run.info.status == "FAILED" and "failure_reason" in run.data.tags


def test_sigterm_leaves_the_run_killed_not_running(project):
    import os
    import subprocess
    import sys
    import time

    from conftest import FAST, TRAIN

    proc = subprocess.Popen([sys.executable, str(TRAIN), *FAST, "trainer.epochs=500"],
                            cwd=project.workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, text=True)
    try:
        for line in proc.stdout:  # wait until training has started
            if "epoch 1/500" in line:
                break
        proc.terminate()
        proc.wait(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode != 0
    [run] = project.runs()
    assert run.info.status == "KILLED"
    assert time.time() * 1000 >= run.info.end_time


def test_a_users_own_options_are_options(tmp_path):
    """A user's folder (`--config-dir`, or `hydra.searchpath`) adds its options to our groups."""
    from cifar_sweep.config.override_check import problem

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "mynet.yaml").write_text("_target_: mynet.MyNet\nwidth: 8\n")
    assert problem(["--config-dir", str(tmp_path), "model=mynet", "model.width=4"]) is None
    assert problem([f"hydra.searchpath=[file://{tmp_path}]", "-m", "model=mynet,origin_net"]) is None
    assert problem(["--config-dir", str(tmp_path), "model=mynett"]).startswith(
        "model=mynett: no such option (did you mean model=mynet?); allowed: ")
    assert problem(["model=mynett"]) == (  # without the folder: ours only
        "model=mynett: no such option; allowed: mobilenet_v2, modified_net, modified_net_ds, "
        "origin_net, resnet18")
