"""Data sources on real files: the CIFAR-10 python release's format from a tiny generated archive,
image folders with a corrupt JPEG, damaged and unwritable caches; in-process, as jobs of the
entrypoint run in this process (`project.job`), and one case of each fault through the command
(one `error: ` line, exit 2, no run)."""

from __future__ import annotations

import io
import logging
import pickle
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cifar_sweep import data
from cifar_sweep.data import Cifar10Source, ImageFolderSource, load_dataset
from cifar_sweep.errors import UserInputError

PER_BATCH = 20  # images per batch file: 100 training, 20 test images
# not CIFAR-10's names, so that a test can tell they came from batches.meta
LABEL_NAMES = [f"kind{i}" for i in range(10)]


@pytest.fixture(autouse=True)
def fresh_memory(monkeypatch):
    """Each test starts without the in-process copies of earlier tests."""
    monkeypatch.setattr(data.cache, "_in_process", {})


def reload(source, cache_dir):
    """load_dataset as a new process would run it: no in-process copy."""
    data.cache._in_process.clear()
    return load_dataset(source, str(cache_dir))


# --- the CIFAR-10 python release -----------------------------------------------------------------

def cifar_batch(first: int, label: str) -> dict:
    """PER_BATCH images; image k (global index first + k) has label k % 10 and pixel values
    that say which image and plane they are: R = k, G = 100 + k, B = 200 - k, except two below."""
    n = PER_BATCH
    rows = np.zeros((n, 3072), dtype=np.uint8)
    for k in range(n):
        rows[k, :1024], rows[k, 1024:2048], rows[k, 2048:] = (first + k) % 256, (100 + first + k) % 256, (200 - first - k) % 256
    if first == 0:
        rows[0] = 0
        rows[0, :1024] = 255                        # image 0: pure red (the R plane comes first)
        rows[1, :1024] = np.arange(1024) % 256      # image 1: R rises along each row, row-major
    return {"batch_label": label, "labels": [(first + k) % 10 for k in range(n)],
            "data": rows, "filenames": [f"img_{first + k}.png" for k in range(n)]}


def make_cifar_archive(folder: Path, meta: bool = True) -> Path:
    files = {f"data_batch_{i + 1}": cifar_batch(i * PER_BATCH, f"training batch {i + 1} of 5")
             for i in range(5)}
    files["test_batch"] = cifar_batch(1000, "testing batch 1 of 1")
    if meta:
        files["batches.meta"] = {"label_names": LABEL_NAMES, "num_cases_per_batch": PER_BATCH,
                                 "num_vis": 3072}
    folder.mkdir(parents=True, exist_ok=True)
    archive = folder / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, obj in files.items():
            blob = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return archive


def test_cifar10_archive_is_extracted_and_decoded(tmp_path):
    make_cifar_archive(tmp_path / "root")
    ds = load_dataset(Cifar10Source(str(tmp_path / "root"), download=False), str(tmp_path / "cache"))
    assert (tmp_path / "root" / "cifar-10-batches-py" / "data_batch_5").is_file()
    assert not list((tmp_path / "root").glob(".extract-*"))  # the temp folder is gone
    assert ds.cache == "decoded" and ds.fingerprint.startswith("cifar10-")
    assert ds.train.images.shape == (100, 3, 32, 32) and ds.train.images.dtype == torch.uint8
    assert ds.test.images.shape == (20, 3, 32, 32)
    assert ds.classes == LABEL_NAMES  # from batches.meta
    red = ds.train.images[0]
    assert (red[0] == 255).all() and (red[1:] == 0).all()
    ramp = ds.train.images[1, 0]
    assert ramp[0, :3].tolist() == [0, 1, 2] and ramp[1, 0] == 32  # rows of 32, row after row
    # batches in order 1..5, then each image's planes where they belong
    assert ds.train.images[45, :, 0, 0].tolist() == [45, 145, 155]
    assert ds.train.labels.tolist() == [k % 10 for k in range(100)]
    assert ds.test.images[3, :, 5, 5].tolist() == [1003 % 256, 1103 % 256, (200 - 1003) % 256]
    assert ds.test.labels.tolist() == [(1000 + k) % 10 for k in range(20)]

    again = reload(Cifar10Source(str(tmp_path / "root"), download=False), tmp_path / "cache")
    assert again.cache == "disk" and again.fingerprint == ds.fingerprint
    assert again.classes == LABEL_NAMES and (again.train.images == ds.train.images).all()


