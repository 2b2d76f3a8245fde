"""Part of the data, for smoke runs (`data.subset`, `data.test_subset`): a stratified subset of
the training images (N, or a fraction below 1), drawn by `data.split_seed` so that every seed and
setting trains on the same images, the validation split then taken from it; the test set whole
unless `data.test_subset` says otherwise.

It is cut after the source is loaded (and cached whole), so that no source's definition, which a
run's code version hashes, changes. The subset's fingerprint names it and the images it holds
(`<source>-<digest>-subset<N>[-test<M>]-<digest of the positions>`): a subset's runs are another
experiment than the full data's, and tables never mix them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from cifar_sweep.data.cache import load_dataset
from cifar_sweep.data.tensors import Dataset, Split
from cifar_sweep.errors import UserInputError

KEYS = {"train": "data.subset", "test": "data.test_subset"}


@dataclass
class SubsetDataset(Dataset):
    """A dataset cut from a larger one: where each image sits in the full splits."""

    train_index: torch.Tensor | None = None  # positions in the full training split; None: all
    test_index: torch.Tensor | None = None   # positions in the full test split; None: all


def full_test_positions(dataset: Dataset) -> torch.Tensor | None:
    """Each test image's position in the full test set (predictions name the examples by it);
    None where the test set is whole (positions 0..N-1)."""
    return getattr(dataset, "test_index", None)


def size(spec: float | int, total: int, key: str, what: str) -> int:
    """The images a subset holds: `spec` of them (an integer), or that fraction (below 1)."""
    if 0 < spec < 1:
        count = round(spec * total)
    elif spec >= 1 and float(spec).is_integer():
        count = int(spec)
    else:
        raise UserInputError(f"{key}={spec} is invalid: must be a number of images (an integer "
                             f">= 1) or a fraction strictly between 0 and 1")
    if count > total:
        raise UserInputError(f"{key}={spec} asks for {count} images; the data has {total} "
                             f"{what} images: give at most {total}, or a fraction below 1")
    if count < 2:
        raise UserInputError(f"{key}={spec} leaves {count} of {total} {what} images; at least 2 "
                             f"are needed")
    return count


def stratified(labels: torch.Tensor, count: int, seed: int) -> torch.Tensor:
    """`count` positions, each class's share of them as its share of `labels` (largest
    remainders round), drawn within each class by a generator seeded with `seed`; in the
    split's order."""
    classes, per_class = torch.unique(labels, return_counts=True)
    quota = per_class.double() * count / len(labels)
    take = quota.floor().long()
    left = count - int(take.sum())
    if left:  # the largest remainders, then the smaller class number on a tie
        order = sorted(range(len(classes)), key=lambda i: (-(quota[i] - take[i]).item(), i))
        for i in order[:left]:
            take[i] += 1
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for cls, n in zip(classes.tolist(), take.tolist()):
        members = (labels == cls).nonzero().flatten()
        chosen.append(members[torch.randperm(len(members), generator=generator)[:n]])
    return torch.cat(chosen).sort().values


def cut(dataset: Dataset, subset: float | None, test_subset: float | None,
        seed: int) -> Dataset:
    """The dataset, or its stratified subset (see the module's docstring)."""
    splits = {"train": dataset.train, "test": dataset.test}
    index: dict[str, torch.Tensor | None] = {"train": None, "test": None}
    for name, spec in (("train", subset), ("test", test_subset)):
        if spec is None:
            continue
        labels = splits[name].labels
        count = size(spec, len(labels), KEYS[name], "training" if name == "train" else "test")
        if count < len(labels):  # all of them: the whole split, the same images
            index[name] = stratified(labels.cpu(), count, seed)
    if index["train"] is None and index["test"] is None:
        return dataset
    name = dataset.fingerprint
    digest = hashlib.sha256(name.encode())
    for split, positions in index.items():
        if positions is not None:
            name += f"-{'subset' if split == 'train' else 'test'}{len(positions)}"
            digest.update(f"{split}:".encode() + positions.numpy().astype("<i8").tobytes())
    cut_split = {k: splits[k] if v is None else Split(splits[k].images[v], splits[k].labels[v])
                 for k, v in index.items()}
    return SubsetDataset(cut_split["train"], cut_split["test"], dataset.classes,
                         f"{name}-{digest.hexdigest()[:8]}", dataset.cache, index["train"],
                         index["test"])


def load(data: DictConfig) -> Dataset:
    """A config's `data` section as the job trains on it: its source decoded (or read from the
    cache), then cut to its subset if it names one."""
    from hydra.utils import instantiate

    dataset = load_dataset(instantiate(data.source), data.get("cache_dir"))
    return cut(dataset, data.get("subset"), data.get("test_subset"), int(data.get("split_seed", 0)))
