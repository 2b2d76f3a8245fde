"""How a job ends: every way it can stop, recognised once from what stopped it, and what follows
from each (the table below): the run's MLflow status, whether its checkpoint is kept, what the
sweep is told, the exit status of a job run alone (src/train.py exits with it) and the line the
user is told. `WAYS` is that table (a `Way` per row), `Ended` how one job ended (its row and
what stopped it), and `EndingClassifier` recognises it from the exception. The run is closed by
`tracking.runs.tracked_run`, which asks `EndingClassifier.of`; `job.steps._ended` acts on the
rest of the row. docs/faults.md says the same to users."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cifar_sweep import faults
from cifar_sweep.errors import NonFiniteLossError, Pruned, UserInputError, Yielded
from cifar_sweep.tracking import store
from cifar_sweep.tracking.tags import INTERRUPTED, TRIAL_STATE

# what becomes of a run's checkpoint
KEPT = "kept"                # the same command continues the run from it
REMOVED = "removed"          # nothing to continue: a finished search trial, a failed run
AS_CONFIGURED = "checkpoint.keep"  # a finished run's: kept only where checkpoint.keep=true

# a job alone: its exception goes on (a traceback for an error in the code, exit 1; a signal's
# SystemExit keeps its own status, 128 + the signal's number)
RAISED = None


# the line a way of ending tells the user, from how the job ended, its run (None: none was made)
# and that run's checkpoint file
Line = Callable[["Ended", str | None, Path | None], str]


@dataclass(frozen=True)
class Way:
    """One row of the table. `left` and `raised` are words for docs/faults.md's table alone:
    tests/test_endings.py holds that table equal to these rows."""

    status: str | None  # the run's MLflow status; None: left as it is (see `left`)
    checkpoint: str     # KEPT, REMOVED or AS_CONFIGURED
    sweep: str          # what the sweeper is told: JobResult.state
    exit_code: int | None  # a job alone: the command's exit status; RAISED: its exception goes on
    stops_sweep: bool = False  # the sweep's later jobs are not started: they would end the same way
    left: str = ""      # where status is None: what becomes of the run
    raised: str = ""    # where exit_code is RAISED: the status the exception ends the command with
    # what the user is told: a line on stderr after "error: " (`logged`: a log line, as the job's
    # others); none: nothing (an error in the code: its traceback). In a sweep a FAILED run's line
    # is the sweep's "run <id> failed: <reason>" instead (job.steps._ended)
    line: Line | None = None
    logged: bool = False


def _kept(run_id: str | None, path: Path | None) -> str:
    """What the environment's stop leaves to continue."""
    if run_id is None:
        return "no run was created"
    if path is not None and path.is_file():
        return f"run {run_id} stopped, its checkpoint kept"
    # KILLED; (RUNNING until the next start closes it, when the store cannot be written)
    return f"run {run_id} stopped (it had no checkpoint yet: it starts over)"


FINISHED, ELSEWHERE, PRUNED, NAN, CODE_ERROR = "finished", "elsewhere", "pruned", "nan", "code error"
BAD_VALUE, ENVIRONMENT, TIME_LIMIT, SIGNAL, LOST_SERVER = (
    "bad value", "environment", "time limit", "signal", "lost server")

WAYS: dict[str, Way] = {
    # trained, tested and logged
    FINISHED: Way("FINISHED", AS_CONFIGURED, "finished", 0),
    # another command trains this config (or has, since it was decided): it stands aside (its
    # line and what it does: job.steps._ended, from the job's state)
    ELSEWHERE: Way(None, KEPT, "finished", 0,
                   left="a reference to the other run in a sweep; deleted alone (no ghost)"),
    # a search's pruner stopped it: not a failure, and nothing to continue
    PRUNED: Way("KILLED", REMOVED, "pruned", 0,
                line=lambda ended, run_id, _: f"run {run_id}: {ended.exc}", logged=True),
    # the training loss became NaN or infinite
    NAN: Way("FAILED", REMOVED, "failed", 1,
             line=lambda ended, run_id, _: f"run {run_id} failed: {ended.reason}"),
    # an error in the code (the package's or a user's model): alone, its traceback
    CODE_ERROR: Way("FAILED", REMOVED, "failed", RAISED, raised="1, after its traceback"),
    # a bad value: one line. Found before the run is created (nearly always): no run; found in a
    # run, the same line names the run it ended
    BAD_VALUE: Way("FAILED", REMOVED, "failed", 2, line=lambda ended, run_id, _: (
        f"{ended.exc} (run {run_id}: FAILED)" if run_id else str(ended.exc))),
    # a full disk, a read-only folder, GPU memory: fix the machine, run the same command again
    ENVIRONMENT: Way("KILLED", KEPT, "stopped", faults.EXIT_STOPPED, stops_sweep=True,
                     line=lambda ended, run_id, path: (
                         f"stopped by the environment: {ended.fault}; {_kept(run_id, path)}; "
                         f"{ended.fault.advice if ended.fault else ''}")),
    # SLURM's time limit with no requeue left (submitit's UncompletedJobError): continued later
    TIME_LIMIT: Way("KILLED", KEPT, "failed", 1,
                    line=lambda ended, run_id, _: f"run {run_id} stopped: {ended.exc}"),
    # Ctrl-C, `kill`, scancel, a preemption: continued later (the process ends: no sweeper is
    # told; with the basic launcher the sweep is that process, and ends with it)
    SIGNAL: Way("KILLED", KEPT, "-", RAISED, raised="128 + the signal's number (SIGTERM: 143)"),
    # the tracking server stopped answering: nothing can be written
    LOST_SERVER: Way(None, KEPT, "stopped", 1, stops_sweep=True,
                     left="RUNNING: the next start on this host closes it KILLED (its process is gone)",
                     line=lambda ended, run_id, _: store.lost_server_line(
                         ended.uri, ended.problem,
                         "the run's checkpoint is kept" if run_id else "no run was created")),
}


