"""Where and how a job computes, decided once at its start: device, precision, memory format,
threads, jobs side by side, augmentation chunk size. Everything below takes the `Runtime`."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from cifar_sweep.errors import UserInputError
from cifar_sweep.train import gpu_slots


def _omp_threads() -> int:
    """OMP_NUM_THREADS's threads for this level: `4` and `4,2` (a value per nesting level, as
    OpenMP allows) are 4; unset or not a number, 0 (decide from the cores)."""
    first = os.environ.get("OMP_NUM_THREADS", "").split(",", 1)[0].strip()
    return int(first) if first.isdigit() else 0


def concurrent_jobs(device: str = "auto", jobs_per_gpu: int = 1) -> int:
    """Sweep jobs to run at once (the `parallel` launcher's n_jobs), for the sweep's
    `trainer.device`. On a CPU, small models scale poorly over threads, so one thread per job and
    one job per core is faster (docs/speed.md, "Sweeps on a CPU run side by side"); that holds
    for a CPU sweep on a GPU host too. On GPUs, `trainer.jobs_per_gpu` side by side on each: a
    tiny model leaves a GPU mostly idle; `cuda:N` names one GPU, so that many in all. Asking CUDA
    how many GPUs there are opens no CUDA context."""
    device = str(device)
    on_gpu = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if not on_gpu:
        return max(1, os.cpu_count() or 1)
    gpus = 1 if device.startswith("cuda:") else max(1, torch.cuda.device_count())
    return max(1, int(jobs_per_gpu)) * gpus


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserInputError(f"trainer.device={name} is invalid: CUDA is not available here "
                             f"(allowed: auto, cpu)")
    if name.startswith("cuda:") and int(name[5:]) >= torch.cuda.device_count():
        raise UserInputError(f"trainer.device={name} is invalid: this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s), cuda:0 to "
                             f"cuda:{torch.cuda.device_count() - 1}")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserInputError("trainer.device=mps is invalid: MPS is not available here "
                             "(allowed: auto, cpu)")
    return torch.device(name)


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto`: bf16 on a GPU that computes it natively, else fp32 (emulated bf16, on pre-Ampere
    GPUs, is slower than fp32)."""
    if precision != "auto":
        return precision
    native = device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False)
    return "bf16" if native else "fp32"  # fp16 (with its scaler) is asked for by name


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    precision: str        # resolved: fp32, bf16 autocast, or fp16 autocast with a gradient scaler
    channels_last: bool   # the model and its inputs in NHWC (faster convolutions on a GPU)
    nhwc_train: bool      # training batches in NHWC (the model may stay NCHW)
    nhwc_eval: bool       # evaluation batches in NHWC
    threads: int          # torch's intra-op threads
    chunk_images: int     # images augmented per batched call

    def autocast(self):
        if self.precision in AUTOCAST:
            return torch.autocast(device_type=self.device.type, dtype=AUTOCAST[self.precision])
        return contextlib.nullcontext()

    def grad_scaler(self) -> torch.amp.GradScaler:
        """fp16 gradients underflow without loss scaling; a disabled scaler is a plain step."""
        return torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")


AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _gpu_name(index: int) -> str:
    uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
    return f"GPU-{uuid}" if uuid else f"cuda{index}"


def choose_gpu(name: str, job_num: int) -> torch.device:
    """`cuda:N` as named; `cuda` (or `auto`) on several GPUs: the least loaded one by live jobs
    (gpu_slots.py), ties taken in turn by job number. Then made the current device, so that
    kernels, cuDNN handles and the caching allocator of this job all live on it."""
    if name.startswith("cuda:"):
        device = torch.device(name)
    elif torch.cuda.device_count() > 1:
        gpus = [_gpu_name(i) for i in range(torch.cuda.device_count())]
        device = torch.device(f"cuda:{gpu_slots.take(gpus, job_num)}")
    else:
        device = torch.device("cuda:0")
    torch.cuda.set_device(device)
    return device


def resolve(trainer: DictConfig, concurrent: int = 1, job_num: int = 0) -> Runtime:
    """Decide, and apply what is process-wide (threads, cuDNN autotuning, the current GPU).
    With several GPUs and `trainer.device=auto` or `cuda`, a job takes the GPU with the fewest
    live jobs (`choose_gpu`). Nothing here touches CUDA unless the job runs on it."""
    gpu_slots.release()  # this worker's previous job has ended
    device = resolve_device(str(trainer.device))
    if device.type == "cuda":
        device = choose_gpu(str(device), job_num)
    precision = resolve_precision(str(trainer.precision), device)
    # jobs x threads = cores: concurrent jobs share the cores instead of fighting over them. The
    # cores are this process's (a SLURM job's cpus_per_task), or what OMP_NUM_THREADS says (Ray)
    cores = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
             else os.cpu_count() or 1)
    # SLURM pins a job to its cores only with task/affinity or task/cgroup; with task/none the
    # affinity is the whole node, and the allocation is only in the environment
    if os.environ.get("SLURM_CPUS_PER_TASK", "").isdigit():
        cores = min(cores, int(os.environ["SLURM_CPUS_PER_TASK"]))
    threads = (trainer.num_threads or _omp_threads()
               or max(1, cores // max(1, concurrent)))
    torch.set_num_threads(threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    # On a CPU, chunks of about 1,000 images stay in cache and augment fastest; larger chunks
    # spill out of it (`make bench`, figures in docs/speed.md). A GPU wants larger ones.
    chunk = 16384 if device.type == "cuda" else 1024
    # On a CPU, oneDNN's convolutions take NHWC input (with NCHW weights) faster for inference
    # at any thread count, and for training on one thread, which is how parallel sweeps run;
    # with two threads ModifiedNet trains slower in NHWC, so a lone run keeps NCHW. Measured by
    # `make bench-memory-format`; the figures, per model and thread count: docs/speed.md.
    gpu, cpu = device.type == "cuda", device.type == "cpu"
    return Runtime(device=device, precision=precision, channels_last=gpu,
                   nhwc_train=gpu or (cpu and threads == 1), nhwc_eval=gpu or cpu,
                   threads=threads, chunk_images=chunk)
