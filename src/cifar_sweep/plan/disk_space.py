"""Will a sweep's files fit? Before its first job, the free space of the folders it writes (the
store with its artifacts, the checkpoints) is compared with what its jobs will write there:
clearly too little is one line and exit 2 before any run; a narrow margin, a warning.

What a job writes, from its model's size (fp32 state, as checkpoints and `best_weights.pt` hold
it). Measured on a 1-epoch run of each model, synthetic data, Adam (the optimizer with the most
state), figures on, checkpoint kept, in a fresh folder:
    for m in origin_net modified_net modified_net_ds mobilenet_v2 resnet18; do
      python src/train.py data=synthetic trainer.epochs=1 trainer.num_threads=1 model=$m \\
        optimizer=adam checkpoint.keep=true; done    # then the sizes of checkpoints/, mlruns/
    model            checkpoint   artifacts (best_weights.pt)
    origin_net          803 kB      471 kB  (197 kB)
    modified_net        619 kB      478 kB  (151 kB)
    modified_net_ds     592 kB      511 kB  (144 kB)
    mobilenet_v2       36.4 MB      9.53 MB (9.15 MB)
    resnet18          179.0 MB     45.1 MB  (44.8 MB)
Those artifacts (figures, best_weights.pt, config) came before the run's logged model and its
predictions; the same command again (2026-12-07) added, per run: the logged model, its state and
13-15 kB of MLflow's files (origin_net 203,908 bytes, modified_net 159,545, modified_net_ds
152,987); predictions.npz, 15,500 bytes for synthetic data's 500 test images (281,660 for
CIFAR-10's 10,000); and once per data fingerprint, test_images.npz (1,540,236 bytes for 500).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from cifar_sweep import faults
from cifar_sweep.errors import UserInputError

# A checkpoint holds the model, the best weights so far and the optimizer's state (Adam: two
# tensors per weight): 4 model states, plus the history and RNG states (measured: 13 kB over 4x).
CHECKPOINT_STATES = 4
CHECKPOINT_EXTRA = 64_000
FIGURES = 400_000        # the four PNGs: 258 to 360 kB measured (wrong.png varies)
SMALL_FILES = 10_000     # config.yaml, evaluation.json: 2.4 kB measured
# rows of the store per job (params, tags, metrics): 12 jobs of 3 epochs grew the database by
# 397 kB, 33 kB a job (`python src/train.py -m hydra/launcher=basic data=synthetic
# trainer.epochs=3 tracking.figures=false model=origin_net trainer.seed=0,1,...,11`), with margin
STORE_PER_JOB = 50_000
STORE_PER_EPOCH = 2_000
# A new store's database (954 kB measured) and SQLite's write-ahead log, which grows to about
# 4 MB (1,000 pages) before it is folded back into the database.
STORE_ONCE = 5_000_000
NARROW = 2.0             # less free than this many times the need: a warning
LOGGED_MODEL_EXTRA = 16_000  # tracking.log_model: the state as model.pth, MLmodel and its files
# predictions.npz (tracking/predictions.py): per test image index (int32), label and predicted
# (int16) and a float16 probability per class; the archive's framing measured 1,660 bytes
PREDICTION_BYTES = 4 + 2 + 2
PROBABILITY_BYTES = 2
NPZ_EXTRA = 5_000


@dataclass
class PlannedJob:
    cfg: DictConfig
    fingerprint: str  # of its data: with the config, whether it finished before
    classes: int
    test_examples: int = 0  # its data's test images: one prediction each
    test_pixels: int = 0    # their size in bytes (uint8): test_images.npz, once per fingerprint


def _tests(cfg: DictConfig, test_examples: int) -> bool:
    """Whether the job evaluates a test set (a search's trial skips it: `trainer.skip_test`, a
    key of trials only)."""
    return bool(test_examples) and not cfg.trainer.get("skip_test", False)


def test_images_bytes(cfg: DictConfig, test_examples: int, test_pixels: int) -> int:
    """test_images.npz (tracking/test_images.py), which the first job testing on a data writes
    once into the store: its images (`test_pixels` bytes, uint8), a label (int16) and an index
    (int32) per image, and the archive's framing; none where the job skips the test (a search's
    trial). Counted where the store holds it already too: the estimate errs by that one file."""
    if not _tests(cfg, test_examples):
        return 0
    return test_pixels + test_examples * (2 + 4) + NPZ_EXTRA


def once_per_data(sizes: Iterable[tuple[str, int]]) -> int:
    """What the store gets once per data of a sweep's jobs to train: from (data fingerprint,
    test_images_bytes) pairs, one per job, the largest of each fingerprint, summed."""
    largest: dict[str, int] = {}
    for fingerprint, size in sizes:
        largest[fingerprint] = max(largest.get(fingerprint, 0), size)
    return sum(largest.values())


def _jobs_write(count: int) -> str:
    return "1 job to train writes" if count == 1 else f"{count} jobs to train write"


def model_bytes(cfg: DictConfig, classes: int) -> int:
    """The size of the model's fp32 state (what best_weights.pt holds)."""
    model = OmegaConf.to_container(cfg.model, resolve=True)
    return _state_bytes(json.dumps(model, sort_keys=True, default=str), classes)


