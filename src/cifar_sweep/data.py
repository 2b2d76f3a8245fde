"""Data sources decoded once into uint8 tensors (N x 3 x 32 x 32), cached on disk and in memory.

A source is built by Hydra from `conf/data/*.yaml`; it knows how to fingerprint its content
cheaply and how to decode itself. `load_dataset` turns any source into a `Dataset`, reusing the
in-process copy (jobs of one sweep share it) or the on-disk cache keyed by the fingerprint.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path

import torch

from cifar_sweep.errors import UserInputError

log = logging.getLogger(__name__)

CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}


@dataclass
class Split:
    images: torch.Tensor  # uint8, N x 3 x H x W
    labels: torch.Tensor  # int64, N

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor) -> Split:
        return Split(self.images[index], self.labels[index])

    def to(self, device: torch.device) -> Split:
        return Split(self.images.to(device), self.labels.to(device))


@dataclass
class Dataset:
    train: Split
    test: Split
    classes: list[str]
    fingerprint: str
    cache: str = "decoded"  # how this process got it: decoded, disk, memory


def _sha256_files(paths: list[Path], root: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


class Cifar10Source:
    """The CIFAR-10 python release: downloaded by torchvision, or read offline from `root`."""

    name = "cifar10"
    batch_files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]

    def __init__(self, root: str, download: bool = True):
        self.root = Path(root).expanduser().resolve()
        self.download = download

    @property
    def folder(self) -> Path:
        return self.root / "cifar-10-batches-py"

    def _ensure_present(self) -> None:
        if all((self.folder / f).is_file() for f in self.batch_files):
            return
        archive = self.root / "cifar-10-python.tar.gz"
        if archive.is_file():
            with tarfile.open(archive) as tar:
                tar.extractall(self.root, filter="data")
            return
        if self.download:
            from torchvision.datasets import CIFAR10

            try:
                CIFAR10(str(self.root), train=True, download=True)
                return
            except Exception as exc:  # network errors come in many types
                reason = f"download failed ({type(exc).__name__})"
        else:
            reason = "data.download=false"
        raise UserInputError(
            f"data.root={self.root}: no CIFAR-10 found and {reason}; put cifar-10-python.tar.gz "
            f"or cifar-10-batches-py/ there, or use data=image_folder data.root=<folder>"
        )

    def check(self) -> None:
        """Download problems can only show when loading; nothing to check up front."""

    def fingerprint(self) -> str:
        self._ensure_present()
        return _sha256_files([self.folder / f for f in self.batch_files], self.folder)

    def decode(self) -> tuple[Split, Split, list[str]]:
        def read(files: list[str]) -> Split:
            images, labels = [], []
            for name in files:
                with open(self.folder / name, "rb") as f:
                    batch = pickle.load(f, encoding="latin1")
                images.append(torch.from_numpy(batch["data"]).view(-1, 3, 32, 32))
                labels.append(torch.tensor(batch["labels"], dtype=torch.int64))
            return Split(torch.cat(images), torch.cat(labels))

        return read(self.batch_files[:5]), read(self.batch_files[5:]), list(CIFAR10_CLASSES)


class ImageFolderSource:
    """`root/train/<class>/*` and `root/test/<class>/*`; classes sorted by name give the labels."""

    name = "image_folder"

    def __init__(self, root: str, image_size: int = 32):
        self.root = Path(root).expanduser().resolve()
        self.image_size = image_size

    def _files(self) -> tuple[list[str], dict[str, list[tuple[Path, int]]]]:
        self.check()
        classes = sorted(p.name for p in (self.root / "train").iterdir() if p.is_dir())
        if not classes:
            raise UserInputError(f"data.root={self.root}: train/ holds no class folders")
        files: dict[str, list[tuple[Path, int]]] = {}
        for split in ("train", "test"):
            files[split] = [
                (path, label)
                for label, cls in enumerate(classes)
                for path in sorted((self.root / split / cls).glob("*"))
                if path.suffix.lower() in IMAGE_SUFFIXES
            ]
            if not files[split]:
                raise UserInputError(f"data.root={self.root}: {split}/ holds no images")
        return classes, files

    def check(self) -> None:
        for split in ("train", "test"):
            if not (self.root / split).is_dir():
                raise UserInputError(
                    f"data.root={self.root}: no '{split}/' folder there; expected "
                    f"<root>/train/<class>/*.jpg and <root>/test/<class>/*.jpg"
                )

    def fingerprint(self) -> str:
        _, files = self._files()
        paths = [p for split in ("train", "test") for p, _ in files[split]]
        return _sha256_files(paths, self.root) + f"-{self.image_size}px"

    def decode(self) -> tuple[Split, Split, list[str]]:
        from torchvision.io import ImageReadMode, decode_image, read_file

        classes, files = self._files()
        size = self.image_size

        def read(entries: list[tuple[Path, int]]) -> Split:
            images = torch.empty(len(entries), 3, size, size, dtype=torch.uint8)
            for i, (path, _) in enumerate(entries):
                image = decode_image(read_file(str(path)), mode=ImageReadMode.RGB)
                if image.shape[-2:] != (size, size):
                    image = torch.nn.functional.interpolate(
                        image[None].float(), size=(size, size), mode="bilinear", antialias=True
                    )[0].round().clamp(0, 255).to(torch.uint8)
                images[i] = image
            labels = torch.tensor([label for _, label in entries], dtype=torch.int64)
            return Split(images, labels)

        return read(files["train"]), read(files["test"]), classes


class SyntheticSource:
    """Generated images whose class sets a smooth colour pattern: learnable within a few epochs."""

    name = "synthetic"

    def __init__(
        self, num_train: int = 2000, num_test: int = 500, num_classes: int = 10,
        noise: float = 40.0, seed: int = 0, image_size: int = 32,
    ):
        self.num_train, self.num_test, self.num_classes = num_train, num_test, num_classes
        self.noise, self.seed, self.image_size = noise, seed, image_size

    def check(self) -> None:
        for key in ("num_train", "num_test", "num_classes"):
            if getattr(self, key) < 2:
                raise UserInputError(f"data.source.{key}={getattr(self, key)} is invalid: must be >= 2")

    def fingerprint(self) -> str:
        spec = (f"{self.num_train}-{self.num_test}-{self.num_classes}-{self.noise}-"
                f"{self.seed}-{self.image_size}-v1")
        return hashlib.sha256(spec.encode()).hexdigest()

    def decode(self) -> tuple[Split, Split, list[str]]:
        g = torch.Generator().manual_seed(self.seed)
        size = self.image_size
        coarse = torch.rand(self.num_classes, 3, 4, 4, generator=g) * 2 - 1
        templates = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear")

        def make(n: int) -> Split:
            labels = torch.randint(self.num_classes, (n,), generator=g)
            noise = torch.randn(n, 3, size, size, generator=g) * self.noise
            images = (128 + 70 * templates[labels] + noise).round().clamp(0, 255)
            return Split(images.to(torch.uint8), labels)

        return make(self.num_train), make(self.num_test), [f"class{i}" for i in range(self.num_classes)]


_in_process: dict[str, Dataset] = {}


def load_dataset(source, cache_dir: str | None) -> Dataset:
    """Decode `source` once; later calls read the in-process copy or the on-disk cache."""
    key = f"{source.name}-{source.fingerprint()[:20]}"
    if key in _in_process:
        cached = _in_process[key]
        return Dataset(cached.train, cached.test, cached.classes, cached.fingerprint, "memory")
    path = Path(cache_dir).expanduser() / f"{key}.pt" if cache_dir else None
    if path is not None and path.is_file():
        blob = torch.load(path, weights_only=True)
        dataset = Dataset(Split(*blob["train"]), Split(*blob["test"]), blob["classes"], key, "disk")
        log.info("data: read cache %s", path)
    else:
        train, test, classes = source.decode()
        dataset = Dataset(train, test, classes, key, "decoded")
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            blob = {"train": (train.images, train.labels), "test": (test.images, test.labels),
                    "classes": classes}
            torch.save(blob, tmp)
            os.replace(tmp, path)  # atomic: concurrent jobs never read a half-written cache
            log.info("data: decoded %s and cached it at %s", source.name, path)
    _in_process[key] = dataset
    return dataset


def split_train_val(train: Split, val_fraction: float, seed: int) -> tuple[Split, Split]:
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    n_val = max(1, round(len(train) * val_fraction))
    if len(train) - n_val < 2:
        raise UserInputError(f"trainer.val_fraction={val_fraction} leaves {len(train) - n_val} of "
                             f"{len(train)} images for training; at least 2 are needed")
    return train.subset(order[n_val:]), train.subset(order[:n_val])
