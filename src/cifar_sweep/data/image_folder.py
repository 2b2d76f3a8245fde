"""An image folder as a source: `root/{train,test}/<class>/*` decoded to a fixed size, with the
images that cannot be decoded stopping the run or (with skip_corrupt) left out and named."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import torch

from cifar_sweep.data.cache import _content_digest, _index_get, _index_put
from cifar_sweep.data.tensors import File, Split
from cifar_sweep.errors import UserInputError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}


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
