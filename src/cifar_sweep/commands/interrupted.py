"""Ctrl-C (SIGINT) or `kill` (SIGTERM) of `src/train.py`: the runs are closed KILLED where they
stand (tracking/runs.py; a sweep's by its callback), and the command ends with two lines, what
was interrupted and the command that continues it, and exit 128 + the signal's number, instead
of Python's traceback of the frame the signal happened to stop.

Why a handler for both: Python turns SIGINT into KeyboardInterrupt and leaves SIGTERM deadly;
both become an exception here, so that every `finally` and `tracked_run` closes what it opened.
The parallel launcher's workers (joblib's loky processes) get the terminal's SIGINT too and
close their own runs; a worker killed first has its run closed KILLED by the sweep's callback.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
from types import FrameType

# the signal that stopped this process, once one did
received: list[int] = []


def _raise(signum: int, frame: FrameType | None) -> None:
    received.append(signum)
    if len(received) == 2:  # a second Ctrl-C while the runs are being closed: let it finish
        return
    if len(received) > 2:  # a third: the closing hangs (a store that does not answer); the
        os._exit(128 + signum)  # next start closes what is left RUNNING (its process is gone)
    _exception(signum)


def _exception(signum: int) -> None:
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    sys.exit(128 + signum)


def raise_if_lost() -> None:
    """Raise the first signal's exception again where the handler's was lost. Python runs a
    handler wherever the main thread is: inside a weakref callback, a `__del__` or the garbage
    collector, its exception is printed as "Exception ignored" and dropped, and the job trains on
    (seen: SIGTERM after epoch 1, training on to epoch 187, a test's 60 s wait running out). Once a
    signal has come, nothing draws a training batch any more; so the job calls this at every batch
    (its JobContext's `interrupted`, job/batch_progress.py) and after the job."""
    if received:
        _exception(received[0])


def install() -> None:
    """SIGINT and SIGTERM become an exception in the main thread (KeyboardInterrupt, SystemExit);
    a worker process of the parallel launcher keeps its own handlers."""
    signal.signal(signal.SIGINT, _raise)
    signal.signal(signal.SIGTERM, _raise)
    quiet_resource_tracker()


def lines(argv: list[str], script: str = "src/train.py") -> list[str]:
    """What was interrupted (the sweep, with its jobs; else the run) and the command that
    continues it: the same command."""
    from cifar_sweep.job.steps import INTERRUPTED
    from cifar_sweep.sweep.callback import MlflowSweepCallback

    name = signal.Signals(received[0]).name if received else "a signal"  # the first one
    sweep = MlflowSweepCallback.running
    if sweep is not None:
        what = sweep.interrupted()
    elif INTERRUPTED:
        kept = ("its checkpoint kept" if INTERRUPTED["checkpoint"]
                else "no checkpoint yet: it starts over")
        what = f"run {INTERRUPTED['run_id']} ({INTERRUPTED['name']}) stopped KILLED, {kept}"
    else:
        what = "before any run was made"
    command = shlex.join(["python", script, *argv])
    return [f"interrupted ({name}): {what}", f"continue with the same command: {command}"]


def exit_status() -> int:
    return 128 + (received[0] if received else signal.SIGINT)


def quiet_resource_tracker() -> None:
    """The parallel launcher's workers die with an interrupted sweep, and the resource tracker
    (a process of its own, started with this environment) then warns of the semaphores they
    left, which it frees: nothing a user can act on. `-W`'s message is a literal prefix."""
    quiet = "ignore:resource_tracker:UserWarning"
    current = os.environ.get("PYTHONWARNINGS", "")
    if quiet not in current:
        os.environ["PYTHONWARNINGS"] = f"{current},{quiet}" if current else quiet
