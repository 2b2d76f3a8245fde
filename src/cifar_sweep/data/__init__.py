"""Data sources decoded once into uint8 tensors (N x 3 x 32 x 32), cached on disk and in memory.

A source is built by Hydra from `conf/data/*.yaml` (`cifar10.py`, `cifar100.py`,
`image_folder.py`, `synthetic.py`); it knows how to fingerprint its content cheaply and how to decode itself.
`load_dataset` (`cache.py`) turns any source into a `Dataset` (`tensors.py`), reusing the
in-process copy (jobs of one sweep share it) or the on-disk cache keyed by the fingerprint;
`split_train_val` (`splitting.py`) takes the validation images from its training split.
"""

from cifar_sweep.data.cache import load_dataset
from cifar_sweep.data.cifar10 import CIFAR10_CLASSES, Cifar10Source
from cifar_sweep.data.cifar100 import Cifar100Source
from cifar_sweep.data.image_folder import ImageFolderSource
from cifar_sweep.data.splitting import split_train_val
from cifar_sweep.data.synthetic import SyntheticSource
from cifar_sweep.data.tensors import Dataset, File, Split

__all__ = [
    "CIFAR10_CLASSES", "Cifar10Source", "Cifar100Source", "Dataset", "File", "ImageFolderSource", "Split",
    "SyntheticSource", "load_dataset", "split_train_val",
]
