"""cifar_sweep.sweep.slurm on its own: the preset check (the signal delay against the time limit,
`sbatch --test-only`'s refusals turned into one line naming the settings), the resource flags it
asks sbatch about, and the reading of squeue's and sacct's answers.

SLURM's commands here are small real executables in a tmp folder that is the whole PATH (the real
sbatch/squeue/sacct of this machine are never reached): each prints canned output, exits with a
canned status and writes the arguments it got to `<name>.args` beside itself."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

from cifar_sweep.errors import UserInputError
from cifar_sweep.sweep import slurm
from conftest import ROOT

PRESET = ROOT / "conf" / "hydra" / "launcher" / "slurm.yaml"


def preset(**changes) -> DictConfig:
    """The shipped SLURM preset (conf/hydra/launcher/slurm.yaml, its own keys; the plugin's schema
    under `defaults` is not needed by the checks), with `changes` applied."""
    cfg = OmegaConf.load(PRESET)
    cfg.pop("defaults")
    return OmegaConf.merge(cfg, changes)


@pytest.fixture
def bin_dir(tmp_path: Path, monkeypatch) -> Path:
    """An empty folder that is the whole PATH: only the commands a test writes there exist."""
    folder = tmp_path / "bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", str(folder))
    return folder


def command(folder: Path, name: str, stdout: str = "", stderr: str = "", rc: int = 0) -> Path:
    """A real executable `name`: shell builtins only, since PATH holds nothing else."""
    script = folder / name
    script.write_text("#!/bin/sh\n"
                      f"printf '%s\\n' \"$@\" > {shlex.quote(str(folder / (name + '.args')))}\n"
                      f"printf '%s' {shlex.quote(stdout)}\n"
                      f"printf '%s' {shlex.quote(stderr)} >&2\n"
                      f"exit {rc}\n")
    script.chmod(0o755)
    return script


def args_of(folder: Path, name: str) -> list[str] | None:
    """The arguments the command got, or None where it was never run."""
    path = folder / f"{name}.args"
    return path.read_text().splitlines() if path.exists() else None


def refusal(launcher: DictConfig) -> str:
    with pytest.raises(UserInputError) as caught:
        slurm.check_preset(launcher)
    message = str(caught.value)
    assert "\n" not in message  # the user sees one line
    return message


# --- which sweeps are SLURM's ------------------------------------------------------------------

def test_a_sweep_is_slurms_only_with_the_plugins_launcher_target():
    def config(target):
        launcher = {} if target is None else {"_target_": target}
        return OmegaConf.create({"hydra": {"launcher": launcher}})

    assert slurm.is_slurm_sweep(config(str(preset()._target_)))
    # submitit's own SLURM launcher lacks our SIGTERM handling and lost-job reports
    assert not slurm.is_slurm_sweep(config(
        "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"))
    assert not slurm.is_slurm_sweep(config(None))  # a launcher config without a target


# --- the signal delay against the time limit ---------------------------------------------------

def test_a_delay_leaving_exactly_the_minimum_passes_and_then_asks_sbatch(bin_dir):
    command(bin_dir, "sbatch")
    launcher = preset(timeout_min=3, signal_delay_s=180 - slurm.MIN_TRAIN_S)
    slurm.check_preset(launcher)  # 60 s left: enough, so no error
    # the check went on to sbatch --test-only, nothing submitted
    assert args_of(bin_dir, "sbatch") == ["--test-only", "--time=3", "--cpus-per-task=4",
                                          "--gpus-per-node=1", "--mem=16GB", "--wrap=true"]


def test_a_delay_one_second_too_long_says_the_longest_allowed_and_asks_no_sbatch(bin_dir):
    command(bin_dir, "sbatch")
    message = refusal(preset(timeout_min=3, signal_delay_s=121))
    assert message.startswith("hydra.launcher.signal_delay_s=121 with hydra.launcher.timeout_min=3 "
                              "leaves 59 s before SLURM's signal, under the 60 s"), message
    # 3 min less the 60 s a job needs: a delay the user can set with this limit
    assert message.endswith("allowed: at most 120 s with this time limit"), message
    assert args_of(bin_dir, "sbatch") is None  # refused before the cluster is asked


@pytest.mark.parametrize("timeout_min, delay, least", [
    (1, 120, 3),  # 120 + 60 = 180 s: exactly 3 minutes
    (1, 121, 4),  # 181 s rounds up to 4 minutes, not down to 3
    (1, 60, 2),   # 0 s left: no delay fits a minute, so the limit must grow
    (0, 0, 1),    # a zero limit: the job's own minute is the least
])
def test_a_limit_too_short_for_any_delay_says_the_least_time_limit_rounded_up(
        bin_dir, timeout_min, delay, least):
    message = refusal(preset(timeout_min=timeout_min, signal_delay_s=delay))
    assert message.endswith(f"allowed: hydra.launcher.timeout_min of at least {least}"), message
    # the least limit it names is one the check itself accepts
    slurm.check_preset(preset(timeout_min=least, signal_delay_s=delay))


def test_the_shipped_preset_leaves_time_to_train_and_skips_sbatch_where_there_is_none(bin_dir):
    # no sbatch on PATH: check_installed (before this check) says so
    assert slurm.check_preset(preset()) is None


# --- what sbatch --test-only is asked, and its refusals ----------------------------------------

def test_the_flags_name_only_the_resources_that_are_set():
    assert slurm.sbatch_flags(preset()) == [
        "--time=60", "--cpus-per-task=4", "--gpus-per-node=1", "--mem=16GB"]
    # a cluster that wants --gres instead, with its partition, account, qos and GPU model; the
    # limit in whole minutes, as sbatch --time takes it
    flags = slurm.sbatch_flags(preset(gpus_per_node=None, gres="gpu:a100:2", partition="gpu",
                                      account="lab", qos="high", constraint="a100", mem_gb=None,
                                      timeout_min=90.0))
    assert flags == ["--time=90", "--cpus-per-task=4", "--partition=gpu", "--gres=gpu:a100:2",
                     "--account=lab", "--qos=high", "--constraint=a100"]


def test_the_flags_are_those_submitit_writes_into_the_job_script(tmp_path):
    """The check must ask sbatch about the very job the launcher submits: every flag appears as an
    #SBATCH line of submitit's script for the same preset (its parameters named as the plugin
    passes them: the shared queue keys plain, the others slurm_-prefixed)."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from submitit.slurm.test_slurm import mocked_slurm

    launcher = preset(partition="gpu", gres="gpu:1", account="lab", qos="high", constraint="a100")
    keys = ["timeout_min", "cpus_per_task", "gpus_per_node", "mem_gb", "partition", "gres",
            "account", "qos", "constraint"]
    shared = set(OmegaConf.structured(BaseQueueConf).keys())
    with mocked_slurm():
        executor = submitit.AutoExecutor(folder=tmp_path, cluster="slurm")
        executor.update_parameters(**{k if k in shared else f"slurm_{k}": launcher[k] for k in keys})
        script = executor._executor._make_submission_file_text("true", "uid")
    lines = set(script.splitlines())
    flags = slurm.sbatch_flags(launcher)
    assert len(flags) == len(keys)  # every setting given is asked about
    missing = [f for f in flags if f"#SBATCH {f}" not in lines]
    assert not missing, script


