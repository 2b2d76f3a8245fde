"""Several search commands on one Optuna storage, as on several nodes: real processes, real kills
(SIGKILL) and a real frozen process (SIGSTOP); read back from the storage and MLflow."""

import signal
import subprocess
import time

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState

from test_resume import kill_after, start

SPACE = "hydra.sweeper.space={lr.value:{type:float,low:0.01,high:0.1,log:true}}"


def search(*extra: str) -> list[str]:
    return ["-m", "hpo=modifiednet", "hydra/launcher=basic", "hydra.sweeper.study_name=test",
            "hydra.sweeper.storage=journal:hpo/study.journal", SPACE, *extra]


def trials(project):
    storage = JournalStorage(JournalFileBackend(str(project.workdir / "hpo" / "study.journal")))
    return optuna.load_study(study_name="test", storage=storage).get_trials()


def finish(proc: subprocess.Popen, timeout: int = 300) -> str:
    out, _ = proc.communicate(timeout=timeout)
    return out


def told(out: str) -> list[str]:
    return [line for line in out.splitlines() if ": best_val_accuracy " in line]


def kill_between_epochs(proc: subprocess.Popen, *needles: str) -> str:
    """SIGKILL once the needles have appeared in order, the last an epoch's line, 0.2 s later:
    not while the trial writes that epoch's value to the journal (a writer killed there leaves
    the journal's lock, which holds the next command 30 s: slower, not wrong)."""
    return kill_after(proc, *needles, delay=0.2)


@pytest.mark.slow  # in `make test-full`: the default suite stays under about 12 minutes
def test_two_commands_on_one_storage_share_the_study(project):
    """Two commands started together: each leaves the other's running trials alone, both ask
    trials until there are n_trials in all, and both end cleanly."""
    cmd = search("trainer.epochs=4", "hydra.sweeper.n_trials=4")
    first, second = start(project, *cmd), start(project, *cmd)
    out_first, out_second = finish(first), finish(second)
    for proc, out in ((first, out_first), (second, out_second)):
        assert proc.returncode == 0, out
        assert "Traceback" not in out and "was failed by another" not in out, out
    states = [t.state for t in trials(project)]
    assert states == [TrialState.COMPLETE] * 4, (out_first, out_second)
    assert told(out_first) and told(out_second)  # both trained a share
    assert len(told(out_first)) + len(told(out_second)) == 4
    # seeded alike, the commands still ask different points
    assert len({t.params["lr.value"] for t in trials(project)}) == 4
    runs = [r for r in project.runs("hpo-modifiednet") if r.data.tags.get("hpo.trial")]
    assert sorted(int(r.data.tags["hpo.trial"]) for r in runs) == [0, 1, 2, 3]
    assert all(r.info.status == "FINISHED" for r in runs)


@pytest.mark.slow  # in `make test-full`: the default suite stays under about 12 minutes
def test_a_trial_killed_repeatedly_ends_failed_after_the_retry_limit(project):
    """max_retries=1: the trial's command SIGKILLed, the next command asks it again (its MLflow
    run continues), killed again; the third command fails it for good and trains nothing."""
    cmd = search("trainer.epochs=20", "hydra.sweeper.n_trials=1", "hydra.sweeper.max_retries=1")
    kill_between_epochs(start(project, *cmd), "epoch 1/20")
    kill_between_epochs(start(project, *cmd), "asked again as trial 1 (retry 1 of 1)",
                        "continuing from epoch 2", "epoch 2/20")
    proc = project.train(*cmd, check=True)
    out = proc.stdout + proc.stderr
    assert "trial 1: its command (pid" in out and "died 2 times, not asked again" in out, out
    assert "epoch " not in out and "Traceback" not in out
    assert [t.state for t in trials(project)] == [TrialState.FAIL, TrialState.FAIL]
    assert trials(project)[1].user_attrs["retry_of"] == 0
    # one MLflow run for the trial's config, continued by the retry, closed once its owner died
    [run] = [r for r in project.runs("hpo-modifiednet") if r.data.tags.get("hpo.trial")]
    assert run.info.status == "KILLED" and run.data.tags["hpo.trial"] == "1"


@pytest.mark.slow  # a frozen process and a 4 s grace period: 22-38 s here, up to a minute under load
def test_a_frozen_command_loses_its_trial_to_a_live_one(project):
    """A command frozen mid-trial (SIGSTOP: alive, silent, as a hung node) stops writing its
    heartbeat: another command fails its trial after the grace period and trains it again;
    woken, the frozen one says its trial was taken over and ends cleanly."""
    cmd = search("trainer.epochs=3", "hydra.sweeper.n_trials=2",
                 "hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.grace_period=4")
    frozen = start(project, *cmd)
    for line in frozen.stdout:
        if "epoch 1/3" in line:
            frozen.send_signal(signal.SIGSTOP)
            break
    try:
        started = time.time()
        proc = project.train(*cmd, check=True)
    finally:
        frozen.send_signal(signal.SIGCONT)
    out = proc.stdout + proc.stderr
    assert "trial 0: no heartbeat for" in out and "asked again as trial 1" in out, out
    assert time.time() - started > 4
    woken = finish(frozen)
    assert frozen.returncode == 0, woken
    assert "trial 0 was failed by another search command" in woken and "Traceback" not in woken
    states = [t.state for t in trials(project)]
    assert states[0] == TrialState.FAIL and states[1:] == [TrialState.COMPLETE] * 2


@pytest.mark.parametrize("override, said", [
    ("hydra.sweeper.max_retries=-1", "hydra.sweeper.max_retries=-1 is invalid: allowed: an integer >= 0"),
    pytest.param("hydra.sweeper.grace_period=30", "hydra.sweeper.grace_period=30 is invalid: allowed: an integer > "
                 "hydra.sweeper.heartbeat_interval (60)", marks=pytest.mark.slow),
    ("hydra.sweeper.heartbeat_interval=0", "hydra.sweeper.heartbeat_interval=0 is invalid"),
])
def test_bad_worker_settings_are_one_line_before_any_run(project, override, said):
    proc = project.train("-m", "hpo=modifiednet", "hydra.sweeper.study_name=test", override)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    [line] = [x for x in out.splitlines() if x.startswith("error:")]
    assert said in line and "Traceback" not in out
    assert project.runs("hpo-modifiednet") == []


@pytest.mark.slow  # over a minute on the 2-core CPU: make test-full (a default test covers its core)
def test_a_stopped_command_puts_its_trial_back_without_counting_a_retry(project):
    """`kill` (SIGTERM) mid-trial: the command fails its own trial and asks its parameters again
    for the next command at once, not counted against max_retries (it did nothing wrong)."""
    proc = start(project, *search("trainer.epochs=20", "hydra.sweeper.n_trials=1",
                                  "hydra.sweeper.max_retries=0"))
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "epoch 1/20" in line:
            proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    out = "".join(seen)
    assert "trial 0 was interrupted: the next search command asks it again (trial 1)" in out, out
    [first, again] = trials(project)
    assert first.state == TrialState.FAIL and again.state == TrialState.WAITING
    assert again.user_attrs["retry_of"] == 0
    assert again.system_attrs["fixed_params"] == first.params  # as enqueue_trial leaves a point
    [run] = [r for r in project.runs("hpo-modifiednet") if r.data.tags.get("hpo.trial")]
    assert run.info.status == "KILLED"  # to be continued by the trial asked again
