"""Faults of the machine, not of the run: a full disk or quota, a folder that cannot be written, a
GPU out of memory, a tracking server that stopped answering. Such a run ends KILLED with its
checkpoint kept (the same command continues it), a sweep stops starting jobs that would fail the
same way (a marker file in its folder, read by each job before it starts: sweep_folder.py), and
the command exits EXIT_STOPPED, which scripts can test for "fix the machine, then run the same
command again" (docs/faults.md)."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from cifar_sweep.tracking.store import sqlite_file

EXIT_STOPPED = 75  # EX_TEMPFAIL in sysexits.h: a temporary failure, try again later

FULL = {errno.ENOSPC: "no space left", errno.EDQUOT: "disk quota exceeded"}
UNWRITABLE = {errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
              errno.EPERM: "operation not permitted"}
# SQLite's own words (MLflow wraps them in MlflowException, the errno is lost)
SQLITE = {"database or disk is full": errno.ENOSPC,
          "attempt to write a readonly database": errno.EROFS}


class EnvironmentFault(Exception):
    """A run stopped by its machine. `where` is a folder or a device; `advice` what to do."""

    def __init__(self, what: str, where: str, advice: str):
        super().__init__(f"{what} on {where}")
        self.what, self.where, self.advice = what, where, advice


def lost_server_fault(uri: str) -> EnvironmentFault:
    """The fault a lost tracking server is recorded as (the sweep's stop record): it stopped
    answering mid-sweep, and every later job would fail the same way."""
    return EnvironmentFault("no answer from the tracking server", uri,
                            f"start the tracking server at {uri} again (the same store) and run "
                            "the same command again")


def write_folders(cfg) -> list[tuple[str, Path]]:
    """(setting, folder) of what a job writes: the store (and its artifacts), the checkpoints,
    the temporary folder where a run's artifacts are made before they are logged."""
    folders = []
    store = store_folder(str(cfg.tracking.uri))
    if store is not None:
        folders.append(("tracking.uri", store))
    folders.append(("checkpoint.dir", Path(str(cfg.checkpoint.dir)).expanduser().resolve()))
    folders.append(("TMPDIR", Path(tempfile.gettempdir()).resolve()))
    return folders


def store_folder(uri: str) -> Path | None:
    """The local folder of a store (a folder, or a `sqlite:///` file's folder); None for a server."""
    if uri.startswith("sqlite:///"):
        db = sqlite_file(uri)
        return db.expanduser().resolve().parent if db else None
    if "://" in uri:
        return None
    return Path(uri).expanduser().resolve()


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        orig = getattr(exc, "orig", None)  # SQLAlchemy keeps the driver's error there
        if isinstance(orig, BaseException):
            yield orig
        exc = exc.__cause__ or exc.__context__


def _gpu_out_of_memory(exc: BaseException) -> bool:
    # by name: this module must not import torch (the sweep's callback imports it)
    if type(exc).__name__ == "OutOfMemoryError" and type(exc).__module__.startswith("torch"):
        return True
    return isinstance(exc, RuntimeError) and ("CUDA out of memory" in str(exc)
                                              or "MPS backend out of memory" in str(exc))


def _folder_of(path: str | None, folders: Sequence[tuple[str, Path]]) -> tuple[str, Path] | None:
    """The configured folder that holds `path` (the innermost one)."""
    if not path:
        return None
    resolved = Path(os.path.abspath(path))
    inside = [(s, f) for s, f in folders if resolved == f or f in resolved.parents]
    return max(inside, key=lambda sf: len(str(sf[1]))) if inside else None


def _fullest(folders: Sequence[tuple[str, Path]]) -> tuple[str, Path] | None:
    """The configured folder with the least free space: where an ENOSPC without a path hit."""
    best = None
    for setting, folder in folders:
        existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
        if existing is None:
            continue
        free = shutil.disk_usage(existing).free
        if best is None or free < best[0]:
            best = (free, setting, folder)
    return (best[1], best[2]) if best else None


def _disk_fault(code: int, path: str | None, folders, store: bool = False) -> EnvironmentFault | None:
    held = (next(((s, f) for s, f in folders if s == "tracking.uri"), None) if store
            else _folder_of(path, folders))
    if code in FULL:
        held = held or (None if path else _fullest(folders))
        where = str(held[1]) if held else (path or "the disk")
        what = FULL[code]
        verb = "free space in your quota" if code == errno.EDQUOT else "free space"
        return EnvironmentFault(what, where, f"{verb} on {where} and run the same command again")
    if held is None and code != errno.EROFS:  # a permission error elsewhere: the run's own
        return None
    where = str(held[1]) if held else path or "a folder"
    return EnvironmentFault(UNWRITABLE[code], where,
                            f"make {where} writable again and run the same command again")


def classify(exc: BaseException, folders: Sequence[tuple[str, Path]] = (), device: str = "the GPU",
             gpu_advice: str = "lower trainer.jobs_per_gpu or trainer.batch_size"
             ) -> EnvironmentFault | None:
    """The fault of the environment behind `exc` (anywhere in its chain of causes), or None when
    it is a failure of the run (a NaN loss, an error in the code). A permission error counts
    only on the folders a job writes (`folders`); a read-only file system anywhere."""
    for e in _chain(exc):
        if isinstance(e, EnvironmentFault):
            return e
        if _gpu_out_of_memory(e):
            return EnvironmentFault("out of GPU memory", device,
                                    f"{gpu_advice}, and run the same command again")
        if isinstance(e, OSError) and e.errno in FULL | UNWRITABLE:
            return _disk_fault(e.errno, e.filename2 or e.filename, folders)
        text = str(e)
        for words, code in SQLITE.items():
            if words in text:
                return _disk_fault(code, None, folders, store=True)
    return None

