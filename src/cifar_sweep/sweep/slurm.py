"""SLURM, asked through its own commands: whether the cluster can run the preset's jobs at all
(before the sweep's parent run exists), and where each job of a sweep stands while the command
waits for them (squeue, which answers without accounting; sacct only where it does)."""

from __future__ import annotations

import re
import shutil
import subprocess

from omegaconf import DictConfig

from cifar_sweep.errors import UserInputError

LAUNCHER = "hydra_plugins.cifar_sweep_slurm.launcher.SlurmLauncher"
# the least a job needs before SLURM's signal: start-up (imports, data, the store) and an epoch
# of a small run; a signal sooner stops every attempt before its first checkpoint, and each
# requeue then starts the run anew
MIN_TRAIN_S = 60
# states from which SLURM will still run the job (a requeued job passes through them)
ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING",
          "COMPLETING", "SUSPENDED", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED",
          "RESV_DEL_HOLD", "SPECIAL_EXIT"}
# sbatch's words for a request the cluster cannot meet -> the settings that asked for it, the
# first that matches: "Invalid account or account/partition combination specified" is the
# account's, "Job violates accounting/QOS policy" the QOS's; whole words, so that "gres" is not
# found in "progress"
REFUSALS = [(r"generic resource|\bgres\b", "gpus_per_node, gres"),
            (r"invalid account", "account, partition"), (r"\bqos\b", "qos"),
            (r"partition", "partition"), (r"memory", "mem_gb"), (r"\baccount\b", "account"),
            (r"feature", "constraint"), (r"time limit", "timeout_min"),
            (r"cpu count", "cpus_per_task"),
            (r"node configuration", "cpus_per_task, mem_gb, gpus_per_node")]


def _as_written(value) -> str:
    """A setting's value as a user writes it on the command line (None is `null`)."""
    return "null" if value is None else str(value)


def is_slurm_sweep(config: DictConfig) -> bool:
    return str(config.hydra.launcher.get("_target_", "")) == LAUNCHER


def check_installed() -> None:
    """Refuse, in one line, a SLURM sweep on a machine without SLURM: submitit asks for `srun`
    only as it submits, after the sweep's parent run, in a traceback."""
    missing = [name for name in ("sbatch", "srun") if shutil.which(name) is None]
    if missing:
        raise UserInputError(
            f"hydra/launcher=slurm: SLURM is not installed here ({' and '.join(missing)} not on "
            f"PATH); run the sweep on the cluster's login node, or leave out hydra/launcher=slurm "
            f"to run its jobs on this machine")


def check_preset(launcher: DictConfig) -> None:
    """Refuse, in one line, a preset the cluster cannot run: a signal that leaves no time to
    train, or resources sbatch would refuse (`sbatch --test-only`: nothing is submitted)."""
    timeout_s = int(launcher.timeout_min) * 60
    delay = int(launcher.signal_delay_s)
    if timeout_s - delay < MIN_TRAIN_S:
        most = timeout_s - MIN_TRAIN_S
        allowed = (f"at most {most} s with this time limit" if most > 0
                   else f"hydra.launcher.timeout_min of at least {(delay + MIN_TRAIN_S + 59) // 60}")
        raise UserInputError(
            f"hydra.launcher.signal_delay_s={delay} with hydra.launcher.timeout_min="
            f"{launcher.timeout_min} leaves {timeout_s - delay} s before SLURM's signal, under the "
            f"{MIN_TRAIN_S} s a job needs to start and checkpoint an epoch (each attempt would "
            f"start the run anew): allowed: {allowed}")
    if shutil.which("sbatch") is None:  # submitit's own error says it, at submission
        return
    flags = sbatch_flags(launcher)
    try:
        proc = subprocess.run(["sbatch", "--test-only", *flags, "--wrap=true"],
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UserInputError(f"hydra/launcher=slurm: sbatch does not answer: {exc}") from None
    if proc.returncode == 0:
        return
    error = " ".join(line.removeprefix("sbatch: error: ").strip()
                     for line in proc.stderr.splitlines() if "error" in line) or proc.stderr.strip()
    settings = next((s for words, s in REFUSALS if re.search(words, error.lower())),
                    "partition, gpus_per_node, gres, mem_gb, cpus_per_task")
    asked = " ".join(f"hydra.launcher.{k}={_as_written(launcher.get(k))}"
                     for k in settings.split(", "))
    raise UserInputError(f"{asked}: this cluster refuses it ({error}); see `sinfo -o '%P %c %m %G'` "
                         f"for its partitions, CPUs, memory (MB) and GPUs, or set it to null")


def sbatch_flags(launcher: DictConfig) -> list[str]:
    """The resource flags of one job of the preset, as submitit writes them."""
    flags = [f"--time={int(launcher.timeout_min)}", f"--cpus-per-task={launcher.cpus_per_task}"]
    for key, flag in [("partition", "--partition"), ("gpus_per_node", "--gpus-per-node"),
                      ("gres", "--gres"), ("account", "--account"), ("qos", "--qos"),
                      ("constraint", "--constraint")]:
        if launcher.get(key) is not None:
            flags.append(f"{flag}={launcher.get(key)}")
    if launcher.get("mem_gb") is not None:
        flags.append(f"--mem={launcher.mem_gb}GB")
    return flags


def queue_states(job_ids: list[str]) -> dict[str, str] | None:
    """{array task id (`20_0`): SLURM state} of the jobs squeue still knows (it keeps ended
    ones for MinJobAge, 5 minutes by default); None where squeue does not answer."""
    if not job_ids:
        return {}
    arrays = sorted({j.split("_")[0] for j in job_ids})
    try:
        proc = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-j", ",".join(arrays),
                               "-o", "%i|%T"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:  # e.g. every job has left squeue's memory: "Invalid job id"
        return {} if "invalid job id" in proc.stderr.lower() else None
    states = {}
    for line in proc.stdout.splitlines():
        job, _, state = line.strip().partition("|")
        states[job] = state
    return states


def final_state(job_id: str) -> str:
    """How a job that left the queue ended, from sacct where accounting answers."""
    try:
        proc = subprocess.run(["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State"],
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return "ended"
    states = [s.strip() for s in proc.stdout.splitlines() if s.strip()]
    return states[-1] if proc.returncode == 0 and states else "ended"