@pytest.mark.parametrize("changes, stderr, named", [
    ({}, "sbatch: error: Batch job submission failed: Invalid generic resource (gres) specification",
     "hydra.launcher.gpus_per_node=1 hydra.launcher.gres=null"),
    ({"partition": "nowhere"},
     "sbatch: error: invalid partition specified: nowhere\n"
     "sbatch: error: Batch job submission failed: Invalid partition name specified",
     "hydra.launcher.partition=nowhere"),
    # SLURM adds "node configuration" after the memory line: the memory is what to change; its
    # warnings are not part of the refusal
    ({"mem_gb": 100000},
     "sbatch: warning: can't honor --ntasks-per-node set to 1\n"
     "sbatch: error: Memory specification can not be satisfied\n"
     "sbatch: error: Batch job submission failed: Requested node configuration is not available",
     "hydra.launcher.mem_gb=100000"),
    ({"cpus_per_task": 64},
     "sbatch: error: CPU count per node can not be satisfied\n"
     "sbatch: error: Batch job submission failed: Requested node configuration is not available",
     "hydra.launcher.cpus_per_task=64"),
    ({}, "sbatch: error: Batch job submission failed: Requested node configuration is not available",
     "hydra.launcher.cpus_per_task=4 hydra.launcher.mem_gb=16 hydra.launcher.gpus_per_node=1"),
    ({"qos": "gold"}, "sbatch: error: Batch job submission failed: Invalid qos specification",
     "hydra.launcher.qos=gold"),
    ({"constraint": "h100"}, "sbatch: error: Batch job submission failed: Invalid feature specification",
     "hydra.launcher.constraint=h100"),
    ({"timeout_min": 10000}, "sbatch: error: Batch job submission failed: Requested time limit is "
     "invalid (missing or exceeds some limit)", "hydra.launcher.timeout_min=10000"),
    # words the table does not know: every setting that may be the cause
    ({}, "sbatch: error: Batch job submission failed: Unexpected message received",
     "hydra.launcher.partition=null hydra.launcher.gpus_per_node=1 hydra.launcher.gres=null "
     "hydra.launcher.mem_gb=16 hydra.launcher.cpus_per_task=4"),
    # SLURM's own words for a bad account name the partition too: the account is what to change
    ({"account": "nobody"}, "sbatch: error: Batch job submission failed: Invalid account or "
     "account/partition combination specified",
     "hydra.launcher.account=nobody hydra.launcher.partition=null"),
    # "accounting/QOS policy" is a QOS limit, not the account
    ({"qos": "gold"}, "sbatch: error: QOSMaxSubmitJobPerUserLimit\n"
     "sbatch: error: Batch job submission failed: Job violates accounting/QOS policy (job "
     "submit limit, user's size and/or time limits)", "hydra.launcher.qos=gold"),
], ids=["gres", "partition", "memory", "cpus", "node", "qos", "feature", "time", "unknown",
        "account", "qos-policy"])
