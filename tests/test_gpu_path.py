"""The GPU-shaped branches, run where they can run: on the CPU. bf16 and fp16 autocast (with the
gradient scaler), killed and continued; torch.compile; a device=cpu sweep on a host where CUDA
looks available, which must never initialise CUDA; the GPU slot balancing, with real processes
holding real locks. Tests marked `gpu` need a CUDA device and are skipped elsewhere
(`benchmarks/gpu_check.sh` runs them on a GPU machine)."""

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from conftest import ROOT
from test_resume import jobs, kill_after, start

# smaller than FAST's data, no figures: these tests are about the training step, not the report
SMALL = ("data.source.num_train=1000", "data.source.num_test=200", "tracking.figures=false")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def finished_metrics(project, experiment="cifar-sweep") -> dict:
    [run] = jobs(project, experiment)
    assert run.info.status == "FINISHED"
    return run.data.metrics


def kill_and_continue(project, tmp_path, *run) -> tuple[dict, dict, dict, dict, dict]:
    """SIGKILL after epoch 2 of 3, the same command again; then a fresh uninterrupted run.
    Returns both runs' metrics, the checkpoint as the kill left it, and both runs' last
    checkpoints (kept: `checkpoint.keep=true`)."""
    run = ("trainer.epochs=3", "checkpoint.keep=true", *SMALL, *run)
    kill_after(start(project, *run), "epoch 2/3")
    [ckpt] = (project.workdir / "checkpoints").rglob("*.pt")
    killed = torch.load(ckpt, weights_only=True)
    proc = project.job(*run, check=True)  # the kill above needs a process; these need none
    assert "continuing from epoch 3" in proc.stdout
    fresh = type(project)(tmp_path / "fresh")
    fresh.workdir.mkdir()
    fresh.job(*run, check=True)
    [fresh_ckpt] = (fresh.workdir / "checkpoints").rglob("*.pt")
    return (finished_metrics(project), finished_metrics(fresh), killed,
            torch.load(ckpt, weights_only=True), torch.load(fresh_ckpt, weights_only=True))


def assert_same(continued: dict, uninterrupted: dict) -> None:
    for metric in ("test_accuracy", "test_loss", "best_val_accuracy", "best_epoch"):
        assert continued[metric] == pytest.approx(uninterrupted[metric], abs=1e-6), metric


@pytest.mark.slow  # over a minute on the 2-core CPU: make test-full (a default test covers its core)
def test_bf16_run_killed_and_continued_ends_as_an_uninterrupted_one(project, tmp_path):
    continued, fresh, killed, _, _ = kill_and_continue(project, tmp_path, "trainer.precision=bf16")
    assert killed["progress"]["epoch"] == 2 and "cuda_rng" not in killed  # CPU run: no CUDA state
    assert 0 < fresh["test_accuracy"] <= 1
    assert_same(continued, fresh)


@pytest.mark.slow  # over a minute on the 2-core CPU: make test-full (a default test covers its core)
def test_fp16_keeps_its_loss_scale_in_the_checkpoint_and_continues_exactly(project, tmp_path):
    # CPU autocast runs float16 in recent torch; where it does not, this path cannot run here
    with torch.autocast("cpu", dtype=torch.float16):
        if torch.nn.Linear(2, 2)(torch.ones(1, 2)).dtype != torch.float16:
            pytest.skip("this torch has no float16 CPU autocast")
    # fewer images: float16 on a CPU is emulated, about 4x slower than bf16
    continued, fresh, killed, continued_end, fresh_end = kill_and_continue(
        project, tmp_path, "trainer.precision=fp16", "data.source.num_train=500")
    assert set(killed["scaler"]) >= {"scale", "growth_factor", "_growth_tracker"}
    # the scaler went on from its saved state (scale and steps since the last overflow): had it
    # started over, the continued run would end with fewer steps counted than the fresh one
    assert killed["scaler"]["_growth_tracker"] > 0
    assert continued_end["scaler"] == fresh_end["scaler"]
    assert_same(continued, fresh)


def test_bad_precision_is_one_line_and_no_run(project):
    proc = project.job("trainer.precision=fp8", *SMALL)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: trainer.precision=fp8 is invalid: allowed: auto, fp32, bf16, fp16")
    assert not project.runs()  # no run was created


@pytest.mark.slow  # torch.compile (inductor) compiles C++ kernels on the CPU: about 2 min here
def test_compiled_run_trains(project):
    project.train("trainer.compile=true", "data.source.num_train=500", "data.source.num_test=100",
                  "tracking.figures=false", check=True, timeout=900)
    metrics = finished_metrics(project)
    assert 0 < metrics["test_accuracy"] <= 1 and metrics["parameters"] > 0