def out_of_time(exc: BaseException) -> bool:
    """submitit's UncompletedJobError: its SIGUSR2 handler stopped a job at its time limit with
    no requeue left (hydra.launcher.max_num_timeout). (Matched by name: submitit is only there
    on a cluster.)"""
    return type(exc).__name__ == "UncompletedJobError"


@dataclass
class Ended:
    """How one job ended: its row, what stopped it, and the words for the run and the user."""

    way: str
    exc: BaseException
    reason: str = ""  # the run's failure_reason tag
    fault: faults.EnvironmentFault | None = None  # ENVIRONMENT, LOST_SERVER: the sweep's stop record
    problem: str = ""  # LOST_SERVER: why the server does not answer
    uri: str = ""  # LOST_SERVER: the server that does not answer
    epochs: int = 0  # PRUNED: the epochs it trained, as the sweeper is told
    tags: dict[str, str] = field(default_factory=dict)  # set on the run as it is closed

    @property
    def row(self) -> Way:
        return WAYS[self.way]

    @property
    def status(self) -> str | None:
        return self.row.status


class EndingClassifier:
    """The one classifier of a job's exceptions, bound to what the job writes and where it runs;
    it remembers its answers, so that an exception is recognised once however many places see it
    (tracked_run closing the run, then the job's last step)."""

    def __init__(self, uri: str, folders: Sequence[tuple[str, Path]] = (),
                 device: str = "the GPU",
                 gpu_advice: str = "lower trainer.jobs_per_gpu or trainer.batch_size"):
        self.uri, self.folders, self.device, self.gpu_advice = uri, folders, device, gpu_advice
        self._seen: dict[int, Ended] = {}

    def forget(self, exc: BaseException) -> None:
        """Drop what was said of `exc` once it is acted on: its traceback holds the job's frames
        (its model, its optimizer, GPU tensors), which a process running several jobs frees."""
        self._seen.pop(id(exc), None)

    def of(self, exc: BaseException) -> Ended:
        known = self._seen.get(id(exc))
        if known is not None and known.exc is exc:
            return known
        ended = self._classify(exc)
        self._seen[id(exc)] = ended
        return ended

    def _classify(self, exc: BaseException) -> Ended:
        if isinstance(exc, Yielded):
            return Ended(ELSEWHERE, exc)
        if isinstance(exc, Pruned):
            return Ended(PRUNED, exc, str(exc), tags={TRIAL_STATE: "pruned"}, epochs=exc.epoch)
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            return Ended(SIGNAL, exc, INTERRUPTED)
        if isinstance(exc, UserInputError):
            return Ended(BAD_VALUE, exc, f"{type(exc).__name__}: {exc}"[:5000])
        if out_of_time(exc):
            return Ended(TIME_LIMIT, exc, f"{INTERRUPTED}: {exc}"[:5000])
        problem = store.lost_server_problem(self.uri, exc)
        if problem is not None:
            return Ended(LOST_SERVER, exc, fault=faults.lost_server_fault(self.uri), problem=problem,
                         uri=self.uri)
        fault = faults.classify(exc, self.folders, self.device, self.gpu_advice)
        if fault is not None:
            return Ended(ENVIRONMENT, exc, f"{INTERRUPTED}: {fault}"[:5000], fault=fault)
        reason = f"{type(exc).__name__}: {exc}"
        return Ended(NAN if isinstance(exc, NonFiniteLossError) else CODE_ERROR, exc,
                     reason[:5000])