def test_a_refusal_names_the_settings_that_asked_for_it_with_sbatchs_words(
        bin_dir, changes, stderr, named):
    command(bin_dir, "sbatch", stderr=stderr, rc=1)
    message = refusal(preset(**changes))
    # sbatch's error lines, joined, without their "sbatch: error: " prefix
    words = " ".join(line.removeprefix("sbatch: error: ") for line in stderr.splitlines()
                     if "warning" not in line)
    assert message.startswith(f"{named}: this cluster refuses it ({words}); see `sinfo"), message
    assert message.endswith("or set it to null"), message


def test_a_refusal_without_error_lines_quotes_all_sbatch_said(bin_dir):
    command(bin_dir, "sbatch", stderr="  sbatch: Unable to contact slurm controller  \n", rc=1)
    message = refusal(preset())
    assert "this cluster refuses it (sbatch: Unable to contact slurm controller); see" in message


def test_an_sbatch_that_cannot_start_is_one_line_saying_it_does_not_answer(bin_dir):
    script = bin_dir / "sbatch"
    script.write_text("#!/nonexistent/interpreter\n")  # found on PATH, but exec fails
    script.chmod(0o755)
    message = refusal(preset())
    assert message.startswith("hydra/launcher=slurm: sbatch does not answer: "), message


# --- squeue: where each job of the sweep stands -------------------------------------------------

def test_queue_states_reads_each_array_tasks_state(bin_dir):
    command(bin_dir, "squeue", stdout="20_0|RUNNING\n 20_1|PENDING \n21_3|COMPLETED\n")
    states = slurm.queue_states(["21_3", "20_1", "20_0", "20_1"])
    assert states == {"20_0": "RUNNING", "20_1": "PENDING", "21_3": "COMPLETED"}
    # one squeue for the arrays, each named once, tasks expanded (-r), ended ones too (-t all)
    assert args_of(bin_dir, "squeue") == ["-h", "-r", "-t", "all", "-j", "20,21", "-o", "%i|%T"]


def test_queue_states_of_no_jobs_asks_no_squeue(bin_dir):
    command(bin_dir, "squeue", stdout="20_0|RUNNING\n")
    assert slurm.queue_states([]) == {}
    assert args_of(bin_dir, "squeue") is None


def test_jobs_squeue_has_forgotten_are_an_empty_answer_not_a_failure(bin_dir):
    command(bin_dir, "squeue", stderr="slurm_load_jobs error: Invalid job id specified\n", rc=1)
    assert slurm.queue_states(["20_0"]) == {}


def test_an_squeue_that_fails_otherwise_or_is_missing_is_no_answer(bin_dir):
    assert slurm.queue_states(["20_0"]) is None  # not on PATH
    command(bin_dir, "squeue", stdout="20_0|RUNNING\n",
            stderr="squeue: error: Unable to contact slurm controller (connect failure)\n", rc=1)
    assert slurm.queue_states(["20_0"]) is None  # its stdout is not trusted when it failed


# --- sacct: how a job that left the queue ended -------------------------------------------------

def test_final_state_is_saccts_last_state_of_the_job(bin_dir):
    # a requeued job has a line per attempt: the last one is how it ended
    command(bin_dir, "sacct", stdout="REQUEUED\nPREEMPTED\n  TIMEOUT  \n  \n")
    assert slurm.final_state("20_1") == "TIMEOUT"
    assert args_of(bin_dir, "sacct") == ["-n", "-X", "-P", "-j", "20_1", "-o", "State"]


@pytest.mark.parametrize("stdout, rc", [
    ("", 0),                                     # accounting has no record of it
    ("COMPLETED\n", 1),                          # sacct failed: its output is not trusted
])
def test_final_state_without_a_usable_answer_is_ended(bin_dir, stdout, rc):
    command(bin_dir, "sacct", stdout=stdout, stderr="sacct: error: Slurm accounting storage is disabled",
            rc=rc)
    assert slurm.final_state("20_1") == "ended"


def test_final_state_without_sacct_is_ended(bin_dir):
    assert slurm.final_state("20_1") == "ended"
