"""disk_space.py: what a job writes (its model's state, its checkpoint, its store rows) against the
sizes measured in the module's table, and the sweep's free-space check: checkpoints of the jobs
running side by side and of those kept, the store's share where it is local, folders on one file
system added up, the one-line error and the narrow-margin warning, jobs finished before not
counted (a real SQLite store), and a search counted as its largest corner times its trials.

Free space is the one thing made up here (shutil.disk_usage answers from a table per folder): a
real full file system needs a mount, which the slow test in test_env_faults.py does."""

from __future__ import annotations

import functools
import os
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from cifar_sweep.errors import UserInputError
from cifar_sweep.plan import disk_space
from cifar_sweep.plan.disk_space import PlannedJob, check_sweep, check_writes, job_writes, model_bytes
from cifar_sweep.plan.identity import identify_ahead
from cifar_sweep.tracking import tags as t
from cifar_sweep.train.model_build import build_model
from conftest import ROOT

MB = 1_000_000
FINGERPRINT = "synthetic-500c68d943a271567435"
# (store bytes, checkpoint bytes) of three jobs: checkpoints of 3, 5 and 4 MB
WRITES = [(1 * MB, 3 * MB), (2 * MB, 5 * MB), (1 * MB, 4 * MB)]
SERVER = "http://tracking.example:5000"  # a server keeps its own files: only checkpoints here


@functools.cache  # ~50 ms each; the callers merge into new configs, never change these
def compose_config(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=["data=synthetic", *overrides])


def folders(cfg, tmp_path: Path, uri: str = SERVER, checkpoints: Path | None = None, **sections):
    ck = checkpoints or tmp_path / "checkpoints"
    return OmegaConf.merge(cfg, sections, {"tracking": {"uri": uri}, "checkpoint": {"dir": str(ck)}})


@pytest.fixture(scope="module")
def base():
    return compose_config()


@pytest.fixture
def free(monkeypatch):
    """Free bytes per folder, as shutil.disk_usage reports them; `asked` lists the folders asked."""
    space = SimpleNamespace(of={}, asked=[])

    def disk_usage(path):
        space.asked.append(Path(path))
        return SimpleNamespace(total=10**12, used=0, free=space.of[Path(path)])

    monkeypatch.setattr(disk_space.shutil, "disk_usage", disk_usage)
    return space


# --- model_bytes, job_writes: against the sizes measured --------------------------------------------

def test_the_model_state_is_its_parameters_in_fp32():
    # conf/model/origin_net.yaml: "48,252 parameters" (no buffers: no batch norm)
    assert model_bytes(compose_config("model=origin_net"), 10) == 48_252 * 4
    # ModifiedNet's 35,730 parameters, and its batch norms' running statistics besides
    modified = model_bytes(compose_config("model=modified_net"), 10)
    assert 35_730 * 4 < modified < 35_730 * 4 + 2_000


def test_the_class_count_sizes_the_head(base):
    head = [m for m in build_model(base.model, 10).modules() if isinstance(m, torch.nn.Linear)][-1]
    # 90 more classes: 90 more rows of the last layer's weights and biases, 4 bytes each
    assert model_bytes(base, 100) - model_bytes(base, 10) == 90 * (head.in_features + 1) * 4


def test_a_setting_without_weights_does_not_change_the_size(base):
    assert model_bytes(compose_config("model.dropout=0.1"), 10) == model_bytes(base, 10)


# the module's table: (checkpoint, artifacts, best_weights.pt) measured, in bytes, the artifacts
# with the logged model and the 500 synthetic test images' predictions (2026-12-07, the module's
# command). The torchvision models are left out: importing torchvision's model zoo alone takes
# seconds.
MEASURED = {"origin_net": (808_873, 738_886, 196_991), "modified_net": (622_371, 701_400, 151_250),
            "modified_net_ds": (593_959, 729_788, 143_680)}
SYNTHETIC_TEST = 500  # conf/data/synthetic.yaml's num_test


@pytest.mark.parametrize("model", MEASURED)
def test_a_jobs_estimated_writes_match_what_was_measured(model):
    checkpoint_measured, artifacts_measured, weights_measured = MEASURED[model]
    cfg = compose_config(f"model={model}", "trainer.epochs=1")
    store, checkpoint = job_writes(cfg, 10, SYNTHETIC_TEST)
    # best_weights.pt is the state plus a file's few kB of framing
    assert weights_measured - max(12_000, 0.01 * weights_measured) < model_bytes(cfg, 10) <= weights_measured
    # never clearly under what a checkpoint took (figures rounded to 3 digits), nor far over
    assert 0.995 * checkpoint_measured <= checkpoint <= 1.05 * checkpoint_measured
    # the artifacts and, on top, the store's rows for the job
    assert artifacts_measured <= store <= 1.5 * artifacts_measured


