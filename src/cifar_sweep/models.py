"""The report's networks, the depthwise-separable variant it describes, and torchvision baselines.

Every class here is built by Hydra from `conf/model/*.yaml` (`_target_`), never by an if/elif table.
"""

import importlib
import types

import torch
from torch import nn


def lazy_module(name: str) -> types.ModuleType:
    """`name`, imported on first use: torchvision's models take about 4 s to import (they pull
    in torch._dynamo), and only the torchvision baselines need them. The code version reads
    `x = lazy_module("m")` as `import m as x` (code_version._module_table)."""

    class Lazy(types.ModuleType):
        def __getattr__(self, attr: str):
            return getattr(importlib.import_module(name), attr)

    return Lazy(name)


tv_models = lazy_module("torchvision.models")


class OriginNet(nn.Module):
    """The report's baseline, 48,252 parameters for 10 classes."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, kernel_size=2, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # 33 -> 16
            nn.Conv2d(6, 16, kernel_size=2, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 17 -> 8
            nn.Conv2d(16, 32, kernel_size=2), nn.ReLU(), nn.MaxPool2d(2),            # 7 -> 3
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(32 * 3 * 3, 120), nn.ReLU(),
            nn.Linear(120, 84), nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _plain_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=3, padding=1),
        nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2),
    )


def _separable_block(c_in: int, c_out: int) -> nn.Sequential:
    # What the report's text describes: a per-channel 3x3 filter, then a 1x1 mix of channels.
    return nn.Sequential(
        nn.Conv2d(c_in, c_in, kernel_size=3, padding=1, groups=c_in),
        nn.Conv2d(c_in, c_out, kernel_size=1),
        nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2),
    )


def _head(num_classes: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, 100), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(100, 64), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(64, num_classes),
    )


class ModifiedNet(nn.Module):
    """The report's model exactly as its tables count it (35,730 parameters): plain 3x3 convolutions."""

    def __init__(self, num_classes: int = 10, dropout: float = 0.5):
        super().__init__()
        self.features = nn.Sequential(_plain_block(3, 8), _plain_block(8, 12), _plain_block(12, 16))
        self.classifier = _head(num_classes, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class ModifiedNetDS(nn.Module):
    """ModifiedNet with the depthwise-separable convolutions the report's text claims."""

    def __init__(self, num_classes: int = 10, dropout: float = 0.5):
        super().__init__()
        self.features = nn.Sequential(
            _separable_block(3, 8), _separable_block(8, 12), _separable_block(12, 16)
        )
        self.classifier = _head(num_classes, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def resnet18_cifar(num_classes: int = 10) -> nn.Module:
    """torchvision's ResNet18 with the usual 32x32 stem: a 3x3 stride-1 conv and no first max-pool."""
    model = tv_models.resnet18(weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def mobilenet_v2(num_classes: int = 10) -> nn.Module:
    return tv_models.mobilenet_v2(weights=None, num_classes=num_classes)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def state_dict_fp32_mb(model: nn.Module) -> float:
    """Size of the weights held as float32, in MB (10^6 bytes); not a checkpoint file's size."""
    return sum(t.numel() for t in model.state_dict().values()) * 4 / 1e6