def test_cifar10_without_meta_has_cifar10_class_order(tmp_path):
    make_cifar_archive(tmp_path, meta=False)
    ds = load_dataset(Cifar10Source(str(tmp_path), download=False), None)
    assert ds.classes == data.CIFAR10_CLASSES


def test_truncated_archive_is_one_line_naming_it(tmp_path):
    archive = make_cifar_archive(tmp_path)
    blob = archive.read_bytes()
    archive.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(UserInputError) as info:
        load_dataset(Cifar10Source(str(tmp_path), download=False), None)
    message = str(info.value)
    assert "\n" not in message and str(archive) in message and "damaged or truncated" in message
    # nothing half-extracted that a later run would take for complete
    assert not list(tmp_path.glob(".extract-*"))
    assert not (tmp_path / "cifar-10-batches-py" / "test_batch").exists()


def test_missing_batch_file_is_named(tmp_path):
    make_cifar_archive(tmp_path)
    Cifar10Source(str(tmp_path), download=False).fingerprint()  # extracts
    (tmp_path / "cifar-10-python.tar.gz").unlink()
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(UserInputError, match=r"cifar-10-batches-py/data_batch_3 is missing"):
        load_dataset(Cifar10Source(str(tmp_path), download=False), None)


def test_damaged_batch_file_is_named(tmp_path):
    make_cifar_archive(tmp_path)
    Cifar10Source(str(tmp_path), download=False).fingerprint()
    (tmp_path / "cifar-10-batches-py" / "data_batch_2").write_bytes(b"\x80\x02not a pickle")
    with pytest.raises(UserInputError, match=r"cannot read .*data_batch_2 .*delete"):
        load_dataset(Cifar10Source(str(tmp_path), download=False), None)


def test_no_cifar10_offline_is_the_usual_message(tmp_path):
    with pytest.raises(UserInputError, match=r"no CIFAR-10 found and data.download=false"):
        load_dataset(Cifar10Source(str(tmp_path), download=False), None)


# --- the entrypoint with data=cifar10 -------------------------------------------------------------

def train_cifar10(project, root: Path, command: bool = False):
    """One job on the CIFAR-10 copy at `root`: in this process, or with `command` through
    `python src/train.py`."""
    overrides = ("data=cifar10", f"data.root={root}", f"data.cache_dir={root}/cache",
                 "data.download=false", "hydra/launcher=basic")
    if command:
        return project.train(*overrides, timeout=120)
    return project.job(*overrides)


def test_entrypoint_trains_on_the_cifar10_archive(project):
    root = project.workdir / "c10"
    make_cifar_archive(root)
    proc = train_cifar10(project, root)
    assert proc.returncode == 0, proc.stderr
    [run] = project.runs()
    assert run.info.status == "FINISHED"
    assert run.data.tags["data_fingerprint"].startswith("cifar10-")
    assert "test_accuracy_kind3" in run.data.metrics  # class names from batches.meta
    assert list((root / "cache").glob("cifar10-*.pt"))


def break_archive(root: Path) -> None:
    archive = make_cifar_archive(root)
    archive.write_bytes(archive.read_bytes()[:300])


def drop_a_batch(root: Path) -> None:
    make_cifar_archive(root)
    Cifar10Source(str(root), download=False).fingerprint()
    (root / "cifar-10-python.tar.gz").unlink()
    (root / "cifar-10-batches-py" / "data_batch_4").unlink()