def test_figures_add_to_the_store_and_not_to_the_checkpoint(base):
    with_figures = job_writes(OmegaConf.merge(base, {"tracking": {"figures": True}}), 10)
    without = job_writes(OmegaConf.merge(base, {"tracking": {"figures": False}}), 10)
    assert with_figures[1] == without[1]
    assert with_figures[0] - without[0] >= 360_000  # the four PNGs measured up to 360 kB


def test_predictions_add_a_row_per_test_image_unless_the_test_is_skipped(base):
    """predictions.npz, as tracking/predictions.py writes it: CIFAR-10's 10,000 test images of
    10 classes measured 281,660 bytes."""
    import numpy as np

    from cifar_sweep.tracking import predictions

    none, cifar = (job_writes(base, 10, n)[0] for n in (0, 10_000))
    cifar10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
               "truck"]
    written = len(predictions.to_bytes(predictions.arrays(
        np.zeros((10_000, 10), np.float32), np.zeros(10_000), cifar10)))
    assert written == 281_660
    assert written <= cifar - none <= written + 10_000
    skipped = OmegaConf.create(OmegaConf.to_container(base))  # a search's trial
    skipped.trainer.skip_test = True
    assert job_writes(skipped, 10, 10_000)[0] == job_writes(skipped, 10, 0)[0]
    labels_only = OmegaConf.merge(base, {"tracking": {"predictions_probabilities": False}})
    assert job_writes(labels_only, 10, 10_000)[0] - job_writes(labels_only, 10, 0)[0] < 100_000


def test_the_logged_model_adds_about_the_weights_to_the_store(base):
    logged = job_writes(OmegaConf.merge(base, {"tracking": {"log_model": True}}), 10)
    not_logged = job_writes(OmegaConf.merge(base, {"tracking": {"log_model": False}}), 10)
    state = model_bytes(base, 10)
    # modified_net's model.pth and MLmodel's files measured 159,545 bytes for its 151,250 state
    assert state < logged[0] - not_logged[0] <= state + 20_000
    assert logged[1] == not_logged[1]


def test_the_test_images_file_is_counted_by_what_log_once_writes(base, tmp_path):
    """test_images.npz as tracking/test_images.py writes it into a real store, for 500 images of
    3 x 32 x 32 and CIFAR-10's class names: the estimate is at or above its size, by less than
    10 kB; a job that skips the test (a search's trial) writes none."""
    import numpy as np
    from mlflow import MlflowClient

    from cifar_sweep.tracking import test_images

    store = tmp_path / "store"
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    images = np.random.default_rng(0).integers(0, 256, (500, 3, 32, 32), dtype=np.uint8)
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
               "truck"]
    assert test_images.log_once(client, str(store), "fp", images, np.arange(500) % 10, classes)
    [written] = list(store.rglob(test_images.ARTIFACT))
    estimate = disk_space.test_images_bytes(base, 500, images.size)
    assert written.stat().st_size <= estimate <= written.stat().st_size + 10_000
    skipped = OmegaConf.create(OmegaConf.to_container(base))
    skipped.trainer.skip_test = True
    assert disk_space.test_images_bytes(skipped, 500, images.size) == 0


def test_the_test_images_count_once_per_data_in_a_sweep(client, tmp_path, free):
    """Two jobs of one data and one of another: the store gets each data's test images once,
    on top of what the three jobs write; jobs that skip the test add none."""
    def job(model, fingerprint, examples, skip_test=False):
        cfg = folders(compose_config(f"model={model}", f"trainer.seed={uuid.uuid4().int % 10**9}"),
                      tmp_path, uri=str(tmp_path / "store"))
        if skip_test:
            cfg = OmegaConf.create(OmegaConf.to_container(cfg))
            cfg.trainer.skip_test = True
        return PlannedJob(cfg, fingerprint, 10, examples, examples * 3 * 32 * 32)

    jobs = [job("modified_net", FINGERPRINT, 500), job("origin_net", FINGERPRINT, 500),
            job("modified_net", "other-data", 200), job("modified_net", "trials-data", 300, True)]
    free.of[tmp_path] = 1
    line = error_line_sweep(jobs, client)
    checkpoints = 2 * max(job_writes(j.cfg, 10)[1] for j in jobs)
    images = [disk_space.test_images_bytes(j.cfg, j.test_examples, j.test_pixels) for j in jobs]
    assert images[0] == images[1] > images[2] > 0 == images[3]
    store = (disk_space.STORE_ONCE + images[0] + images[2]
             + sum(job_writes(j.cfg, 10, j.test_examples)[0] for j in jobs))
    assert f"its 4 jobs to train write about {(checkpoints + store) / MB:.1f} MB" in line, line


