"""Which GPU a job takes: the one with the fewest live jobs on it, counted by file locks.

Each live job holds one slot lock, `<folder>/<gpu>.<k>.lock`, for as long as it runs. A lock is
an `flock` on an open file: the kernel drops it when the process exits, however it dies, so a
killed job never leaves its slot taken. To choose, a job takes the folder's `choose.lock` (so two
starting jobs never count the same free slot), counts the held slots of each GPU by trying them,
and holds the first free slot of the least loaded one. Ties go to GPU `job_num % gpus`, then the
next ones, so a fresh sweep's jobs take the GPUs in turn as before.

The folder is per user and per machine (the temp directory), so two sweeps on one machine balance
against each other too. GPUs are named by their UUID where torch reports one, so processes that
see different `CUDA_VISIBLE_DEVICES` still count the same physical GPU.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from filelock import FileLock, Timeout

_held: FileLock | None = None  # this process's slot: a worker process runs its jobs one by one


def default_folder() -> Path:
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"cifar_sweep_gpu_slots_{uid}"


def _is_held(path: Path) -> bool:
    lock = FileLock(str(path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        return True
    lock.release()
    return False


def live_jobs(folder: Path, gpu: str) -> int:
    """Slots of `gpu` held by a live process (this one's included)."""
    return sum(_is_held(p) for p in folder.glob(f"{gpu}.*.lock"))


def release() -> None:
    """Give back this process's slot (its job has ended)."""
    global _held
    if _held is not None:
        _held.release(force=True)
        _held = None


def take(gpus: list[str], job_num: int = 0, folder: Path | None = None) -> int:
    """Hold a slot on the least loaded of `gpus` (their names, in device order); its index."""
    global _held
    release()  # the previous job of this worker has ended
    folder = folder or default_folder()
    folder.mkdir(parents=True, exist_ok=True)
    n = len(gpus)
    order = [(job_num + i) % n for i in range(n)]
    with FileLock(str(folder / "choose.lock")):
        loads = {i: live_jobs(folder, gpus[i]) for i in order}
        best = min(order, key=lambda i: loads[i])  # min keeps the first of equals: the turn order
        k = 0
        while True:
            lock = FileLock(str(folder / f"{gpus[best]}.{k}.lock"), timeout=0)
            try:
                lock.acquire()
                break
            except Timeout:
                k += 1
        _held = lock
    return best
