"""The files a sweep and its jobs share in the sweep folder (cifar_sweep/sweep_folder.py), each
through its writer and its reader on real files: their names never change (newer code reads the
folders of older sweeps), a job finds its number and its parent run, the ended markers count a
sweep's progress, and the stop marker keeps the first fault, even on a full disk."""

import errno
import json
import os
from pathlib import Path

import pytest

from cifar_sweep import sweep_folder
from cifar_sweep.faults import EnvironmentFault


@pytest.fixture(autouse=True)
def _no_stop_in_memory(monkeypatch):
    """Each test starts with no in-process stop record (the basic launcher's jobs share one)."""
    monkeypatch.setattr(sweep_folder, "_stopped_here", {})


def test_the_names_are_those_older_sweeps_wrote():
    assert (sweep_folder.PARENT_FILE, sweep_folder.LAUNCH_FILE, sweep_folder.ENDED,
            sweep_folder.STOP_FILE) == ("mlflow_parent_run_id", "launched_jobs.json",
                                        "ended_jobs", "stopped_by_environment.json")


def test_the_parent_run_id_round_trips(tmp_path):
    assert sweep_folder.parent_run_id(str(tmp_path)) is None  # a sweep without its callback
    sweep_folder.write_parent_run_id(str(tmp_path), "abc123")
    assert (tmp_path / "mlflow_parent_run_id").read_text() == "abc123"
    assert sweep_folder.parent_run_id(str(tmp_path)) == "abc123"
    (tmp_path / "mlflow_parent_run_id").write_text("abc123\n")  # written by hand
    assert sweep_folder.parent_run_id(str(tmp_path)) == "abc123"


def test_a_launched_job_reads_its_number_in_the_whole_sweep(tmp_path):
    folder = str(tmp_path)
    assert sweep_folder.launched(folder) is None  # a search: the launcher's numbers are the sweep's
    assert sweep_folder.original_job_num(folder, 1) == 1
    sweep_folder.write_launched(folder, [2, 5, 7])  # jobs 0, 1, 3, 4, 6 finished before
    assert json.loads((tmp_path / "launched_jobs.json").read_text()) == [2, 5, 7]
    assert sweep_folder.launched(folder) == [2, 5, 7]
    assert [sweep_folder.original_job_num(folder, n) for n in range(3)] == [2, 5, 7]
    assert sweep_folder.original_job_num(folder, 3) == 3  # past the list: the launcher's own


def test_the_ended_markers_count_the_launched_jobs(tmp_path):
    folder = str(tmp_path)
    assert sweep_folder.record_job_end(folder, 0, failed=False) is None  # no launch file
    assert not (tmp_path / "ended_jobs").exists()
    sweep_folder.write_launched(folder, [2, 5, 7])
    total, done, failed, elapsed = sweep_folder.record_job_end(folder, 2, failed=False)
    assert (total, done, failed) == (3, 1, 0) and elapsed >= 0
    assert sweep_folder.record_job_end(folder, 5, failed=True)[:3] == (3, 1, 1)
    assert sorted(os.listdir(tmp_path / "ended_jobs")) == ["2.finished", "5.failed"]
    sweep_folder.write_launched(folder, [5])  # the same folder again: the old markers go
    assert os.listdir(tmp_path / "ended_jobs") == []
    assert sweep_folder.record_job_end(folder, 5, failed=False)[:3] == (1, 1, 0)


def test_the_markers_keep_the_times_of_the_jobs_that_trained_from_the_start(tmp_path):
    """What a job to start will take: the jobs that trained whole, not the continued ones
    (no time), nor the failed ones, from the markers' names (one listing reads them all); the
    markers stay empty files (a full disk still takes them)."""
    folder = str(tmp_path)
    assert sweep_folder.whole_job_seconds(folder) == []  # no folder yet
    sweep_folder.write_launched(folder, [0, 1, 2, 3, 4])
    sweep_folder.record_job_end(folder, 0, failed=False, seconds=600.04)
    sweep_folder.record_job_end(folder, 1, failed=False)  # continued from a checkpoint
    sweep_folder.record_job_end(folder, 2, failed=True)
    assert sweep_folder.record_job_end(folder, 3, failed=False, seconds=299.6)[:3] == (5, 3, 1)
    (tmp_path / "ended_jobs" / "9.halfs.finished").touch()  # not a number: skipped
    assert sorted(os.listdir(tmp_path / "ended_jobs")) == [
        "0.600s.finished", "1.finished", "2.failed", "3.300s.finished", "9.halfs.finished"]
    assert all(f.stat().st_size == 0 for f in (tmp_path / "ended_jobs").iterdir())
    assert sorted(sweep_folder.whole_job_seconds(folder)) == [300.0, 600.0]


