"""Several search commands on one Optuna study (two terminals, several nodes): the storage they
share, a heartbeat per trial, and what becomes of a trial whose command died.

Each command writes a heartbeat (a trial system attribute, the time) for every trial it has
asked and not yet told, from a thread, every `heartbeat_interval` seconds, whether the trial
trains in this process, in a worker or in a SLURM job. A RUNNING trial whose heartbeat is older
than `grace_period` belongs to a command that died (SIGKILL, a lost node): the next command to
look fails it and asks its parameters again, at most `max_retries` times per trial (its MLflow
run then continues from its checkpoint). A trial of a live command is never touched. A command
stopped cleanly (Ctrl-C, `kill`, scancel) puts its own trials back itself, without counting a
retry. Optuna's own heartbeat is not used: it is bound to `Study.optimize` (it warns on every
`ask`), and its journal storage has none.

Counting and asking happen under a lock next to the storage's file, so that commands together
ask `n_trials` and no more.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from pathlib import Path

import optuna
from filelock import FileLock
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock, JournalStorage
from optuna.trial import FrozenTrial, TrialState

from cifar_sweep.tracking.lifecycle import process_start
from cifar_sweep.tracking.store import sqlite_file

log = logging.getLogger("cifar_sweep.search.optuna_study")

HEARTBEAT = "cifar_sweep:heartbeat"  # trial system attribute: time.time() of its last heartbeat
OWNER = "cifar_sweep:owner"          # trial system attribute: "host pid start" of its command
FAILURES = "cifar_sweep:failures"    # on a retry: how many of its predecessors died
RETRY_OF = "retry_of"                # user attribute of a retry: the trial number it replaces
JOURNAL = "journal:"                 # `journal:<path>`: Optuna's journal file storage


def open_storage(url: str) -> BaseStorage:
    """`journal:<path>` (a file any number of hosts append to, under a lock that works on NFS),
    `sqlite:///<path>`, or another database URL (PostgreSQL, MySQL: as RDBStorage takes it)."""
    if url.startswith(JOURNAL):
        path = _journal_path(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        # A writer killed mid-write leaves its lock, released by the others after 30 s
        return JournalStorage(JournalFileBackend(str(path)))
    db = sqlite_file(url)
    if db is None:
        return RDBStorage(url)
    db.parent.mkdir(parents=True, exist_ok=True)
    # two commands creating the same new file would race on its tables; locked, they do not
    with FileLock(f"{db}.create.lock"):
        # a heartbeat waits for another command's write instead of failing at SQLite's 5 s
        return RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})


def _journal_path(url: str) -> Path:
    # absolute: the journal's lock is a symlink to it, which a relative target leaves dangling
    # (and Optuna's lock then spins forever on a lock left by a killed writer)
    return Path(url.removeprefix(JOURNAL)).expanduser().resolve()


def ask_lock(url: str):
    """Held while a command counts the study's trials and asks new ones."""
    if url.startswith(JOURNAL):  # a symlink lock, as the journal's own: safe on NFS
        return _SymlinkLock(f"{_journal_path(url)}.ask")
    path = sqlite_file(url)
    return FileLock(f"{path}.ask.lock") if path else contextlib.nullcontext()


class _SymlinkLock:
    def __init__(self, path: str):
        self.lock = JournalFileSymlinkLock(path)

    def __enter__(self) -> None:
        while not self.lock.acquire():
            time.sleep(0.05)

    def __exit__(self, *exc) -> None:
        self.lock.release()


class Heartbeats:
    """This command's trials in flight, kept alive in the storage by a thread."""

    def __init__(self, study: optuna.Study, interval_s: float):
        self.study, self.interval_s = study, interval_s
        self.trial_ids: set[int] = set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="trial-heartbeats", daemon=True)
        self.owner = f"{socket.gethostname()} {os.getpid()} {process_start(os.getpid())}"

    def __enter__(self) -> Heartbeats:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def add(self, trial: optuna.trial.Trial) -> None:
        storage = self.study._storage
        storage.set_trial_system_attr(trial._trial_id, OWNER, self.owner)
        storage.set_trial_system_attr(trial._trial_id, HEARTBEAT, time.time())
        with self._lock:
            self.trial_ids.add(trial._trial_id)

    def discard(self, trial: optuna.trial.Trial) -> None:
        with self._lock:
            self.trial_ids.discard(trial._trial_id)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            with self._lock:
                ids = list(self.trial_ids)
            for trial_id in ids:
                try:
                    self.study._storage.set_trial_system_attr(trial_id, HEARTBEAT, time.time())
                except UpdateFinishedTrialError:  # told, or failed by another command
                    with self._lock:
                        self.trial_ids.discard(trial_id)
                except Exception as exc:  # a busy storage: the next beat tries again
                    log.warning("heartbeat of trial id %d not written: %s", trial_id, exc)


