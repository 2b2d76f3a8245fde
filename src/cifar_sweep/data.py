"""Data sources decoded once into uint8 tensors (N x 3 x 32 x 32), cached on disk and in memory.

A source is built by Hydra from `conf/data/*.yaml`; it knows how to fingerprint its content
cheaply and how to decode itself. `load_dataset` turns any source into a `Dataset`, reusing the
in-process copy (jobs of one sweep share it) or the on-disk cache keyed by the fingerprint.

The fingerprint is a SHA-256 of the files' names and bytes, so the same images at another path
share a cache. Reading every file on every run would be slow (60,000 for CIFAR-10 as JPEGs), so
the cache folder keeps `index.json`: a digest of names, sizes, modification and change times ->
the content digest, computed once; and, per content digest, the images that failed to decode.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import pickle
import re
import shutil
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch

from cifar_sweep.errors import UserInputError

log = logging.getLogger(__name__)

CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}
INDEX = "index.json"


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


class File(NamedTuple):
    name: str  # relative to the source's folder, with "/"
    size: int
    mtime_ns: int
    ctime_ns: int  # tar and `cp -p` restore mtimes, never this: a re-extracted file shows as new
    label: int = -1


def _reason(exc: BaseException) -> str:
    """An exception as a short phrase for a one-line error (torchvision's start with
    'function, source.cpp:line, ', which means nothing to the user)."""
    text = (str(exc).strip().splitlines() or [""])[0]
    text = re.sub(r"^\w+, \S+:\d+, ", "", text).split(". ")[0]
    return text[:150] or type(exc).__name__


# --- the cache folder: atomic writes and the index ---------------------------------------------

def _write_atomic(path: Path, write) -> None:
    """`write(file)` into a temp file, then rename: concurrent jobs never read half a file. A
    folder we cannot write to is the user's to fix: one line, not a traceback."""
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise UserInputError(
            f"data.cache_dir={path.parent} is not writable ({exc.strerror or _reason(exc)}); "
            f"point data.cache_dir at a writable folder, or set data.cache_dir=null to not cache"
        ) from None


def _read_index(cache_dir: Path | None) -> dict:
    if cache_dir is None:
        return {}
    try:
        return json.loads((cache_dir / INDEX).read_text())
    except (OSError, ValueError):  # missing or damaged: it only saves time, so start afresh
        return {}


def _index_get(cache_dir: Path | None, table: str, key: str):
    return _read_index(cache_dir).get(table, {}).get(key)


def _index_put(cache_dir: Path | None, table: str, key: str, value) -> None:
    if cache_dir is None:
        return
    index = _read_index(cache_dir)  # re-read: another job may have added entries meanwhile
    index.setdefault(table, {})[key] = value
    _write_atomic(cache_dir / INDEX, lambda f: f.write(json.dumps(index).encode()))


def _content_digest(root: Path, files: list[File], cache_dir: Path | None) -> str:
    """SHA-256 of the files' names and bytes; read once, then found in the index under a digest
    of the folder, names, sizes, modification and change times."""
    listing = "\n".join([str(root)] + [f"{f.name}\t{f.size}\t{f.mtime_ns}\t{f.ctime_ns}" for f in files])
    stat_key = hashlib.sha256(listing.encode()).hexdigest()
    content = _index_get(cache_dir, "stat", stat_key)
    if content is not None:
        return content
    digest, readable = hashlib.sha256(), True
    for f in files:
        try:
            data = (root / f.name).read_bytes()
        except OSError:  # decoding reports it; the digest just has to differ from readable bytes
            data, readable = b"\0unreadable", False
        digest.update(f"{f.name}\0{len(data)}\0".encode())
        digest.update(data)
    content = digest.hexdigest()
    if readable:  # the error may pass (a full disk, a flaky share): hash again next time
        _index_put(cache_dir, "stat", stat_key, content)
    return content


