"""The files a sweep and its jobs share in the sweep folder (cifar_sweep/sweep_folder.py), each
through its writer and its reader on real files: their names never change (newer code reads the
folders of older sweeps), a job finds its number and its parent run, the ended markers count a
sweep's progress, and the stop marker keeps the first fault, even on a full disk."""

import errno
import json
import os

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
    (no time), nor the failed ones; a marker of older code (empty) or a torn one is skipped."""
    folder = str(tmp_path)
    assert sweep_folder.whole_job_seconds(folder) == []  # no folder yet
    sweep_folder.write_launched(folder, [0, 1, 2, 3, 4])
    sweep_folder.record_job_end(folder, 0, failed=False, seconds=600.04)
    sweep_folder.record_job_end(folder, 1, failed=False)  # continued from a checkpoint
    sweep_folder.record_job_end(folder, 2, failed=True)
    sweep_folder.record_job_end(folder, 3, failed=False, seconds=300.0)
    (tmp_path / "ended_jobs" / "4.finished").write_text("12.")  # a float still
    (tmp_path / "ended_jobs" / "9.finished").write_text("half")
    assert (tmp_path / "ended_jobs" / "0.finished").read_text() == "600.0"
    assert sorted(sweep_folder.whole_job_seconds(folder)) == [12.0, 300.0, 600.0]


@pytest.mark.parametrize("left, elapsed, ended, whole, side_by_side, expected", [
    (4, 60.0, 2, [600.0, 1200.0], 2, ", about 30.0 min left"),  # 900 s x 4 jobs / 2 at once
    (4, 60.0, 2, [600.0], 1, ", about 40.0 min left"),
    (4, 60.0, 2, [], 2, ""),               # only continued or failed jobs ended: no guess
    (4, 600.0, 2, None, 2, ", about 20.0 min left"),  # a search (no folder): 300 s per job ended
    (0, 600.0, 6, [600.0], 2, ""),         # nothing left
    (3, 5.0, 0, None, 2, ""),              # nothing ended yet
])
def test_the_time_left_comes_from_whole_jobs_where_the_folder_has_them(
        left, elapsed, ended, whole, side_by_side, expected):
    from cifar_sweep.job.steps import _time_left

    assert _time_left(left, elapsed, ended, whole, side_by_side) == expected


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

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sweep_folder.os, "replace", full)
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
