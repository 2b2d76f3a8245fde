"""The validation split: a seeded share of the training images, the same for every run seed."""

from __future__ import annotations

import torch

from cifar_sweep.data.tensors import Split
from cifar_sweep.errors import UserInputError


def split_train_val(train: Split, val_fraction: float, seed: int) -> tuple[Split, Split]:
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    n_val = max(1, round(len(train) * val_fraction))
    if len(train) - n_val < 2:
        raise UserInputError(f"trainer.val_fraction={val_fraction} leaves {len(train) - n_val} of "
                             f"{len(train)} images for training; at least 2 are needed")
    return train.subset(order[n_val:]), train.subset(order[:n_val])
