"""Generated images as a source: a learnable colour pattern per class, for tests and smoke runs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from cifar_sweep.data.tensors import Split
from cifar_sweep.errors import UserInputError


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