def _stat(folder: Path, name: str) -> File:
    st = (folder / name).stat()
    return File(name, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


# --- sources -----------------------------------------------------------------------------------

class Cifar10Source:
    """The CIFAR-10 python release: downloaded by torchvision, or read offline from `root`."""

    name = "cifar10"
    archive_name = "cifar-10-python.tar.gz"
    batch_files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]

    def __init__(self, root: str, download: bool = True):
        self.root = Path(root).expanduser().resolve()
        self.download = download

    @property
    def folder(self) -> Path:
        return self.root / "cifar-10-batches-py"

    def _missing(self) -> list[str]:
        return [f for f in self.batch_files if not (self.folder / f).is_file()]

    def _extract(self, archive: Path) -> None:
        # into a temp folder first, then moved into place: a damaged archive leaves no half-written
        # batch file behind that a later run would take for complete
        tmp = self.root / f".extract-{os.getpid()}"
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(tmp, filter="data")
            self.folder.mkdir(exist_ok=True)
            extracted = tmp / self.folder.name
            for path in extracted.iterdir() if extracted.is_dir() else []:
                os.replace(path, self.folder / path.name)
        except (tarfile.TarError, EOFError, zlib.error) as exc:
            raise UserInputError(
                f"{archive} is damaged or truncated ({_reason(exc)}); delete it and download it "
                f"again, or put the extracted cifar-10-batches-py/ in data.root"
            ) from None
        except OSError as exc:  # gzip's BadGzipFile is an OSError too
            raise UserInputError(f"cannot extract {archive} into data.root={self.root} "
                                 f"({exc.strerror or _reason(exc)})") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if self._missing():
            raise UserInputError(f"{archive} holds no cifar-10-batches-py/{self._missing()[0]}: "
                                 f"it is not the CIFAR-10 python release")

    def _ensure_present(self) -> None:
        missing = self._missing()
        if not missing:
            return
        archive = self.root / self.archive_name
        if archive.is_file():
            self._extract(archive)
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
        if self.folder.is_dir():  # a partial copy: say which file, not "no CIFAR-10 found"
            raise UserInputError(
                f"data.root={self.root}: {self.folder / missing[0]} is missing, no "
                f"{self.archive_name} to extract it from and {reason}; put the archive there"
            )
        raise UserInputError(
            f"data.root={self.root}: no CIFAR-10 found and {reason}; put cifar-10-python.tar.gz "
            f"or cifar-10-batches-py/ there, or use data=image_folder data.root=<folder>"
        )

    def check(self) -> None:
        """Download problems can only show when loading; nothing to check up front."""

    def _names(self) -> list[str]:
        meta = ["batches.meta"] if (self.folder / "batches.meta").is_file() else []
        return self.batch_files + meta  # the meta file gives the class names

    def fingerprint(self, cache_dir: Path | None = None) -> str:
        self._ensure_present()
        files = [_stat(self.folder, name) for name in self._names()]
        return _content_digest(self.folder, files, cache_dir)

    def _load(self, name: str) -> dict:
        path = self.folder / name
        try:
            with open(path, "rb") as f:
                batch = pickle.load(f, encoding="latin1")
            if name == "batches.meta":
                names = batch.get("label_names", [])
                return {"label_names": [c.decode() if isinstance(c, bytes) else str(c) for c in names]}
            data, labels = batch["data"], list(batch["labels"])
            if data.dtype.name != "uint8" or data.shape != (len(labels), 3072):
                raise ValueError(f"data is {data.dtype} {data.shape}, labels {len(labels)}")
            return {"data": data, "labels": labels}
        except Exception as exc:  # a damaged pickle can raise almost any type
            raise UserInputError(
                f"cannot read {path} ({_reason(exc)}); delete {self.folder} to extract it "
                f"again from {self.archive_name}"
            ) from None

    def decode(self) -> tuple[Split, Split, list[str]]:
        self._ensure_present()
        names = self._names()
        meta = self._load("batches.meta") if "batches.meta" in names else {}
        classes = meta.get("label_names") or list(CIFAR10_CLASSES)

        def read(files: list[str]) -> Split:
            images, labels = [], []
            for name in files:
                batch = self._load(name)
                # each row holds the R, then G, then B plane of a 32 x 32 image
                images.append(torch.from_numpy(batch["data"]).view(-1, 3, 32, 32))
                labels.append(torch.tensor(batch["labels"], dtype=torch.int64))
                if labels[-1].numel() and not 0 <= labels[-1].min() <= labels[-1].max() < len(classes):
                    raise UserInputError(f"{self.folder / name}: labels outside 0..{len(classes) - 1} "
                                         f"({len(classes)} classes)")
            return Split(torch.cat(images), torch.cat(labels))

        return read(self.batch_files[:5]), read(self.batch_files[5:]), classes