# Every Python process of the run (the sweep and its joblib workers) imports this first: CUDA
# looks available with one GPU, and any CUDA initialisation is recorded, then refused.
FAKE_CUDA = textwrap.dedent("""
    import atexit, os, sys
    import torch
    import torch.cuda

    def _record(what):
        with open(os.environ["CUDA_LOG"], "a") as f:
            f.write(f"{os.getpid()} {what}\\n")

    def _refuse(*args, **kwargs):
        _record("initialised")
        raise RuntimeError("test: a device=cpu run initialised CUDA")

    fakes = {"is_available": lambda: True, "device_count": lambda: 1, "_lazy_init": _refuse}
    for name, module in list(sys.modules.items()):  # torch.cuda.random etc. hold their own names
        if name == "torch.cuda" or name.startswith("torch.cuda."):
            for attr, fake in fakes.items():
                if hasattr(module, attr):
                    setattr(module, attr, fake)
    atexit.register(lambda: _record(f"exit initialised={torch.cuda.is_initialized()}"))
    _record("started")
""")


@pytest.mark.slow  # over a minute on the 2-core CPU: make test-full (a default test covers its core)
def test_cpu_sweep_on_a_gpu_host_never_initialises_cuda_and_runs_a_job_per_core(project, tmp_path):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(FAKE_CUDA)
    log = tmp_path / "cuda.log"
    env = {"PYTHONPATH": os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")]),
           "CUDA_LOG": str(log)}
    proc = project.train("-m", "trainer.device=cpu", "lr.value=0.005,0.01", *SMALL,
                         "checkpoint.keep=true", env=env, check=True)
    lines = log.read_text().splitlines()
    started = {line.split()[0] for line in lines if line.endswith("started")}
    assert len(started) >= 2  # the sweep's process and at least one joblib worker
    assert not [line for line in lines if line.endswith(" initialised")], lines
    assert not [line for line in lines if "initialised=True" in line], lines
    # one job per core, as on a machine without GPUs: not jobs_per_gpu x 1 GPU
    assert f"Joblib.Parallel(n_jobs={os.cpu_count()}," in proc.stdout + proc.stderr
    runs = jobs(project)
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    assert {r.data.tags["device"] for r in runs} == {"cpu"}
    for ckpt in (project.workdir / "checkpoints").rglob("*.pt"):  # kept: the state they saved
        assert "cuda_rng" not in torch.load(ckpt, weights_only=True)


HOLD = "from cifar_sweep.train import gpu_slots as g; import sys, time; from pathlib import Path; " \
       "print(g.take(sys.argv[1].split(','), int(sys.argv[2]), Path(sys.argv[3])), flush=True); " \
       "time.sleep(120)"


def test_gpu_slots_go_to_the_least_loaded_gpu_and_free_when_a_job_dies(tmp_path):
    """Four jobs on GPUs a, b, c: one slot each, then the fourth joins the least loaded; when a
    job is SIGKILLed its slot frees itself, and the next job takes that GPU."""
    folder = tmp_path / "slots"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    holders = []

    def hold(job_num: int) -> int:
        p = subprocess.Popen([sys.executable, "-c", HOLD, "a,b,c", str(job_num), str(folder)],
                             stdout=subprocess.PIPE, text=True, env=env)
        holders.append(p)
        return int(p.stdout.readline())

    try:
        assert [hold(j) for j in range(3)] == [0, 1, 2]  # in turn while all are free
        assert hold(1) == 1  # all equal: its turn, b
        holders[0].kill()  # the job on a dies
        holders[0].wait()
        deadline = time.time() + 10
        from cifar_sweep.train import gpu_slots
        while gpu_slots.live_jobs(folder, "a") and time.time() < deadline:
            time.sleep(0.1)
        assert [gpu_slots.live_jobs(folder, g) for g in "abc"] == [0, 2, 1]
        assert hold(2) == 0  # c's turn, but a is free: a
    finally:
        for p in holders:
            p.kill()
            p.wait()


@pytest.mark.gpu
@needs_cuda
def test_gpu_run_in_each_precision_and_continue_on_another_device_index(project, tmp_path):
    """On a GPU: fp32, bf16 (where native) and fp16 each train; a checkpoint taken on the last
    GPU continues on cuda:0 (fewer GPUs visible), exactly when it is the same kind of GPU."""
    for precision in ("fp32", "fp16") + (("bf16",) if torch.cuda.is_bf16_supported() else ()):
        p = type(project)(tmp_path / precision)
        p.workdir.mkdir()
        p.train("trainer.device=cuda", f"trainer.precision={precision}", *SMALL, check=True)
        assert 0 < finished_metrics(p)["test_accuracy"] <= 1
    last = torch.cuda.device_count() - 1
    kill_after(start(project, "trainer.epochs=3", *SMALL, f"trainer.device=cuda:{last}"),
               "epoch 2/3")
    proc = project.train("trainer.epochs=3", *SMALL, "trainer.device=cuda:0", check=True,
                         env={"CUDA_VISIBLE_DEVICES": "0"})
    assert "continuing from epoch 3" in proc.stdout


@pytest.mark.gpu
@needs_cuda
def test_gpu_sweep_sets_each_jobs_device(project):
    proc = project.train("-m", "trainer.device=cuda", "trainer.jobs_per_gpu=2",
                         "lr.value=0.005,0.01,0.02", *SMALL, check=True)
    gpus = torch.cuda.device_count()
    assert f"Joblib.Parallel(n_jobs={2 * gpus}," in proc.stdout + proc.stderr
    devices = {r.data.tags["device"] for r in jobs(project)}
    assert devices <= {f"cuda:{i}" for i in range(gpus)} and devices