@pytest.mark.parametrize("left, elapsed, ended, whole, at_once, expected", [
    (4, 60.0, 2, [600.0, 1200.0], 2, ", about 30.0 min left"),  # 900 s x 4 jobs / 2 at once
    (4, 60.0, 2, [600.0], 1, ", about 40.0 min left"),
    (4, 60.0, 2, [], 2, ""),               # only continued or failed jobs ended: no guess
    (4, 600.0, 2, None, 2, ", about 20.0 min left"),  # a search (no folder): 300 s per job ended
    (4, 600.0, 2, [60.0], None, ", about 20.0 min left"),  # Ray: how many at once is unknown
    (0, 600.0, 6, [600.0], 2, ""),         # nothing left
    (3, 5.0, 0, None, 2, ""),              # nothing ended yet
])
def test_the_time_left_comes_from_whole_jobs_where_the_folder_has_them(
        left, elapsed, ended, whole, at_once, expected):
    from cifar_sweep.job.steps import _time_left

    assert _time_left(left, elapsed, ended, whole, at_once) == expected


@pytest.mark.parametrize("launcher, expected", [
    ({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher",
      "n_jobs": 2}, 2),
    ({"_target_": "hydra_plugins.cifar_sweep_slurm.launcher.SlurmLauncher",
      "array_parallelism": 64}, 64),
    ({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}, 1),
    ({"_target_": "hydra_plugins.cifar_sweep_ray.launcher.RayLauncher"}, None),
])
def test_how_many_jobs_run_at_once_is_what_the_launcher_says(launcher, expected):
    from omegaconf import OmegaConf

    from cifar_sweep.sweep.job_context import side_by_side

    assert side_by_side(OmegaConf.create(launcher)) == expected


def _fault(what: str) -> EnvironmentFault:
    return EnvironmentFault(what, "/data", "free space on /data and run the same command again")


def test_the_stop_marker_keeps_the_first_fault(tmp_path, monkeypatch):
    folder = str(tmp_path)
    assert sweep_folder.sweep_stopped(folder) is None
    sweep_folder.stop_sweep(folder, _fault("no space left"), "#3")
    first = {"what": "no space left", "where": "/data",
             "advice": "free space on /data and run the same command again", "job": "#3"}
    assert sweep_folder.sweep_stopped(folder) == first  # this process
    assert json.loads((tmp_path / "stopped_by_environment.json").read_text()) == first
    sweep_folder.stop_sweep(folder, _fault("disk quota exceeded"), "#4")
    assert sweep_folder.sweep_stopped(folder) == first  # this process, after a second fault
    monkeypatch.setattr(sweep_folder, "_stopped_here", {})  # another process reads the file
    assert sweep_folder.sweep_stopped(folder) == first
    # a fault in that other process too: it reports the first, the file's
    sweep_folder.stop_sweep(folder, _fault("disk quota exceeded"), "#5")
    assert sweep_folder.sweep_stopped(folder) == first
    assert [p.name for p in tmp_path.iterdir()] == ["stopped_by_environment.json"]  # no temp left
    sweep_folder.clear_stop(folder)
    assert sweep_folder.sweep_stopped(folder) is None
    assert not (tmp_path / "stopped_by_environment.json").exists()


def test_on_a_full_disk_the_stop_marker_is_an_empty_file(tmp_path, monkeypatch):
    """No free block for the record: an empty file still stops the later jobs, in this process
    with the record, elsewhere with a line that sends the user to the jobs' own lines."""
    folder = str(tmp_path)

    real_write = Path.write_text

    def full(self, *args, **kwargs):  # the record needs a data block; there is none
        if self.name.startswith(".stopped_by_environment"):
            real_write(self, "{")  # a few bytes may land before the error
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full)
    sweep_folder.stop_sweep(folder, _fault("no space left"), "#1")
    assert [p.name for p in tmp_path.iterdir()] == ["stopped_by_environment.json"]
    assert (tmp_path / "stopped_by_environment.json").read_text() == ""
    assert sweep_folder.sweep_stopped(folder)["job"] == "#1"  # this process kept the record
    monkeypatch.setattr(sweep_folder, "_stopped_here", {})
    assert sweep_folder.sweep_stopped(folder) == {
        "what": "a fault of the environment", "where": "the machine",
        "advice": "see the jobs' lines above, fix it and run the same command again", "job": "?"}
    sweep_folder.clear_stop(folder)
    assert sweep_folder.sweep_stopped(folder) is None


def test_a_fault_written_by_another_process_meanwhile_is_not_replaced(tmp_path, monkeypatch):
    """Two processes stop the sweep at once: the other's marker lands while this one writes its
    record. The marker is linked into place only where none is, so the first written stays, and
    this process reports it too (a check, then a replace, overwrote it)."""
    folder = str(tmp_path)
    other = {"what": "no space left", "where": "/data", "advice": "free space", "job": "#1"}
    real_write = Path.write_text

    def meanwhile(self, *args, **kwargs):
        if self.name.startswith(".stopped_by_environment"):  # our record's temporary file
            real_write(tmp_path / "stopped_by_environment.json", json.dumps(other))
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", meanwhile)
    sweep_folder.stop_sweep(folder, _fault("disk quota exceeded"), "#2")
    assert json.loads((tmp_path / "stopped_by_environment.json").read_text()) == other
    assert sweep_folder.sweep_stopped(folder) == other
    assert [p.name for p in tmp_path.iterdir()] == ["stopped_by_environment.json"]