def test_each_epoch_adds_the_same_store_rows_and_nothing_to_the_checkpoint(base):
    writes = [job_writes(OmegaConf.merge(base, {"trainer": {"epochs": e}}), 10) for e in (1, 11, 21)]
    (s1, c1), (s11, c11), (s21, c21) = writes
    assert s11 > s1 and s21 - s11 == s11 - s1
    assert c1 == c11 == c21


# --- check_writes --------------------------------------------------------------------------------

def error_line(cfg, writes, concurrent) -> str:
    with pytest.raises(UserInputError) as raised:
        check_writes(cfg, writes, concurrent)
    return str(raised.value)


def test_too_little_for_the_checkpoints_is_one_line_naming_folder_free_and_need(base, tmp_path, free):
    cfg = folders(base, tmp_path)
    free.of[tmp_path] = 9 * MB  # the checkpoint folder does not exist yet: its parent is asked
    # one job at a time: its checkpoint and, while it saves, its temporary copy: 2 x 5 MB
    assert error_line(cfg, WRITES, concurrent=1) == (
        f"not enough free space for this sweep: checkpoint.dir={tmp_path / 'checkpoints'} has "
        f"9.0 MB free, and its 3 jobs to train write about 10.0 MB there; free space there, point "
        f"the folder elsewhere, or sweep fewer jobs")


@pytest.mark.parametrize(("concurrent", "keep", "need"), [
    (1, False, 2 * 5 * MB),                # the largest checkpoint and its copy
    (2, False, 2 * (5 + 4) * MB),          # the two largest, side by side
    (5, False, 2 * (5 + 4 + 3) * MB),      # more workers than jobs: every job at once
    (1, True, 2 * 5 * MB + (4 + 3) * MB),  # and the kept checkpoints of the jobs done
    (2, True, 2 * (5 + 4) * MB + 3 * MB),
])
def test_the_checkpoints_needed_are_those_running_twice_and_those_kept(base, tmp_path, free,
                                                                        concurrent, keep, need):
    cfg = folders(base, tmp_path, checkpoint={"keep": keep})
    free.of[tmp_path] = need - 1
    assert f"write about {need / MB:.1f} MB there" in error_line(cfg, WRITES, concurrent)
    free.of[tmp_path] = need
    check_writes(cfg, WRITES, concurrent)  # exactly enough passes


def test_a_narrow_margin_is_a_warning_and_twice_the_need_is_silent(base, tmp_path, free, capsys):
    cfg = folders(base, tmp_path)
    free.of[tmp_path] = 2 * 10 * MB - 1
    check_writes(cfg, WRITES, concurrent=1)
    assert capsys.readouterr().err == (
        f"warning: narrow free space: checkpoint.dir={tmp_path / 'checkpoints'} has 20.0 MB free, "
        f"and this sweep's 3 jobs to train write about 10.0 MB there; a full disk stops the sweep "
        f"(the same command then continues it)\n")
    free.of[tmp_path] = 2 * 10 * MB
    check_writes(cfg, WRITES, concurrent=1)
    assert capsys.readouterr().err == ""


def test_a_local_store_on_the_same_file_system_adds_to_the_checkpoints(base, tmp_path, free):
    store = tmp_path / "mlruns"
    cfg = folders(base, tmp_path, uri=str(store))
    store_need = disk_space.STORE_ONCE + (1 + 2 + 1) * MB  # a new store, and each job's files
    free.of[tmp_path] = 10 * MB + store_need - 1
    line = error_line(cfg, WRITES, concurrent=1)
    assert (f"checkpoint.dir={tmp_path / 'checkpoints'} and tracking.uri={store} has "
            f"{(10 * MB + store_need - 1) / MB:.1f} MB free") in line
    assert f"write about {(10 * MB + store_need) / MB:.1f} MB there" in line
    assert free.asked == [tmp_path]  # one file system, asked once
    free.of[tmp_path] = 10 * MB + store_need
    check_writes(cfg, WRITES, concurrent=1)


def test_a_sqlite_uri_counts_the_folder_of_its_database(base, tmp_path, free):
    db_folder = tmp_path / "db"
    db_folder.mkdir()
    cfg = folders(base, tmp_path, uri=f"sqlite:///{db_folder}/mlflow.db")
    free.of[tmp_path] = free.of[db_folder] = 1 * MB
    assert f"and tracking.uri={db_folder} has 1.0 MB free" in error_line(cfg, WRITES, concurrent=1)


def test_a_tracking_server_store_is_not_counted(base, tmp_path, free):
    free.of[tmp_path] = 10 * MB  # enough for the checkpoints, nothing for a store
    check_writes(folders(base, tmp_path, uri=SERVER), WRITES, concurrent=1)
    assert free.asked == [tmp_path]