def _last_beat(trial: FrozenTrial) -> float:
    beat = trial.system_attrs.get(HEARTBEAT)
    if beat is not None:
        return float(beat)
    # asked by a command of a version without heartbeats: its start stands for one
    return trial.datetime_start.timestamp() if trial.datetime_start else 0.0


def why_trial_dead(trial: FrozenTrial, grace_s: float, now: float) -> str | None:
    """Why this RUNNING trial's command is taken for dead, or None. On this host a gone process
    says so at once; elsewhere (or a process frozen here) the heartbeat's age."""
    host, pid, start = ((trial.system_attrs.get(OWNER) or "").split(" ") + ["", "", ""])[:3]
    if host == socket.gethostname() and pid.isdigit() and process_start(int(pid)) != start:
        return f"its command (pid {pid}) is gone"
    silent = now - _last_beat(trial)
    return f"no heartbeat for {silent:.0f} s" if silent > grace_s else None


def fail_stale(study: optuna.Study, grace_s: float, max_retries: int) -> None:
    """Fail each RUNNING trial whose command died (see why_trial_dead) and ask its parameters again,
    unless it already replaces `max_retries` trials that died."""
    now = time.time()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        why = why_trial_dead(trial, grace_s, now)
        if why is None:
            continue
        try:
            if not study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
                continue
        except UpdateFinishedTrialError:  # another command failed (or told) it first
            continue
        failures = int(trial.system_attrs.get(FAILURES, 0)) + 1
        if failures > max_retries:
            log.warning("trial %d: %s: failed; its parameters died %d times, not asked again "
                        "(hydra.sweeper.max_retries=%d)", trial.number, why, failures, max_retries)
            continue
        number = _ask_again(study, trial, failures)
        log.info("trial %d: %s: failed, asked again as trial %d (retry %d of %d)", trial.number,
                 why, number, failures, max_retries)


def requeue(study: optuna.Study, trials: list[optuna.trial.Trial]) -> None:
    """This command is stopping (Ctrl-C, `kill`): its trials in flight are failed and asked again
    by the next command, without counting a retry: they did nothing wrong."""
    for trial in trials:
        frozen = study._storage.get_trial(trial._trial_id)
        if frozen.state != TrialState.RUNNING:
            continue
        try:
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        except UpdateFinishedTrialError:
            continue
        number = _ask_again(study, frozen, int(frozen.system_attrs.get(FAILURES, 0)))
        log.info("trial %d was interrupted: the next search command asks it again (trial %d)",
                 trial.number, number)


def _ask_again(study: optuna.Study, trial: FrozenTrial, failures: int) -> int:
    # as Study.enqueue_trial writes it (fixed params, no distributions): a point enqueued outside
    # the space, then interrupted, is asked again as it was
    template = optuna.trial.create_trial(
        state=TrialState.WAITING, user_attrs={**trial.user_attrs, RETRY_OF: trial.number},
        system_attrs={"fixed_params": trial.params, FAILURES: failures})
    trial_id = study._storage.create_new_trial(study._study_id, template_trial=template)
    return study._storage.get_trial_number_from_id(trial_id)


def reseed(sampler: optuna.samplers.BaseSampler, seed: int | None, trials_so_far: int) -> None:
    """Commands on one study with the same sampler seed would ask the same points: before each
    ask, the sampler's random state is drawn from the seed and the study's number of trials
    (asked under the ask lock, so never the same twice), which one command alone repeats run
    after run. (TPESampler's and RandomSampler's state, where a sampler has one.)"""
    if seed is None:
        return
    for part in (sampler, getattr(sampler, "_random_sampler", None)):
        rng = getattr(getattr(part, "_rng", None), "rng", None)
        if rng is not None:
            rng.seed((seed * 1_000_003 + trials_so_far) % 2**32)


def trials_ended(study: optuna.Study) -> int:
    """Trials that count towards `n_trials`: complete, pruned or failed, retried ones not."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get(RETRY_OF) for t in trials}
    return sum(1 for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED,
                                                  TrialState.FAIL) and t.number not in retried)


def running(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))


def taken_over(study: optuna.Study, trial: optuna.trial.Trial) -> bool:
    """True when another command failed this trial (its heartbeat was late): its result is not
    told, and says so."""
    state = study._storage.get_trial(trial._trial_id).state
    if state == TrialState.RUNNING:
        return False
    log.warning("trial %d was failed by another search command (no heartbeat for longer than "
                "hydra.sweeper.grace_period): its result is not counted", trial.number)
    return True
