"""runtime.py: how many jobs a sweep runs at once, the device and precision a job resolves to (and
the one-line errors for a device this machine lacks), the threads it takes from the cores, SLURM
and OMP_NUM_THREADS, the memory layout and chunk size per device, autocast and the gradient scaler,
and which GPU a job takes. GPUs are simulated where the answer depends on them (torch.cuda's
queries replaced), so that every test runs, and means the same, on a CPU-only machine."""

from __future__ import annotations

import functools
from types import SimpleNamespace

import pytest
import torch
from filelock import FileLock, Timeout
from hydra import compose, initialize_config_dir

from cifar_sweep.errors import UserInputError
from cifar_sweep.train import gpu_slots, runtime
from conftest import ROOT


@functools.cache  # composing takes ~50 ms; resolve() only reads the trainer settings
def trainer(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=["data=synthetic", *overrides]).trainer


@pytest.fixture(autouse=True)
def process_wide_settings(monkeypatch):
    """resolve() sets torch's threads and cuDNN autotuning for the whole process: put them back."""
    threads = torch.get_num_threads()
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", torch.backends.cudnn.benchmark)
    for name in ("OMP_NUM_THREADS", "SLURM_CPUS_PER_TASK"):
        monkeypatch.delenv(name, raising=False)
    yield
    gpu_slots.release()
    torch.set_num_threads(threads)


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


@pytest.fixture
def gpus(monkeypatch, tmp_path):
    """A host with 3 CUDA devices, as torch.cuda reports them; set_device records its argument.
    The GPU slots' folder (gpu_slots.py, in the temp directory) is this test's own."""
    current = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    monkeypatch.setattr(torch.cuda, "set_device", current.append)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda i: SimpleNamespace(uuid=f"uuid-{i}"))
    monkeypatch.setattr(gpu_slots, "default_folder", lambda: tmp_path / "slots")
    return SimpleNamespace(current=current, slots=tmp_path / "slots")


@pytest.fixture
def cores(monkeypatch):
    """This process may run on 8 cores (its CPU affinity), whatever the machine has."""
    monkeypatch.setattr(runtime.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)


# --- concurrent_jobs -----------------------------------------------------------------------------

@pytest.mark.parametrize("device", ["cpu", "auto"])
def test_a_cpu_sweep_runs_one_job_per_core(device, no_gpu, monkeypatch):
    # 7 cores, by the machine's count and by this process's affinity alike
    monkeypatch.setattr(runtime.os, "cpu_count", lambda: 7)
    monkeypatch.setattr(runtime.os, "sched_getaffinity", lambda pid: set(range(7)), raising=False)
    assert runtime.concurrent_jobs(device, jobs_per_gpu=4) == 7  # jobs_per_gpu is for GPUs only


def test_an_unknown_core_count_still_runs_one_job(no_gpu, monkeypatch):
    monkeypatch.setattr(runtime.os, "cpu_count", lambda: None)
    assert runtime.concurrent_jobs("cpu") == 1


def test_a_cpu_sweep_on_a_gpu_host_still_runs_one_job_per_core(gpus, monkeypatch):
    monkeypatch.setattr(runtime.os, "cpu_count", lambda: 7)
    monkeypatch.setattr(runtime.os, "sched_getaffinity", lambda pid: set(range(7)), raising=False)
    assert runtime.concurrent_jobs("cpu", jobs_per_gpu=2) == 7


@pytest.mark.parametrize(("device", "jobs_per_gpu", "expected"), [
    ("auto", 1, 3), ("cuda", 2, 6),  # every GPU, jobs_per_gpu on each
    ("cuda:2", 2, 2),                # one GPU named: only its jobs
    ("cuda", 0, 3),                  # never fewer than one job a GPU
])
def test_a_gpu_sweep_runs_jobs_per_gpu_on_each_gpu_it_uses(gpus, device, jobs_per_gpu, expected):
    assert runtime.concurrent_jobs(device, jobs_per_gpu) == expected


def test_jobs_per_gpu_from_a_config_string_counts_as_a_number(gpus):
    assert runtime.concurrent_jobs("cuda", "2") == 6


# --- resolve_device ------------------------------------------------------------------------------

def test_auto_is_the_cpu_without_cuda_and_cuda_with_it(no_gpu, monkeypatch):
    assert runtime.resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert runtime.resolve_device("auto") == torch.device("cuda")


@pytest.mark.parametrize("name", ["cuda", "cuda:0"])
def test_cuda_on_a_machine_without_it_is_one_line_naming_what_is_allowed(name, no_gpu):
    with pytest.raises(UserInputError) as raised:
        runtime.resolve_device(name)
    assert str(raised.value) == (f"trainer.device={name} is invalid: CUDA is not available here "
                                 "(allowed: auto, cpu)")