# `command`: the case run through `python src/train.py` (no CIFAR-10 found, the one a user meets
# most), so that the command's stderr is checked to be that one line; the others in-process
@pytest.mark.parametrize("prepare, message, command", [
    (break_archive, "cifar-10-python.tar.gz is damaged or truncated", False),
    pytest.param(drop_a_batch, "cifar-10-batches-py/data_batch_4 is missing", False,
                 marks=pytest.mark.slow),
    pytest.param(lambda root: root.mkdir(), "no CIFAR-10 found and data.download=false", True,
                 marks=pytest.mark.slow),
])
def test_entrypoint_bad_cifar10_is_one_line_and_no_run(project, prepare, message, command):
    root = project.workdir / "c10"
    prepare(root)
    proc = train_cifar10(project, root, command)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr
    assert project.runs() == []


# --- image folders ------------------------------------------------------------------------------

CLASSES = ["cat", "dog"]


def make_image_folder(root: Path, per_class: int = 3) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for label, cls in enumerate(CLASSES):
            (root / split / cls).mkdir(parents=True)
            for i in range(per_class):
                pixels = np.full((32, 32, 3), 60 + 120 * label, dtype=np.uint8)
                pixels += rng.integers(0, 20, pixels.shape, dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / cls / f"{i}.jpg", quality=95)


def test_image_folder_decodes_with_labels_by_class_name(tmp_path):
    make_image_folder(tmp_path / "imgs")
    ds = load_dataset(ImageFolderSource(str(tmp_path / "imgs")), str(tmp_path / "cache"))
    assert ds.classes == CLASSES and ds.fingerprint.startswith("image_folder-")
    assert ds.train.images.shape == (6, 3, 32, 32) and ds.train.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert abs(ds.train.images[0].float().mean() - 70) < 5 and abs(ds.train.images[5].float().mean() - 190) < 5


def test_warm_load_reads_no_image_file(tmp_path, monkeypatch):
    make_image_folder(tmp_path / "imgs")
    cold = load_dataset(ImageFolderSource(str(tmp_path / "imgs")), str(tmp_path / "cache"))
    assert (tmp_path / "cache" / "index.json").is_file()

    def no_reading(*args, **kwargs):
        raise AssertionError("a warm load read an image file")

    monkeypatch.setattr(Path, "read_bytes", no_reading)
    monkeypatch.setattr("torchvision.io.read_file", no_reading)
    warm = reload(ImageFolderSource(str(tmp_path / "imgs")), tmp_path / "cache")
    assert warm.cache == "disk" and warm.fingerprint == cold.fingerprint


def test_key_is_a_content_hash(tmp_path):
    make_image_folder(tmp_path / "a")
    first = load_dataset(ImageFolderSource(str(tmp_path / "a")), str(tmp_path / "cache"))
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # the same images at another path
    copy = reload(ImageFolderSource(str(tmp_path / "b")), tmp_path / "cache")
    assert copy.fingerprint == first.fingerprint and copy.cache == "disk"
    (tmp_path / "b" / "test" / "dog" / "0.jpg").touch()  # a new mtime, the same bytes
    assert reload(ImageFolderSource(str(tmp_path / "b")), tmp_path / "cache").fingerprint == first.fingerprint
    shutil.copy(tmp_path / "a" / "train" / "cat" / "0.jpg", tmp_path / "b" / "test" / "dog" / "0.jpg")
    assert reload(ImageFolderSource(str(tmp_path / "b")), tmp_path / "cache").fingerprint != first.fingerprint
    resized = reload(ImageFolderSource(str(tmp_path / "a"), image_size=16), tmp_path / "cache")
    assert resized.fingerprint != first.fingerprint and resized.train.images.shape[-1] == 16


def add_corrupt(root: Path) -> Path:
    bad = root / "train" / "dog" / "broken.jpg"
    bad.write_bytes(b"this is not a jpeg")
    return bad


def test_corrupt_image_stops_with_its_path(tmp_path):
    make_image_folder(tmp_path / "imgs")
    bad = add_corrupt(tmp_path / "imgs")
    for _ in range(2):  # the second time the index already knows, without decoding again
        with pytest.raises(UserInputError) as info:
            reload(ImageFolderSource(str(tmp_path / "imgs")), tmp_path / "cache")
        message = str(info.value)
        assert "\n" not in message and str(bad) in message and "data.skip_corrupt=true" in message


