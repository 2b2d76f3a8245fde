"""The data's types: a split's images and labels as tensors, a decoded dataset, a source's file."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch


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