@pytest.mark.slow  # over a minute on the 2-core CPU: make test-full (a default test covers its core)
def test_gpu_check_dry_run_writes_its_summary(tmp_path):
    """`benchmarks/gpu_check.sh --dry`: every step of the GPU check on the CPU, tiny sizes."""
    out = tmp_path / "check"
    (out / "scratch").mkdir(parents=True)
    (out / "scratch" / "left-over").write_text("from a previous run")  # running twice is safe
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry", "--out", str(out)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not (out / "scratch" / "left-over").exists()
    s = json.loads((out / "summary.json").read_text())
    assert s["dry"] and s["device"]["device"] == "cpu"
    rows = {(r["model"], r["precision"], r["compiled"]) for r in s["epochs"]}
    assert {("modified_net", "fp32", False), ("modified_net", "bf16", False)} <= rows
    assert {r["model"] for r in s["epochs"] if r.get("auto")} == {
        "modified_net", "origin_net", "modified_net_ds", "resnet18"}
    assert all(r["cifar_epoch_seconds"] > 0 for r in s["epochs"])
    [jobs] = s["jobs"]
    assert jobs["finished"] == jobs["jobs"] == 2 and jobs["images_per_second_span"] > 0
    assert 0 <= s["fast_modifiednet"]["test_accuracy"] <= 1
    gpu_tests = s["gpu_tests"]  # no CUDA here: each `gpu` test collected and skipped
    assert gpu_tests["exit"] == 0 and gpu_tests["passed"] == 0 and gpu_tests["skipped"] >= 2
    p = s["prediction"]  # the studies' jobs, the shared baseline once: 5 + 3 + 2 + 3 configs
    assert p["studies"] == {"lr": 5, "optimizer": 4, "loss": 3, "arch": 4}
    assert p["configs"] == 13 and p["runs"] == 39 and p["predicted_hours"] > 0
    md = (out / "summary.md").read_text()
    assert "not measured on a GPU" in md and "Predicted" in md


def _requirements(lines) -> list:
    from packaging.requirements import Requirement

    return [Requirement(line.split("#")[0]) for line in lines if line.split("#")[0].strip()]


def test_dependency_ranges_hold_the_exact_pins_and_the_installed_torch():
    """pyproject.toml declares ranges (installable beside a GPU machine's own torch);
    constraints.txt pins what `make install` installs: each pin inside its range, and the torch
    and torchvision installed here inside theirs."""
    import tomllib
    from importlib.metadata import version

    from packaging.utils import canonicalize_name
    from packaging.version import Version

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {}
    for req in _requirements(project["dependencies"] + [
            d for extra in project["optional-dependencies"].values() for d in extra]):
        declared.setdefault(canonicalize_name(req.name), []).append(req.specifier)
    for name in ("torch", "torchvision"):  # a range, not a pin, with an upper bound
        [spec] = declared[name]
        assert not any(s.operator == "==" for s in spec) and any(s.operator == "<" for s in spec)
    pins = _requirements((ROOT / "constraints.txt").read_text().splitlines())
    assert {canonicalize_name(p.name) for p in pins} >= {"torch", "torchvision"}
    for pin in pins:
        [exact] = list(pin.specifier)
        assert exact.operator == "==", pin
        # a pin of a package nothing declares (matplotlib's own, pinned for the published
        # figures' bytes) has no range to lie in
        for spec in declared.get(canonicalize_name(pin.name), []):
            assert spec.contains(exact.version, prereleases=True), (pin, spec)
    for name in ("torch", "torchvision"):
        [spec] = declared[name]
        assert spec.contains(Version(version(name)), prereleases=True), (name, version(name))
    # torchvision 0.(N+15) goes with torch 2.N: the two lower bounds name one release
    torch_low = next(Version(s.version) for s in declared["torch"][0] if s.operator == ">=")
    vision_low = next(Version(s.version) for s in declared["torchvision"][0] if s.operator == ">=")
    assert (torch_low.major, torch_low.minor + 15) == (2, vision_low.minor)


def test_offline_wheel_list_covers_the_gpu_checks_requirements():
    """benchmarks/gpu_check_wheels.txt (what docs/gpu.md downloads) pins every top-level
    requirement of the check (gpu_check_requirements.txt), within its range."""
    from packaging.utils import canonicalize_name

    wanted = _requirements((ROOT / "benchmarks" / "gpu_check_requirements.txt").read_text().splitlines())
    pinned = {canonicalize_name(p.name): list(p.specifier)[0].version for p in _requirements(
        (ROOT / "benchmarks" / "gpu_check_wheels.txt").read_text().splitlines())}
    for req in wanted:
        name = canonicalize_name(req.name)
        if name in ("numpy", "pillow", "filelock"):  # torchvision's and torch's own: there with them
            continue
        assert name in pinned and req.specifier.contains(pinned[name], prereleases=True), req
    assert not {"torch", "torchvision", "mlflow"} & set(pinned)  # the machine's, or too big
