"""The CIFAR-100 python release as a source: CIFAR-10's format (`cifar10.py`) under other names,
with its 100 fine classes (the 20 coarse ones are not used)."""

from __future__ import annotations

from cifar_sweep.data.cifar10 import Cifar10Source


class Cifar100Source(Cifar10Source):
    """`cifar-100-python/{train,test,meta}`, labels under `fine_labels`, names under
    `fine_label_names`; downloaded by torchvision, or read offline from `root`."""

    name = "cifar100"
    title = "CIFAR-100"
    archive_name = "cifar-100-python.tar.gz"
    folder_name = "cifar-100-python"
    train_files = ["train"]
    test_files = ["test"]
    batch_files = train_files + test_files
    meta_file = "meta"
    labels_key, names_key = "fine_labels", "fine_label_names"
    default_classes = [f"class{i}" for i in range(100)]  # the release always has `meta`
    torchvision_class = "CIFAR100"
