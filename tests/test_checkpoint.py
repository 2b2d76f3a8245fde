"""checkpoint.py on real files: where a checkpoint lives, atomic saves (a full disk keeps the previous
one whole), loading that never runs code and turns a corrupt file into a fresh start, removal of the
hash's folder, and the claim lock that lets one job, never two, continue a run."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cifar_sweep.train import checkpoint

# What a checkpoint holds: tensors of several dtypes, numbers, strings, lists and dicts.
STATE = {
    "model": {"conv.weight": torch.arange(24, dtype=torch.float32).reshape(2, 3, 2, 2),
              "bn.num_batches_tracked": torch.tensor(7, dtype=torch.int64)},
    "best": {"head": torch.tensor([1.5, -2.25], dtype=torch.bfloat16)},
    "progress": {"epoch": 3, "best_val": 0.625, "history": [0.1, 0.2, 0.3]},
    "rng": {"torch": torch.get_rng_state(), "note": "cpu"},
}


def assert_same(loaded, expected) -> None:
    assert type(loaded) is type(expected)
    if isinstance(expected, dict):
        assert loaded.keys() == expected.keys()
        for key in expected:
            assert_same(loaded[key], expected[key])
    elif isinstance(expected, list):
        assert len(loaded) == len(expected)
        for a, b in zip(loaded, expected):
            assert_same(a, b)
    elif isinstance(expected, torch.Tensor):
        assert loaded.dtype == expected.dtype and torch.equal(loaded, expected)
    else:
        assert loaded == expected


# writes to /dev/full fail with ENOSPC: a full disk, without filling one
needs_dev_full = pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return checkpoint.path_for(str(tmp_path / "checkpoints"), "cfghash", "run1")


# --- path_for ------------------------------------------------------------------------------------

def test_path_is_folder_then_config_hash_then_run_id_with_home_expanded(tmp_path, monkeypatch):
    # checkpoint.dir=~/ckpt must not make a folder literally named "~" under the working directory
    monkeypatch.setenv("HOME", str(tmp_path))
    assert checkpoint.path_for("~/ckpt", "abc123", "r9") == tmp_path / "ckpt" / "abc123" / "r9.pt"


# --- save and load -------------------------------------------------------------------------------

def test_a_saved_state_loads_back_equal_and_the_folders_are_made(path):
    assert not path.parent.exists()
    checkpoint.save(path, STATE)
    assert_same(checkpoint.load(path), STATE)


def test_saving_again_replaces_the_checkpoint_and_leaves_no_temporary_file(path):
    checkpoint.save(path, {"progress": {"epoch": 1}})
    checkpoint.save(path, {"progress": {"epoch": 2}})
    assert checkpoint.load(path) == {"progress": {"epoch": 2}}
    # the temporary file was renamed onto the checkpoint, not copied and left behind
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


@needs_dev_full
def test_a_full_disk_while_saving_keeps_the_previous_checkpoint_whole(path):
    checkpoint.save(path, {"progress": {"epoch": 1}})
    # save writes `.<name>.tmp<pid>` beside the checkpoint: a link from there to /dev/full makes
    # that real write fail with ENOSPC, as on a full disk
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.symlink_to("/dev/full")
    with pytest.raises(OSError) as raised:
        checkpoint.save(path, {"progress": {"epoch": 2}})
    assert raised.value.errno == errno.ENOSPC
    assert raised.value.filename == str(tmp)  # the error names the file, for the one-line report
    assert not tmp.is_symlink() and not tmp.exists()  # the failed temporary file is removed
    assert checkpoint.load(path) == {"progress": {"epoch": 1}}


@needs_dev_full
def test_write_file_on_a_full_disk_names_errno_and_path_and_leaves_no_file(tmp_path):
    target = tmp_path / "weights.pt"
    target.symlink_to("/dev/full")
    with pytest.raises(OSError) as raised:
        checkpoint.write_file(target, {"w": torch.zeros(4096)})  # larger than the write buffer
    assert (raised.value.errno, raised.value.filename) == (errno.ENOSPC, str(target))
    assert "No space left" in str(raised.value)
    assert not target.is_symlink()


def test_write_file_writes_what_torch_load_reads(tmp_path):
    target = tmp_path / "best_weights.pt"
    checkpoint.write_file(target, STATE["model"])
    assert_same(torch.load(target, weights_only=True), STATE["model"])


def truncated(path: Path) -> None:
    checkpoint.save(path, STATE)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a kill half-way through a copy


@pytest.mark.parametrize("corrupt", [
    truncated,
    lambda p: p.write_bytes(b""),
    lambda p: p.write_bytes(os.urandom(3000)),
    lambda p: p.write_text("not a checkpoint\n"),
], ids=["truncated", "empty", "random bytes", "text"])
def test_an_unreadable_checkpoint_loads_as_none_with_a_warning_naming_it(path, corrupt, caplog):
    path.parent.mkdir(parents=True)
    corrupt(path)
    with caplog.at_level(logging.WARNING, logger=checkpoint.log.name):
        assert checkpoint.load(path) is None
    [record] = caplog.records
    assert str(path) in record.getMessage()
    assert "unreadable" in record.getMessage() and "starting the run over" in record.getMessage()


class _RunsCode:
    """Unpickled without weights_only, this object calls os.mkdir: a checkpoint from elsewhere."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def test_a_checkpoint_that_would_run_code_is_refused_without_running_it(path, tmp_path):
    marker = tmp_path / "code_ran"
    path.parent.mkdir(parents=True)
    with open(path, "wb") as f:
        torch.save({"progress": {"epoch": 1}, "payload": _RunsCode(marker)}, f)
    assert checkpoint.load(path) is None
    assert not marker.exists()