class ImageFolderSource:
    """`root/train/<class>/*` and `root/test/<class>/*`; classes sorted by name give the labels.
    An image that cannot be read or decoded stops the run, naming it, unless `skip_corrupt`."""

    name = "image_folder"

    def __init__(self, root: str, image_size: int = 32, skip_corrupt: bool = False):
        self.root = Path(root).expanduser().resolve()
        self.image_size = image_size
        self.skip_corrupt = skip_corrupt
        self._decoded = None  # (train, test, classes, corrupt) once decoded
        self._reported = False

    def _files(self) -> tuple[list[str], dict[str, list[File]]]:
        self.check()
        classes = sorted(e.name for e in os.scandir(self.root / "train") if e.is_dir())
        if not classes:
            raise UserInputError(f"data.root={self.root}: train/ holds no class folders")
        files: dict[str, list[File]] = {}
        for split in ("train", "test"):
            files[split] = []
            for label, cls in enumerate(classes):
                folder = self.root / split / cls
                if not folder.is_dir():
                    continue
                # scandir + stat: tens of milliseconds for 60,000 files, no file opened
                for entry in sorted(os.scandir(folder), key=lambda e: e.name):
                    if Path(entry.name).suffix.lower() in IMAGE_SUFFIXES and entry.is_file():
                        st = entry.stat()
                        files[split].append(File(f"{split}/{cls}/{entry.name}", st.st_size,
                                                 st.st_mtime_ns, st.st_ctime_ns, label))
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

    def _report(self, corrupt: list[str]) -> None:
        """Stop on images that cannot be decoded, or with skip_corrupt say which were left out."""
        if not corrupt or self._reported:
            return
        if not self.skip_corrupt:
            more = f" and {len(corrupt) - 1} more" if len(corrupt) > 1 else ""
            raise UserInputError(
                f"cannot read or decode the image {self.root / corrupt[0]}{more}; replace or "
                f"remove it, or set data.skip_corrupt=true to skip such files"
            )
        self._reported = True
        log.warning("data: skipped %d image(s) in %s that cannot be decoded (data.skip_corrupt=true): "
                    "%s%s", len(corrupt), self.root, ", ".join(corrupt[:5]),
                    ", ..." if len(corrupt) > 5 else "")

    def fingerprint(self, cache_dir: Path | None = None) -> str:
        classes, files = self._files()
        content = _content_digest(self.root, files["train"] + files["test"], cache_dir)
        corrupt = _index_get(cache_dir, "corrupt", content)
        if corrupt is None:  # only decoding tells; decode() then reuses the result
            self._decoded = self._decode(classes, files)
            corrupt = self._decoded[3]
            _index_put(cache_dir, "corrupt", content, corrupt)
        self._report(corrupt)
        # the skipped files are part of the key: a cache made by skipping is never read by a run
        # that would stop on them, and clean data has one key whatever skip_corrupt says
        spec = f"{content}-{self.image_size}px-skipped:{json.dumps(corrupt)}"
        return hashlib.sha256(spec.encode()).hexdigest()

    def _decode(self, classes: list[str], files: dict[str, list[File]]):
        from torchvision.io import ImageReadMode, decode_image, read_file

        size = self.image_size
        corrupt: list[str] = []

        def read(entries: list[File]) -> Split:
            images = torch.empty(len(entries), 3, size, size, dtype=torch.uint8)
            labels = []
            for f in entries:
                try:
                    image = decode_image(read_file(str(self.root / f.name)), mode=ImageReadMode.RGB)
                except (RuntimeError, OSError, ValueError):
                    corrupt.append(f.name)
                    continue
                if image.shape[-2:] != (size, size):
                    image = torch.nn.functional.interpolate(
                        image[None].float(), size=(size, size), mode="bilinear", antialias=True
                    )[0].round().clamp(0, 255).to(torch.uint8)
                images[len(labels)] = image
                labels.append(f.label)
            if len(labels) < len(entries):  # a copy, so that the cache holds only what is kept
                images = images[:len(labels)].clone()
            return Split(images, torch.tensor(labels, dtype=torch.int64))

        train, test = read(files["train"]), read(files["test"])
        for split, part in (("train", train), ("test", test)):
            if corrupt and len(part) == 0:
                raise UserInputError(f"data.root={self.root}: no image in {split}/ can be decoded, "
                                     f"e.g. {self.root / corrupt[0]}")
        return train, test, classes, corrupt

    def decode(self) -> tuple[Split, Split, list[str]]:
        if self._decoded is None:
            self._decoded = self._decode(*self._files())
        train, test, classes, corrupt = self._decoded
        self._report(corrupt)
        return train, test, classes


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

    def fingerprint(self, cache_dir: Path | None = None) -> str:
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


def _read_cache(path: Path, key: str) -> Dataset | None:
    """The decoded dataset from `path`; None (and the file deleted) when it is damaged, e.g.
    truncated by a full disk or a killed job, so that it is decoded and written again."""
    try:
        blob = torch.load(path, weights_only=True)
        dataset = Dataset(Split(*blob["train"]), Split(*blob["test"]), list(blob["classes"]), key, "disk")
    except Exception as exc:  # a damaged file raises many types (zip, pickle, key, type errors)
        log.warning("data: the cache file %s is damaged (%s); deleting it and decoding again",
                    path, _reason(exc))
        with contextlib.suppress(OSError):
            path.unlink()
        return None
    log.info("data: read cache %s", path)
    return dataset


def load_dataset(source, cache_dir: str | None) -> Dataset:
    """Decode `source` once; later calls read the in-process copy or the on-disk cache."""
    cache = Path(cache_dir).expanduser() if cache_dir else None
    key = f"{source.name}-{source.fingerprint(cache)[:20]}"
    if key in _in_process:
        cached = _in_process[key]
        return Dataset(cached.train, cached.test, cached.classes, cached.fingerprint, "memory")
    path = cache / f"{key}.pt" if cache is not None else None
    dataset = _read_cache(path, key) if path is not None and path.is_file() else None
    if dataset is None:
        train, test, classes = source.decode()
        dataset = Dataset(train, test, classes, key, "decoded")
        if path is not None:
            blob = {"train": (train.images, train.labels), "test": (test.images, test.labels),
                    "classes": classes}
            _write_atomic(path, lambda f: torch.save(blob, f))
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
