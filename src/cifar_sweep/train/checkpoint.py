"""Per-epoch checkpoints: `<checkpoint.dir>/<config_hash>/<run_id>.pt`, written atomically.

A checkpoint holds plain tensors, numbers, strings, lists and dicts only, so it loads with
`torch.load(weights_only=True)`: opening one never runs code.
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import torch

log = logging.getLogger(__name__)


def path_for(folder: str, config_hash: str, run_id: str) -> Path:
    return Path(folder).expanduser() / config_hash / f"{run_id}.pt"


def save(path: Path, state: dict) -> None:
    """Temporary file, then rename: a kill while writing leaves the previous checkpoint whole,
    and so does a full disk (the temporary file is removed, the error goes on)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    write_file(tmp, state)
    os.replace(tmp, path)


def write_file(path: Path, obj) -> None:
    """`torch.save` through Python's file calls: a full disk is an OSError with its errno and
    path (torch's own writer says only "file write failed"). A failed write leaves no file."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    try:
        with open(path, "wb") as f:
            f.write(buffer.getbuffer())
    except OSError as exc:
        path.unlink(missing_ok=True)
        if exc.filename is None:  # write() and close() do not name the file
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise


def load(path: Path) -> dict | None:
    """The checkpoint, or None (with a warning) when it cannot be read: the run then starts over."""
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # a truncated or foreign file: unpickling errors come in many types
        log.warning("checkpoint %s is unreadable (%s: %s); starting the run over",
                    path, type(exc).__name__, exc)
        return None


def remove(path: Path) -> None:
    path.unlink(missing_ok=True)
    try:
        path.parent.rmdir()  # the hash's folder, once no run of it is left
    except OSError:
        pass


def claim(path: Path):
    """A held lock on this checkpoint (released when the process ends, however it ends), or None
    when another job holds it: one job continues a run, never two."""
    from filelock import FileLock, Timeout

    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path) + ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return None
    return _Held(lock)


class _Held:
    def __init__(self, lock):
        self.lock = lock

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.lock.release()
        path = Path(self.lock.lock_file)
        path.unlink(missing_ok=True)
        try:
            path.parent.rmdir()  # the hash's folder, once the run finished and nothing is left
        except OSError:
            pass