def test_skip_corrupt_skips_warns_and_changes_the_key(tmp_path, caplog):
    make_image_folder(tmp_path / "imgs")
    clean = load_dataset(ImageFolderSource(str(tmp_path / "imgs")), str(tmp_path / "cache"))
    also_clean = reload(ImageFolderSource(str(tmp_path / "imgs"), skip_corrupt=True), tmp_path / "cache")
    assert also_clean.fingerprint == clean.fingerprint  # nothing skipped: the same data, one key

    add_corrupt(tmp_path / "imgs")
    with caplog.at_level(logging.WARNING, logger="cifar_sweep.data"):
        skipped = reload(ImageFolderSource(str(tmp_path / "imgs"), skip_corrupt=True), tmp_path / "cache")
    assert len(skipped.train) == 6 and skipped.train.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert skipped.fingerprint != clean.fingerprint
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "skipped 1 image" in warning and "train/dog/broken.jpg" in warning
    # the cache made by skipping is never used by a run that does not skip
    with pytest.raises(UserInputError, match="broken.jpg"):
        reload(ImageFolderSource(str(tmp_path / "imgs")), tmp_path / "cache")
    warm = reload(ImageFolderSource(str(tmp_path / "imgs"), skip_corrupt=True), tmp_path / "cache")
    assert warm.cache == "disk" and warm.fingerprint == skipped.fingerprint


def test_damaged_cache_file_is_rebuilt(tmp_path, caplog):
    make_image_folder(tmp_path / "imgs")
    first = load_dataset(ImageFolderSource(str(tmp_path / "imgs")), str(tmp_path / "cache"))
    [cache_file] = (tmp_path / "cache").glob("image_folder-*.pt")
    blob = cache_file.read_bytes()
    cache_file.write_bytes(blob[: len(blob) // 2])
    with caplog.at_level(logging.WARNING, logger="cifar_sweep.data"):
        again = reload(ImageFolderSource(str(tmp_path / "imgs")), tmp_path / "cache")
    assert again.cache == "decoded" and (again.train.images == first.train.images).all()
    assert any(str(cache_file) in r.getMessage() and "damaged" in r.getMessage() for r in caplog.records)
    assert cache_file.read_bytes() != blob[: len(blob) // 2]  # written again, whole
    assert reload(ImageFolderSource(str(tmp_path / "imgs")), tmp_path / "cache").cache == "disk"


def test_damaged_index_is_rebuilt(tmp_path):
    make_image_folder(tmp_path / "imgs")
    first = load_dataset(ImageFolderSource(str(tmp_path / "imgs")), str(tmp_path / "cache"))
    (tmp_path / "cache" / "index.json").write_text("{not json")
    again = reload(ImageFolderSource(str(tmp_path / "imgs")), tmp_path / "cache")
    assert again.fingerprint == first.fingerprint and again.cache == "disk"


def test_unwritable_cache_folder_is_one_line(tmp_path):
    make_image_folder(tmp_path / "imgs")
    (tmp_path / "a_file").write_text("")  # tests may run as root: a file in the path fails for anyone
    cache = tmp_path / "a_file" / "cache"
    with pytest.raises(UserInputError) as info:
        load_dataset(ImageFolderSource(str(tmp_path / "imgs")), str(cache))
    assert str(info.value).startswith(f"data.cache_dir={cache} is not writable")


# `command`: the unwritable cache folder runs through `python src/train.py` (the command's stderr
# checked to be that one line); the corrupt image in-process
@pytest.mark.parametrize("overrides, message, command", [
    ([], "broken.jpg", False),
    pytest.param(["data.cache_dir=a_file/cache", "data.skip_corrupt=true"], "data.cache_dir=a_file/cache is not writable", True, marks=pytest.mark.slow),
])
def test_entrypoint_image_folder_faults_are_one_line(project, overrides, message, command):
    make_image_folder(project.workdir / "imgs")
    add_corrupt(project.workdir / "imgs")
    (project.workdir / "a_file").write_text("")
    overrides = ["data=image_folder", "data.root=imgs", "hydra/launcher=basic", *overrides]
    proc = project.train(*overrides, timeout=120) if command else project.job(*overrides)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr
    assert project.runs() == []