def test_a_gpu_index_past_the_last_names_the_gpus_there_are(gpus):
    assert runtime.resolve_device("cuda:2") == torch.device("cuda:2")
    with pytest.raises(UserInputError) as raised:
        runtime.resolve_device("cuda:3")
    assert str(raised.value) == ("trainer.device=cuda:3 is invalid: this machine has 3 CUDA "
                                 "device(s), cuda:0 to cuda:2")


def test_mps_without_it_is_one_line(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(UserInputError, match=r"^trainer\.device=mps is invalid: MPS is not "
                                             r"available here \(allowed: auto, cpu\)$"):
        runtime.resolve_device("mps")


# --- resolve_precision ---------------------------------------------------------------------------

@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_a_named_precision_is_kept_on_any_device(precision):
    assert runtime.resolve_precision(precision, torch.device("cpu")) == precision
    assert runtime.resolve_precision(precision, torch.device("cuda:0")) == precision


def test_auto_precision_is_fp32_on_a_cpu_even_beside_a_bf16_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert runtime.resolve_precision("auto", torch.device("cpu")) == "fp32"


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16"), (False, "fp32")])
def test_auto_precision_on_a_gpu_is_bf16_only_where_it_is_native(native, expected, monkeypatch):
    # a pre-Ampere GPU supports bf16 by emulation only: asked with emulation counted, it says yes
    monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                        lambda including_emulation=True: native or including_emulation)
    assert runtime.resolve_precision("auto", torch.device("cuda:0")) == expected


# --- Runtime: autocast and the gradient scaler ---------------------------------------------------

def cpu_runtime(precision: str) -> runtime.Runtime:
    return runtime.Runtime(device=torch.device("cpu"), precision=precision, channels_last=False,
                           nhwc_train=True, nhwc_eval=True, threads=1, chunk_images=1024)


