"""The CIFAR python releases as sources (CIFAR-10 here, CIFAR-100 in `cifar100.py`): found in or
downloaded to `data.root`, checked, and decoded from their pickled batch files by an unpickler
that runs no code (`safe_pickle.py`)."""

from __future__ import annotations

import os
import shutil
import tarfile
import zlib
from pathlib import Path

import torch

from cifar_sweep.data import safe_pickle
from cifar_sweep.data.cache import _content_digest, _reason, _stat
from cifar_sweep.data.tensors import Split
from cifar_sweep.errors import UserInputError

CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]


class Cifar10Source:
    """The CIFAR-10 python release: downloaded by torchvision, or read offline from `root`.
    A subclass names another release of the same format (`Cifar100Source`)."""

    name = "cifar10"
    title = "CIFAR-10"
    archive_name = "cifar-10-python.tar.gz"
    folder_name = "cifar-10-batches-py"
    train_files = [f"data_batch_{i}" for i in range(1, 6)]
    test_files = ["test_batch"]
    batch_files = train_files + test_files
    meta_file = "batches.meta"      # the class names, under `names_key`
    labels_key, names_key = "labels", "label_names"
    default_classes = CIFAR10_CLASSES  # where the meta file is missing
    torchvision_class = "CIFAR10"

    def __init__(self, root: str, download: bool = True):
        self.root = Path(root).expanduser().resolve()
        self.download = download

    @property
    def folder(self) -> Path:
        return self.root / self.folder_name

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
                f"again, or put the extracted {self.folder_name}/ in data.root"
            ) from None
        except OSError as exc:  # gzip's BadGzipFile is an OSError too
            raise UserInputError(f"cannot extract {archive} into data.root={self.root} "
                                 f"({exc.strerror or _reason(exc)})") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if self._missing():
            raise UserInputError(f"{archive} holds no {self.folder_name}/{self._missing()[0]}: "
                                 f"it is not the {self.title} python release")

    def _ensure_present(self) -> None:
        missing = self._missing()
        if not missing:
            return
        archive = self.root / self.archive_name
        if archive.is_file():
            self._extract(archive)
            return
        if self.download:
            import torchvision.datasets

            try:
                getattr(torchvision.datasets, self.torchvision_class)(
                    str(self.root), train=True, download=True)
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
            f"data.root={self.root}: no {self.title} found and {reason}; put {self.archive_name} "
            f"or {self.folder_name}/ there, or use data=image_folder data.root=<folder>"
        )

    def check(self) -> None:
        """Download problems can only show when loading; nothing to check up front."""

    def _names(self) -> list[str]:
        meta = [self.meta_file] if (self.folder / self.meta_file).is_file() else []
        return self.batch_files + meta  # the meta file gives the class names

    def fingerprint(self, cache_dir: Path | None = None) -> str:
        self._ensure_present()
        files = [_stat(self.folder, name) for name in self._names()]
        return _content_digest(self.folder, files, cache_dir)

    def _load(self, name: str) -> dict:
        path = self.folder / name
        try:
            with open(path, "rb") as f:
                batch = safe_pickle.load(f, encoding="latin1")
            if name == self.meta_file:
                names = batch.get(self.names_key, [])
                return {"label_names": [c.decode() if isinstance(c, bytes) else str(c) for c in names]}
            data, labels = batch["data"], list(batch[self.labels_key])
            if data.dtype.name != "uint8" or data.shape != (len(labels), 3072):
                raise ValueError(f"data is {data.dtype} {data.shape}, labels {len(labels)}")
            return {"data": data, "labels": labels}
        except safe_pickle.RefusedPickle as exc:  # not damage: a file made to run code
            raise UserInputError(
                f"{path} is not {self.title} data: its pickle would call {exc.what}, so it was "
                f"refused unread (a data file never runs code); replace it with the release's "
                f"own {self.archive_name}") from None
        except Exception as exc:  # a damaged pickle can raise almost any type
            raise UserInputError(
                f"cannot read {path} ({_reason(exc)}); delete {self.folder} to extract it "
                f"again from {self.archive_name}"
            ) from None

    def decode(self) -> tuple[Split, Split, list[str]]:
        self._ensure_present()
        names = self._names()
        meta = self._load(self.meta_file) if self.meta_file in names else {}
        classes = meta.get("label_names") or list(self.default_classes)

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

        return read(self.train_files), read(self.test_files), classes
