"""Batches cut from a split that lives whole in device memory, augmented a chunk at a time.

Like airbench's loader: no per-image PIL transforms and no DataLoader workers. Each epoch draws a
seeded permutation; a chunk of images is augmented in one batched call (per-image random flip,
rotation and shift as one affine warp), normalised on the device, then sliced into batches.
`Augment` is named by `conf/augment/*.yaml` (`_target_`), so it stays here: moving it would
change every run's config hash.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from cifar_sweep.data import Split


class Augment:
    """Per-image random horizontal flip, rotation up to `rotate_degrees`, shift up to `translate_px`.

    The defaults are the report's RandomHorizontalFlip + RandomRotation(10); uncovered corners are
    filled with black, as torchvision's RandomRotation does.
    """

    def __init__(self, hflip: bool = True, rotate_degrees: float = 10.0, translate_px: int = 0):
        self.hflip, self.rotate_degrees, self.translate_px = hflip, rotate_degrees, translate_px

    @property
    def changes_images(self) -> bool:
        return bool(self.hflip or self.rotate_degrees or self.translate_px)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, _, h, w = x.shape
        opts = dict(device=x.device, generator=generator)
        flip = (torch.rand(n, **opts) < 0.5) if self.hflip else None
        if not self.rotate_degrees and not self.translate_px:
            return torch.where(flip[:, None, None, None], x.flip(3), x) if flip is not None else x
        angle = (torch.rand(n, **opts) * 2 - 1) * math.radians(self.rotate_degrees)
        cos, sin = angle.cos(), angle.sin()
        sign = torch.where(flip, -1.0, 1.0) if flip is not None else torch.ones(n, device=x.device)
        theta = torch.zeros(n, 2, 3, device=x.device)
        theta[:, 0, 0], theta[:, 0, 1] = cos * sign, -sin
        theta[:, 1, 0], theta[:, 1, 1] = sin * sign, cos
        if self.translate_px:
            shift = torch.randint(-self.translate_px, self.translate_px + 1, (n, 2), **opts)
            theta[:, 0, 2] = shift[:, 0] * 2 / w  # whole pixels, so a pure shift stays exact
            theta[:, 1, 2] = shift[:, 1] * 2 / h
        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class Normalize:
    def __init__(self, mean: list[float], std: list[float], device: torch.device):
        self.mean = torch.tensor(mean, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, -1, 1, 1)

    def __call__(self, images_uint8: torch.Tensor) -> torch.Tensor:
        return images_uint8.float().div_(255).sub_(self.mean).div_(self.std)


class Loader:
    """A split's batches, as airbench's loader: the split whole on the device; with a generator,
    each pass draws a seeded permutation, augments a chunk at a time in one batched call and
    drops a final batch of one image (BatchNorm cannot train on it); without one, the split in
    order, unaugmented (evaluation). Batches come normalised, in the runtime's memory format."""

    def __init__(self, split: Split, batch_size: int, normalize: Normalize,
                 augment: Augment | None = None, generator: torch.Generator | None = None,
                 chunk_images: int = 1024, channels_last: bool = False):
        self.split, self.batch_size, self.normalize = split, batch_size, normalize
        self.augment = augment if augment is not None and augment.changes_images else None
        self.generator, self.channels_last = generator, channels_last
        self.chunk = batch_size * max(1, chunk_images // batch_size)

    @property
    def training(self) -> bool:
        return self.generator is not None

    def __len__(self) -> int:
        n = len(self.split)
        if not self.training:
            return math.ceil(n / self.batch_size)
        return sum(1 for b in range(0, n, self.batch_size) if n - b > 1)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.split)
        if self.training:
            order = torch.randperm(n, device=self.split.labels.device, generator=self.generator)
        for start in range(0, n, self.chunk):
            index = order[start:start + self.chunk] if self.training else slice(start, start + self.chunk)
            images = self.split.images[index].float().div_(255)
            if self.augment is not None:
                images = self.augment(images, self.generator)
            images = images.sub_(self.normalize.mean).div_(self.normalize.std)
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            labels = self.split.labels[index]
            for b in range(0, len(labels), self.batch_size):
                if not self.training or len(labels) - b > 1:
                    yield images[b:b + self.batch_size], labels[b:b + self.batch_size]
