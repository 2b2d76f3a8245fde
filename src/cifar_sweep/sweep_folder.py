"""The files a sweep and its jobs share in the sweep folder: their names, writers and readers.

The folder is `hydra.sweep.dir`. The sweep's start (sweep/callback.py) writes its parent run's
id and the job numbers it launches (the others finished before or train elsewhere); the planned
sweeper (hydra_plugins/cifar_sweep_planned) launches those; each job, in whatever process its
launcher runs it, reads its number in the whole sweep and the parent run back, marks its end,
and on a fault of the environment (faults.py) leaves the stop marker that the later jobs and the
sweep's end read. Files, because a launcher may run the jobs in other processes. Newer code
reads the folders of older sweeps: the names never change. Hydra's own files there
(`multirun.yaml`, each job's folder) are not ours.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

# A type only: Hydra imports the planned sweeper, and with it this module, whenever it scans its
# plugins; faults.py would bring in MLflow there.
if TYPE_CHECKING:
    from cifar_sweep.faults import EnvironmentFault

PARENT_FILE = "mlflow_parent_run_id"  # the sweep's parent run id
LAUNCH_FILE = "launched_jobs.json"  # the job numbers launched, in order
# a file per launched job that ended, named `num.state` (state: finished, failed), or
# `num.<seconds>s.finished` for a job that trained from its first epoch (its time: what a job still
# to start will take); empty files, named so that one directory listing reads them all
ENDED = "ended_jobs"
STOP_FILE = "stopped_by_environment.json"  # a fault of the environment stopped the sweep


def write_parent_run_id(sweep_dir: str, run_id: str) -> None:
    (Path(sweep_dir) / PARENT_FILE).write_text(run_id)


def parent_run_id(sweep_dir: str) -> str | None:
    path = Path(sweep_dir) / PARENT_FILE
    return path.read_text().strip() if path.is_file() else None


def write_launched(sweep_dir: str, nums: list[int]) -> None:
    (Path(sweep_dir) / LAUNCH_FILE).write_text(json.dumps(nums))
    ended = Path(sweep_dir) / ENDED
    ended.mkdir(exist_ok=True)
    for old in ended.iterdir():  # an earlier sweep in this same folder
        old.unlink()


def launched(sweep_dir: str) -> list[int] | None:
    """The job numbers the sweep's start left to launch, in order; None where it wrote none (a
    search, a sweep without its callback)."""
    path = Path(sweep_dir) / LAUNCH_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def original_job_num(sweep_dir: str, launched_num: int) -> int:
    """A launched job's number in the whole sweep: the launcher numbers only what it launched."""
    nums = launched(sweep_dir)
    if nums is None:
        return launched_num
    return nums[launched_num] if 0 <= launched_num < len(nums) else launched_num


def record_job_end(sweep_dir: str, num: int, failed: bool,
                   seconds: float | None = None) -> tuple[int, int, int, float] | None:
    """Record this job's end in the folder (`seconds`: how long it took, where it trained from
    its first epoch), then the sweep's progress from the folder's files: (jobs launched, ended
    finished, ended failed, seconds since the launch), or None where the sweep wrote no launch
    file (a search: queries.sweep_progress_in_store reads the store). Files, not the store:
    reading every child run after every job costs O(jobs) each."""
    folder = Path(sweep_dir)
    launch, ended = folder / LAUNCH_FILE, folder / ENDED
    if not launch.is_file() or not ended.is_dir():
        return None
    state = "failed" if failed else "finished" if seconds is None else f"{seconds:.0f}s.finished"
    (ended / f"{num}.{state}").touch()  # no data block: a full disk still takes it
    names = [entry.name for entry in os.scandir(ended)]
    bad = sum(n.endswith(".failed") for n in names)
    return (len(json.loads(launch.read_text())), len(names) - bad, bad,
            time.time() - launch.stat().st_mtime)


def whole_job_seconds(sweep_dir: str) -> list[float]:
    """How long each ended job took that trained from its first epoch (record_job_end's
    `seconds`, from the markers' names): what a job still to start will take. A continued
    job's time says little."""
    ended = Path(sweep_dir) / ENDED
    found = []
    for entry in os.scandir(ended) if ended.is_dir() else ():
        parts = entry.name.split(".")
        if len(parts) == 3 and parts[2] == "finished" and parts[1].endswith("s"):
            try:
                found.append(float(parts[1][:-1]))
            except ValueError:  # a name of another version
                continue
    return found


# The sweep's stop marker. In this process too: with the basic launcher the jobs run here, and
# the marker file itself may be what cannot be written.
_stopped_here: dict[str, dict] = {}


def stop_sweep(sweep_dir: str, fault: EnvironmentFault, job: str) -> None:
    """Tell the sweep's later jobs not to start (they would fail the same way)."""
    record = {"what": fault.what, "where": fault.where, "advice": fault.advice, "job": job}
    key = str(Path(sweep_dir).resolve())
    if key in _stopped_here:  # the first fault is the one reported, here as in the file
        return
    path = Path(sweep_dir) / STOP_FILE
    _stopped_here[key] = record
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(json.dumps(record))
        os.link(tmp, path)  # only where no marker is: of two processes, the first fault stays
    except FileExistsError:  # another process's fault came first: that one (ours if it is empty)
        _stopped_here[key] = _read_stop(path) or record
    except OSError:
        try:  # an empty file needs no free block: still a marker, without the details
            path.touch()
        except OSError:
            pass
    finally:
        tmp.unlink(missing_ok=True)


def sweep_stopped(sweep_dir: str) -> dict | None:
    """The stop record of this sweep, or None while it goes on."""
    here = _stopped_here.get(str(Path(sweep_dir).resolve()))
    if here is not None:
        return here
    path = Path(sweep_dir) / STOP_FILE
    if not path.exists():
        return None
    return _read_stop(path) or {  # the empty marker of a full disk
        "what": "a fault of the environment", "where": "the machine",
        "advice": "see the jobs' lines above, fix it and run the same command again", "job": "?"}


def _read_stop(path: Path) -> dict | None:
    """The stop marker's record; None where it is empty (a full disk's) or unreadable."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def clear_stop(sweep_dir: str) -> None:
    """A sweep run again in the same folder (a fixed hydra.sweep.dir) starts unstopped."""
    _stopped_here.pop(str(Path(sweep_dir).resolve()), None)
    (Path(sweep_dir) / STOP_FILE).unlink(missing_ok=True)