# --- remove --------------------------------------------------------------------------------------

def test_removing_the_last_checkpoint_of_a_config_removes_its_folder(path):
    checkpoint.save(path, STATE)
    checkpoint.remove(path)
    assert not path.exists() and not path.parent.exists()
    assert path.parent.parent.is_dir()  # checkpoint.dir itself stays


def test_removing_one_run_keeps_the_folder_of_another_run_of_the_config(path):
    other = path.with_name("run2.pt")
    checkpoint.save(path, STATE)
    checkpoint.save(other, STATE)
    checkpoint.remove(path)
    assert not path.exists() and other.is_file()


def test_removing_a_missing_checkpoint_is_no_error(path):
    checkpoint.remove(path)  # a run that never saved one (stopped in its first epoch)
    assert not path.parent.exists()


# --- claim ---------------------------------------------------------------------------------------

def test_a_claimed_checkpoint_cannot_be_claimed_again_until_released(path):
    held = checkpoint.claim(path)
    assert held is not None
    assert checkpoint.claim(path) is None  # a second job, same run: it stands aside
    with held:
        pass
    again = checkpoint.claim(path)
    assert again is not None
    with again:
        pass


def test_releasing_a_claim_removes_its_lock_and_the_emptied_folder(path):
    with checkpoint.claim(path) as held:
        assert Path(held.lock.lock_file).is_file()
    assert not path.parent.exists()  # the run finished and removed its checkpoint: nothing left


def test_releasing_a_claim_drops_the_kernel_lock_not_only_the_lock_file(path):
    held = checkpoint.claim(path)
    # a descriptor of the lock file taken while the claim is held (a job trying it meanwhile)
    fd = os.open(f"{path}.lock", os.O_RDWR)
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with held:
            pass
        # unlinking the file alone would leave the lock held on its inode
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)


def test_releasing_a_claim_keeps_the_folder_while_its_checkpoint_is_there(path):
    checkpoint.save(path, STATE)
    with checkpoint.claim(path):
        pass
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # the lock file is gone


def test_a_claim_held_by_a_killed_process_is_free_again(path):
    # another job holds the run's lock; SIGKILL gives it no chance to release it: the kernel does
    path.parent.mkdir(parents=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from filelock import FileLock; "
         "lock = FileLock(sys.argv[1]); lock.acquire(); print('held', flush=True); time.sleep(60)",
         f"{path}.lock"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert checkpoint.claim(path) is None
    finally:
        holder.kill()
        holder.wait()
    held = checkpoint.claim(path)
    assert held is not None
    with held:
        pass
