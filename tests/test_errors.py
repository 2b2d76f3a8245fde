"""Bad input: a clear error, a non-zero exit, and never a run left RUNNING."""

import pytest


def assert_no_running(project):
    assert all(r.info.status != "RUNNING" for r in project.runs())


@pytest.mark.parametrize("overrides, message", [
    (["optimizer=foo"], "Available options"),
    # in a sweep, one line from the preflight, before any job
    (["-m", "optimizer=sgd,foo"], "optimizer=foo: In 'config': Could not find 'optimizer/foo'; "
                                  "available options in 'optimizer': adagrad, adam, rmsprop, sgd\n"),
    (["trainer.not_a_key=1"], "not_a_key"),
])
def test_unknown_option_or_key_is_hydras_error(project, overrides, message):
    proc = project.train(*overrides)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert project.runs() == []


@pytest.mark.parametrize("overrides, message", [
    (["lr.value=0"], "lr.value=0 is invalid: must be a number > 0"),
    pytest.param(["lr.value=-0.1"], "lr.value=-0.1 is invalid: must be a number > 0", marks=pytest.mark.slow),
    pytest.param(["trainer.epochs=0"], "trainer.epochs=0 is invalid: must be an integer >= 1", marks=pytest.mark.slow),
    pytest.param(["trainer.batch_size=0"], "trainer.batch_size=0 is invalid: must be an integer >= 1", marks=pytest.mark.slow),
    pytest.param(["trainer.val_fraction=1.0"], "trainer.val_fraction=1.0 is invalid: must be a number strictly between 0 and 1", marks=pytest.mark.slow),
    pytest.param(["trainer.val_fraction=0"], "trainer.val_fraction=0 is invalid", marks=pytest.mark.slow),
    pytest.param(["trainer.device=tpu"], "trainer.device=tpu is invalid: allowed: auto, cpu, cuda, cuda:N, mps", marks=pytest.mark.slow),
    pytest.param(["data=image_folder", "data.root=does/not/exist"], "no 'train/' folder there", marks=pytest.mark.slow),
    pytest.param(["data=image_folder"], "data.root is missing", marks=pytest.mark.slow),
    # in a sweep, every job is checked before the first one trains
    (["-m", "lr.value=0.01,-1"], "lr.value=-1 is invalid"),
    # types and keys, checked against the config's schema before any run exists (more cases
    # in test_configs.py, in-process)
    pytest.param(["optimizer.momentum=abc"], "optimizer.momentum=abc is invalid: must be a number", marks=pytest.mark.slow),
    (["-m", "optimizer=sgd,rmsprop", "+model.widht=2"], "model.widht is not a setting here; allowed: dropout"),
])
def test_invalid_value_is_one_line_before_training(project, overrides, message):
    proc = project.train(*overrides)
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
    proc = project.train("lr.value=1e12")
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
