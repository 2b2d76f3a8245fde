"""Run identity across code changes: the same images give the same data fingerprint, cache file
and config hash as the code that made the existing runs and caches. A change here re-trains every
finished run of the store and decodes every cache again, so the literals below never change.

The literals were computed by the pre-split code (`src/cifar_sweep/data.py` as one module, commit
d04a399) on the files these tests write; they must never change.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from cifar_sweep import data
from cifar_sweep.data import Cifar10Source, ImageFolderSource, SyntheticSource, load_dataset
from cifar_sweep.plan.identity import config_hash, setting_hash
from conftest import ROOT

# computed by the pre-split code (commit d04a399); must never change
SYNTHETIC_FINGERPRINT = "500c68d943a2715674354f25af871926c710c22a45056fa17e311bae1535c5c0"
IMAGE_FOLDER_FINGERPRINT = "65f0e4ce8a52004f1a41a0569f03e8d65656be8c9fddc24504480f326958eab0"
IMAGE_FOLDER_SKIPPED_FINGERPRINT = "f1dcb3c32676aac3ac641abcb43655421dc5e52396bfebd2b784d53b08199aef"
CIFAR10_FINGERPRINT = "77ae08287594a57c6b6312554e698c375bbb9af14965223448b53d91044589cc"
IMAGE_FOLDER_CACHE_FILE = "image_folder-65f0e4ce8a52004f1a41.pt"
# the tags of a 1-epoch synthetic run on the CPU (FAST below), as `make train` records them
SYNTHETIC_DATA_TAG = "synthetic-500c68d943a271567435"
SYNTHETIC_CONFIG_HASH = "dcf7841337243af6"
SYNTHETIC_SETTING_HASH = "3234ebab9cd389d5"
IMAGE_FOLDER_CONFIG_HASH = "ce9d27fb1e61e62e"

FAST = ["data=synthetic", "trainer.epochs=1", "trainer.num_threads=1", "trainer.device=cpu",
        "hydra/launcher=basic", "tracking.figures=false"]


def png(pixels: bytes, size: int) -> bytes:
    """An RGB PNG written byte by byte (stored, uncompressed deflate blocks), so that its bytes
    do not depend on the version of an image library or of zlib's compressor."""
    raw = b"".join(b"\0" + pixels[row * size * 3:(row + 1) * size * 3] for row in range(size))
    assert len(raw) < 65536  # one stored block
    deflate = b"\x78\x01" + b"\x01" + struct.pack("<HH", len(raw), len(raw) ^ 0xFFFF) + raw \
        + struct.pack(">I", zlib.adler32(raw))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", deflate) + chunk(b"IEND", b"")


def image(k: int, size: int = 32) -> bytes:
    """Image k: a gradient whose slope and offset say which image it is."""
    return png(bytes((x * (k + 1) + y * 3 + c * 80 + k * 17) % 256
                     for y in range(size) for x in range(size) for c in range(3)), size)


def make_image_folder(root: Path, corrupt: bool = False) -> Path:
    """Two classes, 3 training and 2 test images each (one 16 px, resized on decoding); with
    `corrupt`, a file that is no image."""
    k = 0
    for split, per_class in (("train", 3), ("test", 2)):
        for cls in ("cat", "dog"):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(per_class):
                (folder / f"img{i}.png").write_bytes(image(k, 16 if k == 4 else 32))
                k += 1
    if corrupt:
        (root / "train" / "dog" / "broken.png").write_bytes(b"not a png at all")
    return root


@pytest.fixture(autouse=True)
def fresh_memory(monkeypatch):
    monkeypatch.setattr(data.cache, "_in_process", {})


def compose_config(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def test_the_images_decode(tmp_path):
    """The test's hand-written PNGs are real images: the fingerprint below is of decodable data."""
    train, test, classes = ImageFolderSource(str(make_image_folder(tmp_path))).decode()
    assert (len(train), len(test), classes) == (6, 4, ["cat", "dog"])
    assert train.images.shape == (6, 3, 32, 32)
    assert train.images[0, :, 0, 1].tolist() == [(1 + 0) % 256, (1 + 80) % 256, (1 + 160) % 256]


def test_synthetic_fingerprint_is_unchanged():
    assert SyntheticSource().fingerprint() == SYNTHETIC_FINGERPRINT
    assert SYNTHETIC_DATA_TAG == f"synthetic-{SYNTHETIC_FINGERPRINT[:20]}"


def test_image_folder_fingerprint_and_cache_file_are_unchanged(tmp_path):
    """At another path the same images give the same fingerprint; the cache file is named by it."""
    for where in ("a", "b/c"):
        root = make_image_folder(tmp_path / "data" / where)
        assert ImageFolderSource(str(root)).fingerprint() == IMAGE_FOLDER_FINGERPRINT
    cache = tmp_path / "cache"
    dataset = load_dataset(ImageFolderSource(str(root)), str(cache))
    assert dataset.fingerprint == IMAGE_FOLDER_CACHE_FILE.removesuffix(".pt")
    assert sorted(p.name for p in cache.iterdir()) == [IMAGE_FOLDER_CACHE_FILE, "index.json"]


def test_skipped_corrupt_image_fingerprint_is_unchanged(tmp_path):
    root = make_image_folder(tmp_path, corrupt=True)
    assert ImageFolderSource(str(root), skip_corrupt=True).fingerprint() == IMAGE_FOLDER_SKIPPED_FINGERPRINT


def test_cifar10_fingerprint_is_unchanged(tmp_path):
    """The CIFAR-10 fingerprint is of the batch files' bytes: it reads them without decoding."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for i, name in enumerate(Cifar10Source.batch_files + ["batches.meta"]):
        (folder / name).write_bytes(bytes(range(i, 256)) * (i + 1))
    assert Cifar10Source(str(tmp_path), download=False).fingerprint() == CIFAR10_FINGERPRINT


def test_a_run_records_the_unchanged_identity(project):
    """A job of `src/train.py` (in-process): the tags by which the store finds a finished run of
    this config."""
    project.job(*FAST, check=True)
    [run] = project.runs()
    tags = run.data.tags
    assert (tags["data_fingerprint"], tags["config_hash"], tags["setting_hash"]) == (
        SYNTHETIC_DATA_TAG, SYNTHETIC_CONFIG_HASH, SYNTHETIC_SETTING_HASH)


def test_config_hashes_are_unchanged(tmp_path):
    cfg = compose_config(*FAST)
    assert config_hash(cfg, SYNTHETIC_DATA_TAG, "cpu", "fp32") == SYNTHETIC_CONFIG_HASH
    assert setting_hash(cfg, SYNTHETIC_DATA_TAG, "cpu", "fp32") == SYNTHETIC_SETTING_HASH
    root = make_image_folder(tmp_path / "images")
    dataset = load_dataset(ImageFolderSource(str(root)), None)
    cfg = compose_config("data=image_folder", f"data.root={root}", "model=origin_net",
                         "optimizer=adam", "lr.value=0.001", "trainer.seed=3")
    assert config_hash(cfg, dataset.fingerprint, "cpu", "fp32") == IMAGE_FOLDER_CONFIG_HASH