def test_a_folder_not_made_yet_is_checked_where_it_will_be_made_and_not_made(base, tmp_path, free):
    deep = tmp_path / "a" / "b" / "checkpoints"
    free.of[tmp_path] = 100 * MB
    check_writes(folders(base, tmp_path, checkpoints=deep), WRITES, concurrent=1)
    assert free.asked == [tmp_path]
    assert not (tmp_path / "a").exists()


def test_an_existing_folder_is_asked_itself_as_it_may_be_a_mount_of_its_own(base, tmp_path, free):
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    free.of[checkpoints] = 10 * MB
    check_writes(folders(base, tmp_path, checkpoints=checkpoints), WRITES, concurrent=1)
    assert free.asked == [checkpoints]


def test_folders_on_different_file_systems_are_checked_each_on_its_own(base, tmp_path, free):
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on a file system of its own")
    # checkpoints on the tmpfs (the folder is never made: its parent is asked), the store here
    checkpoints = shm / f"cifar_sweep_test_{uuid.uuid4().hex}" / "checkpoints"
    store = tmp_path / "mlruns"
    cfg = folders(base, tmp_path, uri=str(store), checkpoints=checkpoints)
    free.of[shm] = 10 * MB  # exactly the checkpoints' need
    free.of[tmp_path] = 100 * MB
    check_writes(cfg, WRITES, concurrent=1)  # each fits on its own, on 10 + 100 MB
    assert sorted(map(str, free.asked)) == sorted([str(shm), str(tmp_path)])
    free.of[tmp_path] = 1 * MB
    line = error_line(cfg, WRITES, concurrent=1)
    assert line.startswith(f"not enough free space for this sweep: tracking.uri={store} has 1.0 MB free")
    assert "checkpoint.dir" not in line


# --- check_sweep ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def client(tmp_path_factory) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{tmp_path_factory.mktemp('store')}/mlflow.db")


def finish(client: MlflowClient, job: PlannedJob) -> None:
    """A FINISHED run of the job's config, tagged as its job would tag it."""
    identity = identify_ahead(job.cfg, job.fingerprint)
    run = client.create_run(client.create_experiment(f"exp-{uuid.uuid4().hex}"),
                            tags={**identity.tags(), t.ROLE: t.ROLE_JOB})
    client.set_terminated(run.info.run_id, "FINISHED")


def planned(tmp_path, *overrides: str) -> PlannedJob:
    # a seed of this test's own: the store is shared by the module's tests
    seed = f"trainer.seed={uuid.uuid4().int % 10**9}"
    return PlannedJob(folders(compose_config(*overrides, seed), tmp_path), FINGERPRINT, 10)


def test_a_sweep_without_jobs_checks_nothing(client, free):
    check_sweep([], client, concurrent=4)
    check_sweep([], client, concurrent=4, trials=3)  # a search with no corners planned
    assert free.asked == []


def test_jobs_finished_before_are_not_counted(client, tmp_path, free):
    done = planned(tmp_path, "model=origin_net")
    todo = planned(tmp_path, "model=modified_net")
    finish(client, done)
    free.of[tmp_path] = 1
    line = error_line_sweep([done, todo], client)
    # only ModifiedNet's checkpoint (and its copy), not OriginNet's larger one
    assert f"its 1 job to train writes about {2 * job_writes(todo.cfg, 10)[1] / MB:.1f} MB" in line


def test_a_sweep_whose_jobs_all_finished_before_checks_nothing(client, tmp_path, free):
    done = planned(tmp_path, "model=modified_net")
    finish(client, done)
    check_sweep([done], client, concurrent=1)
    assert free.asked == []


def test_rerun_counts_a_job_that_finished_before(client, tmp_path, free):
    done = planned(tmp_path, "model=modified_net", "trainer.rerun=true")
    finish(client, done)
    free.of[tmp_path] = 1
    assert "its 1 job to train" in error_line_sweep([done], client)


def test_a_search_counts_its_largest_corner_once_per_trial(client, tmp_path, free):
    small = planned(tmp_path, "model=modified_net", "checkpoint.keep=true")
    large = planned(tmp_path, "model=origin_net", "checkpoint.keep=true")
    finish(client, large)  # a trial may take any value: a corner finished before still counts
    free.of[tmp_path] = 1
    largest = job_writes(large.cfg, 10)[1]
    # 3 trials, kept: the running one twice (with its copy), the other two once
    line = error_line_sweep([small, large], client, trials=3)
    assert f"its 3 jobs to train write about {4 * largest / MB:.1f} MB" in line


def error_line_sweep(jobs, client, trials=None) -> str:
    with pytest.raises(UserInputError) as raised:
        check_sweep(jobs, client, concurrent=1, trials=trials)
    return str(raised.value)
