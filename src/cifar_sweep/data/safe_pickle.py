"""Reading the CIFAR python releases' pickled batches without running code: an unpickler that
admits only what those files hold (numpy arrays, and the dicts, lists, strings and numbers
around them) and refuses every other callable a pickle names.

Why: `pickle.load` calls whatever a file names (`os.system`, `subprocess.run`, ...), and a data
archive is something users download and pass around. The release's batches name just numpy's
array reconstruction (under numpy 1's and numpy 2's module names) and, for bytes written by
Python 3 at protocol 2, `_codecs.encode`; dicts, lists, strings and numbers need no name at all.
"""

from __future__ import annotations

import codecs
import pickle
from typing import BinaryIO

import numpy as np


def _numpy(module: str, name: str):
    # numpy 2 moved numpy.core to numpy._core; files written under either name must load
    import importlib

    for candidate in (module, module.replace("numpy.core", "numpy._core")):
        try:
            return getattr(importlib.import_module(candidate), name)
        except (ImportError, AttributeError):
            continue
    raise pickle.UnpicklingError(f"{module}.{name} is not in this numpy")


ADMITTED = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
}


class RefusedPickle(pickle.UnpicklingError):
    """The file names a callable that the CIFAR release format does not hold."""

    def __init__(self, module: str, name: str):
        super().__init__(f"it would call {module}.{name}")
        self.what = f"{module}.{name}"


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in ADMITTED:
            raise RefusedPickle(module, name)
        if module == "_codecs":
            return codecs.encode
        if module == "numpy":
            return getattr(np, name)
        return _numpy(module, name)


def load(file: BinaryIO, encoding: str = "latin1"):
    """`pickle.load` for the CIFAR releases' batch files; RefusedPickle for anything else that
    would run code. latin1: the files were written by Python 2, their strings are bytes."""
    return _Unpickler(file, encoding=encoding).load()
