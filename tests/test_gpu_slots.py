"""train/gpu_slots.py: a job's GPU chosen by counting the slot locks live processes hold (real
`flock`s, held by real subprocesses where another job is needed): this process's own slot,
giving it back, ties in turn from `job_num`, the next free slot number, and the choosing lock
that keeps two starting jobs from counting the same free slot. (Least loaded and a killed job's
slot freeing itself: test_gpu_path.py.) The module never asks torch: nothing is faked."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest
from filelock import FileLock

from cifar_sweep.train import gpu_slots
from conftest import ROOT

# Another job: holds the lock files named after the folder (a slot, or choose.lock) as a live
# job does, says so, and keeps them until it is killed.
HOLD = ("from filelock import FileLock; import sys, time; "
        "locks = [FileLock(sys.argv[1] + '/' + n, timeout=0) for n in sys.argv[2:]]; "
        "[lock.acquire() for lock in locks]; print('held', flush=True); time.sleep(120)")


@pytest.fixture(autouse=True)
def no_slot_left():
    # the module keeps this process's slot in a global: each test starts and ends without one
    gpu_slots.release()
    yield
    gpu_slots.release()


@pytest.fixture
def other_job(tmp_path):
    """hold(folder, *lock names): a live process holding them until the test ends."""
    procs = []
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}

    def hold(folder, *names):
        folder.mkdir(parents=True, exist_ok=True)
        p = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), *names],
                             stdout=subprocess.PIPE, text=True, env=env)
        procs.append(p)
        assert p.stdout.readline().strip() == "held"
        return p

    yield hold
    for p in procs:
        p.kill()
        p.wait()


def test_a_taken_slot_is_counted_as_live_and_freed_on_release(tmp_path):
    folder = tmp_path / "slots"
    assert gpu_slots.take(["a", "b"], 0, folder) == 0
    assert (folder / "a.0.lock").exists()
    assert [gpu_slots.live_jobs(folder, g) for g in "ab"] == [1, 0]  # this process's included
    gpu_slots.release()
    assert [gpu_slots.live_jobs(folder, g) for g in "ab"] == [0, 0]
    gpu_slots.release()  # nothing held: nothing to do


def test_the_next_job_of_a_worker_gives_back_the_previous_slot(tmp_path):
    # a worker runs its jobs one by one: its earlier job's slot must not count against the GPU,
    # else a worker's second job would move to the other GPU
    folder = tmp_path / "slots"
    assert gpu_slots.take(["a", "b"], 0, folder) == 0
    assert gpu_slots.take(["a", "b"], 0, folder) == 0
    assert [gpu_slots.live_jobs(folder, g) for g in "ab"] == [1, 0]


def test_ties_go_to_job_num_then_the_next_gpus_in_turn(tmp_path, other_job):
    folder = tmp_path / "slots"
    assert gpu_slots.take(["a", "b", "c"], 4, folder) == 1  # all free: 4 % 3
    gpu_slots.release()
    other_job(folder, "b.0.lock")
    # job 1's turn is b, which is busy: the next one after it (c), not the first free (a)
    assert gpu_slots.take(["a", "b", "c"], 1, folder) == 2


def test_a_busy_gpu_gets_the_next_free_slot_number(tmp_path, other_job):
    folder = tmp_path / "slots"
    other_job(folder, "a.0.lock", "b.0.lock", "b.1.lock")
    assert gpu_slots.take(["a", "b"], 1, folder) == 0  # a has one job, b two
    assert [gpu_slots.live_jobs(folder, g) for g in "ab"] == [2, 2]
    assert (folder / "a.1.lock").exists()
    # the slot this process holds is a.1: given back, a counts the other job's alone
    gpu_slots.release()
    assert [gpu_slots.live_jobs(folder, g) for g in "ab"] == [1, 2]


def test_a_slot_left_by_a_finished_job_is_free_again(tmp_path):
    # its lock file stays behind, unheld: it counts for nothing and is taken again
    folder = tmp_path / "slots"
    folder.mkdir()
    (folder / "a.0.lock").touch()
    (folder / "a.1.lock").touch()
    assert gpu_slots.live_jobs(folder, "a") == 0
    assert gpu_slots.take(["a", "b"], 0, folder) == 0
    assert gpu_slots.live_jobs(folder, "a") == 1


def test_a_gpu_named_by_uuid_is_counted_apart_from_others(tmp_path, other_job):
    # names are prefixes of file names: GPU-1 must not count GPU-10's slots
    folder = tmp_path / "slots"
    other_job(folder, "GPU-10.0.lock")
    assert gpu_slots.live_jobs(folder, "GPU-1") == 0
    assert gpu_slots.take(["GPU-10", "GPU-1"], 0, folder) == 1


def test_choosing_waits_while_another_job_chooses(tmp_path, other_job):
    folder = tmp_path / "slots"
    chooser = other_job(folder, "choose.lock")
    chosen = []
    thread = threading.Thread(target=lambda: chosen.append(gpu_slots.take(["a"], 0, folder)),
                              daemon=True)
    thread.start()
    thread.join(0.5)
    assert thread.is_alive() and chosen == []  # it counts only once the other has chosen
    chooser.kill()
    chooser.wait()
    thread.join(10)
    assert chosen == [0]
    # the choosing lock is let go once the slot is held: the next job does not wait
    lock = FileLock(str(folder / "choose.lock"), timeout=0)
    lock.acquire()  # raises Timeout if it were still held
    lock.release()


def test_the_default_folder_is_per_user_in_the_temp_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)  # read TMPDIR again
    assert gpu_slots.default_folder() == tmp_path / f"cifar_sweep_gpu_slots_{os.getuid()}"