@pytest.mark.parametrize(("precision", "dtype"), [
    ("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_autocast_computes_a_matmul_in_the_resolved_precision(precision, dtype):
    a = torch.ones(4, 4)
    with cpu_runtime(precision).autocast():
        assert (a @ a).dtype == dtype
        assert torch.is_autocast_enabled("cpu") == (precision != "fp32")


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_only_fp16_scales_its_gradients(precision):
    scaler = cpu_runtime(precision).grad_scaler()
    assert scaler.is_enabled() == (precision == "fp16")
    loss = torch.tensor(2.0)
    # a disabled scaler is a plain step: the loss as it is
    assert (scaler.scale(loss).item() > 2.0) == (precision == "fp16")


# --- resolve: threads ----------------------------------------------------------------------------

@pytest.mark.parametrize(("concurrent", "expected"), [(1, 8), (3, 2), (8, 1), (16, 1), (0, 8)])
def test_concurrent_jobs_share_the_cores(cores, concurrent, expected):
    rt = runtime.resolve(trainer("trainer.device=cpu"), concurrent=concurrent)
    assert rt.threads == expected
    assert torch.get_num_threads() == expected  # applied to the process, not only reported


def test_slurm_cpus_per_task_caps_the_cores_where_slurm_does_not_pin_them(cores, monkeypatch):
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "4")
    assert runtime.resolve(trainer("trainer.device=cpu"), concurrent=2).threads == 2
    # more than the affinity allows: the affinity is the limit
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "32")
    assert runtime.resolve(trainer("trainer.device=cpu"), concurrent=2).threads == 4


@pytest.mark.parametrize("value", ["", "four"])
def test_a_slurm_cpus_per_task_that_is_not_a_number_is_ignored(cores, monkeypatch, value):
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", value)
    assert runtime.resolve(trainer("trainer.device=cpu")).threads == 8


def test_omp_num_threads_overrides_the_share_of_the_cores(cores, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "2")
    assert runtime.resolve(trainer("trainer.device=cpu"), concurrent=8).threads == 3


@pytest.mark.parametrize("value, threads", [("4,2", 4), (" 6 ", 6), ("many", 2), ("", 2)])
def test_omp_num_threads_as_openmp_allows_it_a_value_per_nesting_level(cores, monkeypatch,
                                                                        value, threads):
    """`4,2` is OpenMP's four threads here and two below; not a number: the cores decide (8
    cores, 4 jobs side by side: 2 each)."""
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    assert runtime.resolve(trainer("trainer.device=cpu"), concurrent=4).threads == threads


def test_trainer_num_threads_overrides_everything(cores, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert runtime.resolve(trainer("trainer.device=cpu", "trainer.num_threads=5"),
                           concurrent=8).threads == 5


# --- resolve: the layout per device --------------------------------------------------------------

def test_a_parallel_cpu_job_on_one_thread_trains_and_evaluates_in_nhwc(cores):
    rt = runtime.resolve(trainer("trainer.device=cpu", "trainer.num_threads=1"))
    assert (rt.device, rt.precision, rt.threads) == (torch.device("cpu"), "fp32", 1)
    assert (rt.channels_last, rt.nhwc_train, rt.nhwc_eval, rt.chunk_images) == (False, True, True, 1024)


def test_a_lone_cpu_job_on_several_threads_trains_in_nchw(cores):
    rt = runtime.resolve(trainer("trainer.device=cpu"), concurrent=4)
    assert rt.threads == 2
    assert (rt.channels_last, rt.nhwc_train, rt.nhwc_eval) == (False, False, True)


def test_a_named_precision_survives_resolve_on_a_cpu(cores):
    assert runtime.resolve(trainer("trainer.device=cpu", "trainer.precision=bf16")).precision == "bf16"


def test_a_gpu_job_runs_nhwc_with_large_chunks_autotuned_and_bf16_where_native(gpus, cores,
                                                                               monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    torch.backends.cudnn.benchmark = False
    rt = runtime.resolve(trainer("trainer.device=cuda:1", "trainer.num_threads=1"))
    assert rt.device == torch.device("cuda:1") and gpus.current == [torch.device("cuda:1")]
    assert (rt.precision, rt.channels_last, rt.nhwc_train, rt.nhwc_eval, rt.chunk_images) == (
        "bf16", True, True, True, 16384)
    assert torch.backends.cudnn.benchmark is True


def test_resolve_reports_a_device_this_machine_lacks_as_one_line(no_gpu):
    with pytest.raises(UserInputError, match="trainer.device=cuda is invalid"):
        runtime.resolve(trainer("trainer.device=cuda"))


# --- choose_gpu ----------------------------------------------------------------------------------

def test_a_named_gpu_is_taken_as_named_and_made_current(gpus):
    assert runtime.choose_gpu("cuda:2", job_num=0) == torch.device("cuda:2")
    assert gpus.current == [torch.device("cuda:2")]
    assert not gpus.slots.exists()  # no slot counted or held: the user chose


def test_on_one_gpu_every_job_takes_cuda_0(gpus, monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert runtime.choose_gpu("cuda", job_num=5) == torch.device("cuda:0")
    assert gpus.current == [torch.device("cuda:0")]
    assert not gpus.slots.exists()  # nothing to balance: no slot counted or held


def test_on_idle_gpus_jobs_take_them_in_turn_by_job_number(gpus):
    assert runtime.choose_gpu("cuda", job_num=4) == torch.device("cuda:1")  # 4 % 3
    assert gpus.current == [torch.device("cuda:1")]
    # the slot it holds is named by the GPU's UUID, as other processes will count it
    assert [p.name for p in gpus.slots.glob("GPU-*.lock")] == ["GPU-uuid-1.0.lock"]


def test_a_job_takes_the_least_loaded_gpu_counted_by_the_slots_held(gpus):
    gpus.slots.mkdir()
    others = [FileLock(str(gpus.slots / name)) for name in ("GPU-uuid-1.0.lock", "GPU-uuid-2.0.lock")]
    for lock in others:  # live jobs of another process on GPUs 1 and 2
        lock.acquire()
    try:
        assert runtime.choose_gpu("cuda", job_num=1) == torch.device("cuda:0")
    finally:
        for lock in others:
            lock.release()


def test_a_workers_next_job_on_the_cpu_gives_back_the_gpu_slot_of_its_last_job(gpus, cores):
    runtime.resolve(trainer("trainer.device=cuda", "trainer.precision=fp32"), job_num=0)
    [slot] = gpus.slots.glob("GPU-*.lock")
    with pytest.raises(Timeout):  # held by this worker's GPU job
        FileLock(str(slot)).acquire(timeout=0)
    runtime.resolve(trainer("trainer.device=cpu"))
    free = FileLock(str(slot))
    free.acquire(timeout=0)  # free: a job that ended holds no GPU
    free.release()


def test_a_gpu_without_a_uuid_is_named_by_its_index(gpus, monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: SimpleNamespace())
    runtime.choose_gpu("cuda", job_num=2)
    assert [p.name for p in gpus.slots.glob("cuda*.lock")] == ["cuda2.0.lock"]