@functools.lru_cache
def _state_bytes(model_json: str, classes: int) -> int:
    from cifar_sweep.train.model_build import build_model

    model = build_model(OmegaConf.create(json.loads(model_json)), classes)
    return sum(v.numel() * 4 for v in model.state_dict().values())


def job_writes(cfg: DictConfig, classes: int, test_examples: int = 0) -> tuple[int, int]:
    """(bytes kept in the store, bytes of one checkpoint) of one job, whose data has
    `test_examples` test images (a job that skips the test, a search's trial, predicts none)."""
    state = model_bytes(cfg, classes)
    store = (state + SMALL_FILES + (FIGURES if cfg.tracking.figures else 0) + STORE_PER_JOB
             + STORE_PER_EPOCH * int(cfg.trainer.epochs))
    if cfg.tracking.log_model:
        store += state + LOGGED_MODEL_EXTRA
    if _tests(cfg, test_examples):
        per_image = PREDICTION_BYTES + (PROBABILITY_BYTES * classes
                                        if cfg.tracking.predictions_probabilities else 0)
        store += test_examples * per_image + NPZ_EXTRA
    return store, CHECKPOINT_STATES * state + CHECKPOINT_EXTRA


def _existing(folder: Path) -> Path:
    return next(p for p in (folder, *folder.parents) if p.exists())


def check_sweep(planned: list[PlannedJob], client, concurrent: int,
                trials: int | None = None) -> None:
    """Raise UserInputError when the folders' free space is clearly too little for the jobs
    that will train (not those that finished before); warn when the margin is narrow.
    `trials`: a search's trial count (its planned jobs are its space's corners)."""
    if not planned:
        return
    if trials is not None:  # any trial may be the largest corner
        biggest = max(planned, key=lambda j: model_bytes(j.cfg, j.classes))
        todo = [biggest] * trials
    else:
        todo = [j for j in planned if not _finished(j, client)]
    if todo:  # the sweep's folders are the same for every job
        once = once_per_data((j.fingerprint, test_images_bytes(j.cfg, j.test_examples,
                                                               j.test_pixels)) for j in todo)
        check_writes(todo[0].cfg, [job_writes(j.cfg, j.classes, j.test_examples) for j in todo],
                     concurrent, once)


def check_writes(cfg: DictConfig, writes: list[tuple[int, int]], concurrent: int,
                 once: int = 0) -> None:
    """check_sweep's test, from each job to train's (store bytes, checkpoint bytes), one job's
    config (the folders) and what the store gets once (`once`: the test images of its data)."""
    todo = writes
    checkpoints = sorted((c for _, c in writes), reverse=True)
    # each running job has a checkpoint and, while saving, its temporary copy; kept ones stay
    need_checkpoints = 2 * sum(checkpoints[:concurrent])
    if cfg.checkpoint.keep:
        need_checkpoints += sum(checkpoints[concurrent:])
    need: dict[Path, int] = {}
    where: dict[Path, list[str]] = {}
    folders = dict(faults.write_folders(cfg))
    parts = [("checkpoint.dir", need_checkpoints)]
    if "tracking.uri" in folders:  # a server keeps its own files
        parts.append(("tracking.uri", STORE_ONCE + once + sum(s for s, _ in writes)))
    for setting, size in parts:
        existing = _existing(folders[setting])
        # folders on one file system share its free space
        device = next((d for d in need if os.stat(d).st_dev == os.stat(existing).st_dev),
                      existing)
        need[device] = need.get(device, 0) + size
        where.setdefault(device, []).append(f"{setting}={folders[setting]}")
    for device, size in need.items():
        free = shutil.disk_usage(device).free
        names = " and ".join(where[device])
        if free < size:
            raise UserInputError(
                f"not enough free space for this sweep: {names} has {_mb(free)} free, and its "
                f"{_jobs_write(len(todo))} about {_mb(size)} there; free space there, "
                f"point the folder elsewhere, or sweep fewer jobs")
        if free < NARROW * size:
            print(f"warning: narrow free space: {names} has {_mb(free)} free, and this sweep's "
                  f"{_jobs_write(len(todo))} about {_mb(size)} there; a full disk stops "
                  f"the sweep (the same command then continues it)", file=sys.stderr)


def _finished(job: PlannedJob, client) -> bool:
    """What the job's decision will say (decision.py): a finished run it reuses writes nothing."""
    from cifar_sweep.plan.decision import finished_before
    from cifar_sweep.plan.identity import identify_ahead

    if job.cfg.trainer.rerun:
        return False
    return finished_before(job.cfg, identify_ahead(job.cfg, job.fingerprint), client)[0] is not None


def _mb(size: float) -> str:
    return f"{size / 1e6:.1f} MB"
