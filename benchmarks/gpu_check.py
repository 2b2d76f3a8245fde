"""The GPU check: one command, about 8 minutes on one GPU, for the day a GPU machine is lent.

    benchmarks/gpu_check.sh [--dry] [--out DIR] [--data-root DIR] [--budget SECONDS]

In order of what the prediction needs, each step skipped (and said so) once the budget is spent:
  1. the device: GPU name, memory, compute capability, native bf16, torch and CUDA versions;
  2. per-epoch time at batch 64 (train 40,000 images + validate 10,000, synthetic images of
     CIFAR-10's shape) of ModifiedNet and OriginNet in fp32 and bf16, and of every model of the
     arch study at the precision `auto` picks (what a study runs);
  3. sweeps of 1, 2, 4, 8 jobs per GPU through the real entrypoint (`src/train.py -m ...
     trainer.jobs_per_gpu=N`), their images per second and GPU utilisation;
  4. `experiment=fast_modifiednet`, one seed: time and test accuracy (CIFAR-10 with
     --data-root, else synthetic data, whose accuracy means nothing);
  5. the tests marked `gpu` (pytest -m gpu);
  6. ModifiedNet and OriginNet compiled (`trainer.compile=true`): compile time and epoch time;
  7. from 2 and 3, the predicted wall time of the four report studies (lr, optimizer, loss,
     arch) at 300 epochs and 3 seeds, runs shared between studies counted once.
Writes <out>/summary.json and <out>/summary.md; everything else under <out>/scratch, which is
removed at the start: running it twice is safe. `--dry` does it all on the CPU with tiny sizes
(a default-suite test runs it, so that the script cannot rot). docs/gpu.md explains each figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from cifar_sweep.data import load_dataset
from cifar_sweep.train.loop import build, evaluate, train_epoch
from cifar_sweep.train.runtime import resolve

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
TRAIN = ROOT / "src" / "train.py"
STUDIES = ("lr", "optimizer", "loss", "arch")  # the report's four; conf/ablation/<name>.yaml
ARCH_MODELS = ("modified_net", "origin_net", "modified_net_ds", "resnet18")
FULL_TRAIN, FULL_VAL = 40_000, 10_000  # a CIFAR-10 epoch: 80% of 50,000 trains, 20% validates


class Budget:
    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


def device_info(device: str) -> dict:
    info = {"torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
            "device": device, "cpu_cores": os.cpu_count()}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(gpu_name=props.name, gpu_count=torch.cuda.device_count(),
                    gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    capability=f"{props.major}.{props.minor}",
                    bf16_native=torch.cuda.is_bf16_supported(including_emulation=False))
    else:
        info.update(gpu_name=None, gpu_count=0, gpu_memory_gib=None, capability=None,
                    bf16_native=False)
    return info


# ---- 2 and 6: one epoch of each model, in this process -------------------------------------

def compose_cfg(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=overrides)


def epoch_time(model: str, precision: str, compiled: bool, data: list[str], device: str,
               warmup_images: int) -> dict:
    """Train one epoch and validate once, after a warm-up pass (cuDNN autotuning; for a compiled
    model, the compilation, timed on its own)."""
    cfg = compose_cfg([f"model={model}", "trainer.batch_size=64", f"trainer.device={device}",
                       f"trainer.precision={precision}", f"trainer.compile={str(compiled).lower()}",
                       *data])
    dataset = load_dataset(instantiate(cfg.data.source), cfg.data.cache_dir)
    parts = build(cfg, dataset, resolve(cfg.trainer))
    full = parts.train.split
    parts.train.split = full.subset(torch.arange(min(warmup_images, len(full))))
    start = time.perf_counter()
    train_epoch(parts)
    evaluate(parts, parts.val)
    warmup = time.perf_counter() - start
    parts.train.split = full
    stats = train_epoch(parts)
    start = time.perf_counter()
    evaluate(parts, parts.val)
    val_seconds = time.perf_counter() - start
    n_train, n_val = len(full), len(parts.val.split)
    # scaled to a CIFAR-10 epoch (the same sizes on a GPU; the dry run measures fewer images)
    epoch = stats.seconds * FULL_TRAIN / n_train + val_seconds * FULL_VAL / n_val
    if compiled:
        torch._dynamo.reset()
    return {"model": model, "precision": parts.runtime.precision, "compiled": compiled,
            "train_images": n_train, "train_seconds": stats.seconds,
            "train_images_per_second": n_train / stats.seconds, "val_images": n_val,
            "val_seconds": val_seconds, "warmup_seconds": warmup, "cifar_epoch_seconds": epoch}


# ---- 3 and 4: the real entrypoint -----------------------------------------------------------

class UtilSampler:
    """GPU utilisation and memory once a second, from pynvml if present, else nvidia-smi."""

    def __init__(self):
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.source = None
        try:
            import pynvml

            pynvml.nvmlInit()
            handles = [pynvml.nvmlDeviceGetHandleByIndex(i)
                       for i in range(pynvml.nvmlDeviceGetCount())]

            def read():
                u = [pynvml.nvmlDeviceGetUtilizationRates(h).gpu for h in handles]
                m = [pynvml.nvmlDeviceGetMemoryInfo(h).used / 2**20 for h in handles]
                return sum(u) / len(u), max(m)
            self._read, self.source = read, "pynvml"
        except Exception:  # not installed, or no NVIDIA driver
            if shutil.which("nvidia-smi"):
                self._read, self.source = self._smi, "nvidia-smi"

    @staticmethod
    def _smi():
        out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True,
                             timeout=10).stdout
        rows = [[float(x) for x in line.split(",")] for line in out.strip().splitlines()]
        return sum(r[0] for r in rows) / len(rows), max(r[1] for r in rows)

    def _run(self):
        while not self._stop.wait(1.0):
            try:
                self.samples.append(self._read())
            except Exception:
                pass

    def __enter__(self):
        if self.source:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self.source:
            self._thread.join(timeout=15)

    def summary(self) -> dict:
        if not self.samples:
            return {"gpu_util_mean": None, "gpu_util_max": None, "gpu_memory_max_mib": None}
        util = [s[0] for s in self.samples]
        return {"gpu_util_mean": round(sum(util) / len(util), 1), "gpu_util_max": max(util),
                "gpu_memory_max_mib": round(max(s[1] for s in self.samples))}


def entrypoint(scratch: Path, args: list[str], timeout: float) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(TRAIN), *args], cwd=scratch, env=env,
                          capture_output=True, text=True, timeout=max(1, timeout))
    seconds = time.perf_counter() - start
    (scratch / "logs").mkdir(exist_ok=True)
    name = "_".join(a.replace("/", "-") for a in args if "experiment" in a or "jobs_per_gpu" in a)
    (scratch / "logs" / f"{name or 'run'}.log").write_text(proc.stdout + proc.stderr)
    return proc, seconds


def finished_runs(store: Path, experiment: str) -> list:
    client = MlflowClient(tracking_uri=f"sqlite:///{store / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return [r for r in client.search_runs([exp.experiment_id], max_results=1000)
            if r.data.tags.get("cifar_sweep.role") == "job" and r.info.status == "FINISHED"]


def jobs_throughput(n: int, gpus: int, scratch: Path, data: list[str], epochs: int, device: str,
                    budget: Budget) -> dict:
    """n jobs per GPU, n x GPUs jobs in all (one wave), each a different seed of ModifiedNet."""
    jobs = n * max(1, gpus)
    experiment = f"gpu-check-jobs{n}"
    args = ["-m", f"trainer.seed={','.join(str(s) for s in range(jobs))}",
            f"trainer.jobs_per_gpu={n}", f"trainer.epochs={epochs}", f"trainer.device={device}",
            "trainer.rerun=true", "tracking.figures=false", f"tracking.experiment={experiment}",
            f"hydra.sweep.dir=multirun/jobs{n}", *data]
    with UtilSampler() as sampler:
        proc, wall = entrypoint(scratch, args, budget.left())
    runs = finished_runs(scratch / "mlruns", experiment)
    row = {"jobs_per_gpu": n, "jobs": jobs, "finished": len(runs), "exit": proc.returncode,
           "wall_seconds": round(wall, 1), **sampler.summary()}
    if runs:
        num_train = int(runs[0].data.params["data.source.num_train"])
        per_job = epochs * (num_train - max(1, round(num_train * 0.2)))  # split_train_val's
        images = per_job * len(runs)
        span = (max(r.info.end_time for r in runs) - min(r.info.start_time for r in runs)) / 1000
        row.update(images_per_second_span=images / span,
                   images_per_second_sum=sum(r.data.metrics["train_images_per_second"] for r in runs),
                   span_seconds=round(span, 1))
    return row


def fast_run(scratch: Path, data: list[str], dry: bool, device: str, budget: Budget) -> dict:
    args = ["experiment=fast_modifiednet", "trainer.seed=0", f"trainer.device={device}",
            "trainer.rerun=true", "tracking.figures=false", "tracking.experiment=gpu-check-fast",
            *data, *(["trainer.epochs=1"] if dry else [])]
    proc, wall = entrypoint(scratch, args, budget.left())
    runs = finished_runs(scratch / "mlruns", "gpu-check-fast")
    row = {"exit": proc.returncode, "wall_seconds": round(wall, 1)}
    if runs:
        m = runs[0].data.metrics
        row.update(test_accuracy=m["test_accuracy"], train_seconds=m["train_seconds"],
                   total_seconds=m["total_seconds"], epochs=int(runs[0].data.params["trainer.epochs"]))
    return row


def gpu_tests(scratch: Path, budget: Budget, where: str) -> dict:
    xml = scratch / "gpu_tests.xml"
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
                           f"--junitxml={xml}", where], cwd=ROOT, capture_output=True, text=True,
                          timeout=max(1, budget.left()),
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(
                              [str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])})
    (scratch / "gpu_tests.log").write_text(proc.stdout + proc.stderr)
    row = {"exit": proc.returncode, "seconds": round(time.perf_counter() - start, 1)}
    if xml.exists():
        suite = ET.parse(xml).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
        counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
        row.update(counts)
    return row


# ---- 7: the prediction ----------------------------------------------------------------------

def study_runs() -> dict[str, list[str]]:
    """config -> [model, studies...] of every job of the four studies at 300 epochs; a
    config in several studies (the shared baseline) is one run."""
    runs: dict[str, list[str]] = {}
    for study in STUDIES:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            base = compose("config", overrides=[f"ablation={study}"], return_hydra_config=True)
            [(key, values)] = base.hydra.sweeper.params.items()
            for value in str(values).split(","):
                cfg = compose("config", overrides=[f"ablation={study}", f"{key}={value}",
                                                   "trainer.epochs=300"])
                # the config less where it is logged and which table it is in: what decides the
                # result (identity.py's hash does the same, and more, for the runs themselves)
                tree = OmegaConf.to_container(cfg, resolve=True)
                for section in ("tracking", "study"):
                    tree.pop(section, None)
                h = json.dumps(tree, sort_keys=True, default=str)
                runs.setdefault(h, [cfg.model._target_.rsplit(".", 1)[-1]]).append(study)
    return runs


MODEL_OF_TARGET = {"ModifiedNet": "modified_net", "OriginNet": "origin_net",
                   "ModifiedNetDS": "modified_net_ds", "resnet18_cifar": "resnet18"}


def predict(epochs: list[dict], jobs: list[dict], gpus: int, seeds: int = 3,
            n_epochs: int = 300) -> dict:
    per_epoch = {}  # the precision `auto` gives, not compiled: what a study runs by default
    for row in epochs:
        if row.get("auto") and not row["compiled"]:
            per_epoch[row["model"]] = row["cifar_epoch_seconds"]
    runs = study_runs()
    missing = sorted({MODEL_OF_TARGET.get(m[0], m[0]) for m in runs.values()} - set(per_epoch))
    if missing:
        return {"skipped": f"no epoch time for {', '.join(missing)}"}
    one_at_a_time = sum(per_epoch[MODEL_OF_TARGET[m[0]]] for m in runs.values()) * n_epochs * seeds
    rates = {j["jobs_per_gpu"]: j["images_per_second_span"] for j in jobs
             if j.get("images_per_second_span") and j["finished"] == j["jobs"]}
    speedup, best = 1.0, None
    if rates:
        base = rates[min(rates)]
        best = max(rates, key=rates.get)
        speedup = rates[best] / base
    wall = one_at_a_time / speedup / max(1, gpus)
    return {"runs": len(runs) * seeds, "configs": len(runs), "seeds": seeds, "epochs": n_epochs,
            "studies": {s: sum(s in v for v in runs.values()) for s in STUDIES},
            "one_job_at_a_time_hours": one_at_a_time / 3600, "best_jobs_per_gpu": best,
            "side_by_side_speedup": speedup, "gpus": max(1, gpus), "predicted_hours": wall / 3600}


# ---- the summary ----------------------------------------------------------------------------

def markdown(s: dict) -> str:
    d = s["device"]
    lines = [f"# GPU check{' (dry run: CPU, tiny sizes; not measured on a GPU)' if s['dry'] else ''}",
             "", f"{s['started']}, {s['seconds']:.0f} s; torch {d['torch']} (CUDA {d['cuda']}), "
             f"Python {d['python']}, {d['cpu_cores']} CPU cores.", ""]
    if d["gpu_name"]:
        lines += [f"GPU: {d['gpu_count']} x {d['gpu_name']}, {d['gpu_memory_gib']} GiB, compute "
                  f"capability {d['capability']}, native bf16: {d['bf16_native']}.", ""]
    else:
        lines += ["GPU: none (device cpu).", ""]
    lines += ["## Epoch time at batch 64 (train 40,000 + validate 10,000 images)", "",
              "| model | precision | compiled | train images/s | epoch s | warm-up s |",
              "|---|---|---|---:|---:|---:|"]
    for r in s["epochs"]:
        lines.append(f"| {r['model']} | {r['precision']} | {'yes' if r['compiled'] else 'no'} | "
                     f"{r['train_images_per_second']:.0f} | {r['cifar_epoch_seconds']:.2f} | "
                     f"{r['warmup_seconds']:.1f} |")
    lines += ["", "## Jobs side by side (ModifiedNet, through `src/train.py -m`)", "",
              "| jobs/GPU | jobs | finished | wall s | images/s (span) | images/s (sum) | "
              "GPU util mean/max % | GPU memory max MiB |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in s["jobs"]:
        f = [f"{r[k]:.0f}" if r.get(k) is not None else "n/a" for k in (
            "images_per_second_span", "images_per_second_sum", "gpu_util_mean", "gpu_util_max",
            "gpu_memory_max_mib")]
        lines.append(f"| {r['jobs_per_gpu']} | {r['jobs']} | {r['finished']} | {r['wall_seconds']} | "
                     f"{f[0]} | {f[1]} | {f[2]}/{f[3]} | {f[4]} |")
    fast = s.get("fast_modifiednet", {})
    lines += ["", "## experiment=fast_modifiednet, seed 0", ""]
    if "test_accuracy" in fast:
        lines.append(f"{fast['epochs']} epoch(s) on {s['data']} data: test accuracy "
                     f"{fast['test_accuracy']:.4f}, {fast['total_seconds']:.0f} s in the job "
                     f"({fast['wall_seconds']:.0f} s with start-up).")
    else:
        lines.append(f"not run: {fast}")
    t = s.get("gpu_tests", {})
    lines += ["", "## Tests marked gpu", "",
              f"{t.get('passed', '?')} passed, {t.get('failures', '?')} failed, "
              f"{t.get('errors', '?')} errors, {t.get('skipped', '?')} skipped "
              f"(exit {t.get('exit', '?')}, {t.get('seconds', '?')} s)." if "exit" in t
              else f"not run: {t}"]
    p = s.get("prediction", {})
    lines += ["", "## Predicted: the four report studies at 300 epochs, 3 seeds", ""]
    if "predicted_hours" in p:
        lines.append(f"{p['runs']} runs ({p['configs']} configs x {p['seeds']} seeds; per study "
                     f"{p['studies']}, the shared baseline once): {p['one_job_at_a_time_hours']:.2f} h "
                     f"one job at a time; with {p['best_jobs_per_gpu']} jobs per GPU "
                     f"({p['side_by_side_speedup']:.2f}x) on {p['gpus']} GPU(s): "
                     f"**{p['predicted_hours']:.2f} h**.")
    else:
        lines.append(f"not predicted: {p}")
    if s["skipped"]:
        lines += ["", "Skipped or failed: " + "; ".join(s["skipped"])]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry", action="store_true", help="on the CPU, tiny sizes")
    parser.add_argument("--out", default=str(ROOT / "bench_results" / "gpu_check"))
    parser.add_argument("--data-root", help="CIFAR-10's python release (cifar-10-batches-py or "
                        "its tar.gz inside) for the fast_modifiednet run; else synthetic data")
    parser.add_argument("--budget", type=float, default=480, help="seconds, all steps together")
    parser.add_argument("--jobs", type=int, nargs="+", help="jobs per GPU to try (1 2 4 8)")
    args = parser.parse_args()

    budget = Budget(args.budget)
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    t0 = time.perf_counter()
    out = Path(args.out).resolve()
    scratch = out / "scratch"
    shutil.rmtree(scratch, ignore_errors=True)  # ours alone: a second run starts clean
    scratch.mkdir(parents=True)
    if args.dry:
        # one sweep of each kind: on a CPU each start-up of the entrypoint costs 10-20 s
        device, jobs_counts, sweep_epochs = "cpu", args.jobs or [2], 1
        epoch_data = ["data=synthetic", "data.source.num_train=160", "data.source.num_test=32",
                      "trainer.num_threads=1"]
        sweep_data = ["data=synthetic", "data.source.num_train=400", "data.source.num_test=64"]
        # jobs one by one in the sweep's process: on a CPU, starting joblib's workers costs
        # half a minute, and the launcher's n_jobs has its own test (test_gpu_path.py)
        sweep_data.append("hydra/launcher=basic")
        fast_data, warmup, models_fp = sweep_data[:3], 32, ["modified_net"]
    else:
        if not torch.cuda.is_available():
            print("error: no CUDA device here; --dry runs the check on the CPU", file=sys.stderr)
            return 2
        device, jobs_counts, sweep_epochs = "cuda", args.jobs or [1, 2, 4, 8], 3
        epoch_data = ["data=synthetic", "data.source.num_train=50000", "data.source.num_test=1000"]
        sweep_data = ["data=synthetic", "data.source.num_train=20000", "data.source.num_test=1000"]
        fast_data = ([f"data.root={Path(args.data_root).resolve()}", "data.download=false"]
                     if args.data_root else ["data=synthetic", "data.source.num_train=50000",
                                             "data.source.num_test=10000"])
        warmup, models_fp = 3200, ["modified_net", "origin_net"]
    summary = {"dry": args.dry, "started": started, "data": "CIFAR-10" if args.data_root and not
               args.dry else "synthetic", "device": device_info(device), "epochs": [], "jobs": [],
               "skipped": [], "step_seconds": {}}
    gpus = summary["device"]["gpu_count"]

    def step(name: str, need: float, fn):
        if budget.left() < need:
            summary["skipped"].append(f"{name} (budget spent: needs about {need:.0f} s, "
                                      f"{budget.left():.0f} s left)")
            return None
        print(f"[gpu_check] {name} ...", flush=True)
        start = time.perf_counter()
        try:
            return fn()
        except Exception as exc:  # one step failing must not lose the others' figures
            summary["skipped"].append(f"{name} failed: {type(exc).__name__}: {exc}")
            return None
        finally:
            summary["step_seconds"][name] = round(time.perf_counter() - start, 1)

    # 2: fp32 and bf16 of ModifiedNet (and OriginNet), then every arch model at `auto`
    for model in models_fp:
        for precision in ("fp32", "bf16"):
            row = step(f"epoch {model} {precision}", 10,
                       lambda m=model, p=precision: epoch_time(m, p, False, epoch_data, device, warmup))
            if row:
                summary["epochs"].append(row)
    auto = "bf16" if summary["device"]["bf16_native"] else "fp32"
    for model in ARCH_MODELS:
        done = [r for r in summary["epochs"] if r["model"] == model and r["precision"] == auto]
        row = done[0] if done else step(f"epoch {model} auto", 15, lambda m=model: epoch_time(
            m, "auto", False, epoch_data, device, warmup))
        if row:
            row["auto"] = True
            if not done:
                summary["epochs"].append(row)
    # 3: jobs side by side
    for n in jobs_counts:
        row = step(f"{n} jobs per GPU", 30, lambda n=n: jobs_throughput(
            n, gpus, scratch, sweep_data, sweep_epochs, device, budget))
        if row:
            summary["jobs"].append(row)
    # 4, 5
    summary["fast_modifiednet"] = step("experiment=fast_modifiednet", 60 if not args.dry else 10,
                                       lambda: fast_run(scratch, fast_data, args.dry, device, budget)) or {}
    summary["gpu_tests"] = step("tests marked gpu", 60 if not args.dry else 5,
                                lambda: gpu_tests(scratch, budget, "tests/test_gpu_path.py"
                                                  if args.dry else "tests")) or {}
    # 6: compiled (minutes of C++ compilation on a CPU: not in the dry run)
    if args.dry:
        summary["skipped"].append("compiled models (dry run: inductor's CPU compilation takes minutes)")
    else:
        for model in models_fp:
            row = step(f"epoch {model} compiled", 90, lambda m=model: epoch_time(
                m, "auto", True, epoch_data, device, warmup))
            if row:
                summary["epochs"].append(row)
    # 7
    summary["prediction"] = step("prediction", 0, lambda: predict(
        summary["epochs"], summary["jobs"], gpus)) or {}
    summary["seconds"] = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    (out / "summary.md").write_text(markdown(summary))
    print(markdown(summary))
    print(f"[gpu_check] wrote {out / 'summary.json'} and {out / 'summary.md'}")
    ok = (all(j.get("finished") == j["jobs"] for j in summary["jobs"])
          and summary["gpu_tests"].get("exit") == 0
          and "test_accuracy" in summary["fast_modifiednet"]
          and not [x for x in summary["skipped"] if " failed: " in x])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
