"""A researcher's own data: CIFAR-100 beside CIFAR-10 (the same python release format, from files
the tests generate), image folders of another size and class count, and data files that are
read without running code (a batch whose pickle would run a command is refused, unrun). The jobs
of `src/train.py` run in this process (`project.job`)."""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cifar_sweep import data
from cifar_sweep.data import Cifar10Source, Cifar100Source, load_dataset, safe_pickle
from cifar_sweep.errors import UserInputError

FINE = [f"fine{i}" for i in range(100)]  # not CIFAR-100's names: the test sees they come from meta


@pytest.fixture(autouse=True)
def fresh_memory(monkeypatch):
    monkeypatch.setattr(data.cache, "_in_process", {})


def cifar100_batch(n: int, first: int) -> dict:
    """n images; image k has fine label (first + k) % 100 and R plane value (first + k) % 256."""
    rows = np.zeros((n, 3072), dtype=np.uint8)
    for k in range(n):
        rows[k, :1024] = (first + k) % 256
    fine = [(first + k) % 100 for k in range(n)]
    return {"filenames": [f"img_{first + k}.png" for k in range(n)], "batch_label": "b",
            "fine_labels": fine, "coarse_labels": [f // 5 for f in fine], "data": rows}


def write_tar(archive: Path, folder: str, files: dict[str, bytes]) -> Path:
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        for name, blob in files.items():
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return archive


def make_cifar100_archive(root: Path, train: bytes | None = None) -> Path:
    files = {"train": train or pickle.dumps(cifar100_batch(200, 0), protocol=2),
             "test": pickle.dumps(cifar100_batch(100, 1000), protocol=2),
             "meta": pickle.dumps({"fine_label_names": FINE,
                                   "coarse_label_names": [f"coarse{i}" for i in range(20)]},
                                  protocol=2)}
    return write_tar(root / "cifar-100-python.tar.gz", "cifar-100-python", files)


class RunsACommand:
    """A pickle that, loaded by `pickle.load`, would run a shell command."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_cifar100_archive_is_decoded_with_its_100_fine_classes(tmp_path):
    make_cifar100_archive(tmp_path / "root")
    ds = load_dataset(Cifar100Source(str(tmp_path / "root"), download=False), str(tmp_path / "cache"))
    assert ds.fingerprint.startswith("cifar100-")
    assert ds.classes == FINE
    assert ds.train.images.shape == (200, 3, 32, 32) and ds.test.images.shape == (100, 3, 32, 32)
    assert ds.train.labels.tolist() == [k % 100 for k in range(200)]
    assert ds.test.labels.tolist() == [(1000 + k) % 100 for k in range(100)]
    assert ds.train.images[37, 0, 5, 5] == 37 and ds.train.images[37, 1:].max() == 0


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_the_release_format_loads_at_any_protocol(protocol):
    batch = cifar100_batch(3, 0)
    again = safe_pickle.load(io.BytesIO(pickle.dumps(batch, protocol=protocol)))
    assert again["fine_labels"] == batch["fine_labels"] and (again["data"] == batch["data"]).all()


def test_a_pickle_that_would_run_code_is_refused_unrun(tmp_path):
    marker = tmp_path / "ran"
    blob = pickle.dumps(RunsACommand(f"touch {marker}"), protocol=2)
    with pytest.raises(safe_pickle.RefusedPickle, match=r"would call (posix|os)\.system"):
        safe_pickle.load(io.BytesIO(blob))
    assert not marker.exists()
    # the same through the CIFAR-10 source, as a batch file of the release
    folder = tmp_path / "c10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in Cifar10Source.batch_files:
        (folder / name).write_bytes(blob)
    with pytest.raises(UserInputError, match=r"data_batch_1 is not CIFAR-10 data: its pickle "
                                             r"would call (posix|os)\.system"):
        load_dataset(Cifar10Source(str(tmp_path / "c10"), download=False), None)
    assert not marker.exists()


@pytest.mark.slow  # over a minute on the 2-core CPU: make test-full (a default test covers its core)
def test_entrypoint_trains_on_cifar100_with_100_outputs(project):
    root = project.workdir / "c100"
    make_cifar100_archive(root)
    proc = project.job("data=cifar100", f"data.root={root}", "data.download=false",
                       "hydra/launcher=basic")
    assert proc.returncode == 0, proc.stderr
    [run] = project.runs()
    assert run.info.status == "FINISHED"
    assert run.data.tags["data_fingerprint"].startswith("cifar100-")
    # one per-class accuracy for each of the 100 classes: the model had 100 outputs
    per_class = {k for k in run.data.metrics if k.startswith("test_accuracy_fine")}
    assert per_class == {f"test_accuracy_{c}" for c in FINE}


def test_entrypoint_refuses_a_batch_that_would_run_a_command(project):
    root, marker = project.workdir / "c100", project.workdir / "ran"
    make_cifar100_archive(root, train=pickle.dumps(RunsACommand(f"touch {marker}"), protocol=2))
    proc = project.job("data=cifar100", f"data.root={root}", "data.download=false",
                       "hydra/launcher=basic")
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "cifar-100-python/train is not CIFAR-100 data: its pickle would call" in lines[0]
    assert not marker.exists() and project.runs() == []


# --- image folders of any size and class count ----------------------------------------------------

def make_image_folder(root: Path, classes: list[str], size: int, per_class: int = 4) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for label, cls in enumerate(classes):
            (root / split / cls).mkdir(parents=True)
            for i in range(per_class):
                pixels = np.full((size, size, 3), 40 + 80 * label, dtype=np.uint8)
                pixels += rng.integers(0, 20, pixels.shape, dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / cls / f"{i}.png")


def test_entrypoint_image_folder_of_another_size_and_class_count(project):
    classes = ["ant", "bee", "wasp"]
    make_image_folder(project.workdir / "imgs", classes, size=20)
    proc = project.job("data=image_folder", "data.root=imgs", "data.image_size=20",
                       "model=resnet18", "hydra/launcher=basic", "trainer.batch_size=4")
    assert proc.returncode == 0, proc.stderr
    [run] = project.runs()
    assert run.info.status == "FINISHED"
    assert {k for k in run.data.metrics if k.startswith("test_accuracy_")} == {
        f"test_accuracy_{c}" for c in classes}


def test_entrypoint_model_that_cannot_take_the_size_is_one_line_and_no_run(project):
    make_image_folder(project.workdir / "imgs", ["ant", "bee", "wasp"], size=20)
    proc = project.job("data=image_folder", "data.root=imgs", "data.image_size=48",
                       "model=modified_net")
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: model cifar_sweep.models.ModifiedNet cannot take "
                               "data=image_folder's images of 3x48x48"), proc.stderr
    assert project.runs() == []
