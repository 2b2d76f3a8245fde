"""Decode once: the in-process copy, the on-disk cache of decoded tensors keyed by a source's
fingerprint, and the content digest of a folder's files that such fingerprints are made from.

The content digest is a SHA-256 of the files' names and bytes, so the same images at another path
share a cache. Reading every file on every run would be slow (60,000 for CIFAR-10 as JPEGs), so
the cache folder keeps `index.json`: a digest of names, sizes, modification and change times ->
the content digest, computed once; and, per content digest, the images that failed to decode.
Files are written to a temp file and renamed, so that concurrent jobs never read half a file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
from pathlib import Path

import torch

from cifar_sweep.data.tensors import Dataset, File, Split
from cifar_sweep.errors import UserInputError

log = logging.getLogger(__name__)

INDEX = "index.json"  # in the cache folder: content digests and undecodable images, see above


def _reason(exc: BaseException) -> str:
    """An exception as a short phrase for a one-line error (torchvision's start with
    'function, source.cpp:line, ', which means nothing to the user)."""
    text = (str(exc).strip().splitlines() or [""])[0]
    text = re.sub(r"^\w+, \S+:\d+, ", "", text).split(". ")[0]
    return text[:150] or type(exc).__name__


# --- the cache folder: atomic writes and the index ---------------------------------------------

def _write_atomic(path: Path, write) -> None:
    """`write(file)` into a temp file, then rename: concurrent jobs never read half a file. A
    folder we cannot write to is the user's to fix: one line, not a traceback."""
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise UserInputError(
            f"data.cache_dir={path.parent} is not writable ({exc.strerror or _reason(exc)}); "
            f"point data.cache_dir at a writable folder, or set data.cache_dir=null to not cache"
        ) from None


def _read_index(cache_dir: Path | None) -> dict:
    if cache_dir is None:
        return {}
    try:
        return json.loads((cache_dir / INDEX).read_text())
    except (OSError, ValueError):  # missing or damaged: it only saves time, so start afresh
        return {}


def _index_get(cache_dir: Path | None, table: str, key: str):
    return _read_index(cache_dir).get(table, {}).get(key)


def _index_put(cache_dir: Path | None, table: str, key: str, value) -> None:
    if cache_dir is None:
        return
    index = _read_index(cache_dir)  # re-read: another job may have added entries meanwhile
    index.setdefault(table, {})[key] = value
    _write_atomic(cache_dir / INDEX, lambda f: f.write(json.dumps(index).encode()))


def _content_digest(root: Path, files: list[File], cache_dir: Path | None) -> str:
    """SHA-256 of the files' names and bytes; read once, then found in the index under a digest
    of the folder, names, sizes, modification and change times."""
    listing = "\n".join([str(root)] + [f"{f.name}\t{f.size}\t{f.mtime_ns}\t{f.ctime_ns}" for f in files])
    stat_key = hashlib.sha256(listing.encode()).hexdigest()
    content = _index_get(cache_dir, "stat", stat_key)
    if content is not None:
        return content
    digest, readable = hashlib.sha256(), True
    for f in files:
        try:
            data = (root / f.name).read_bytes()
        except OSError:  # decoding reports it; the digest just has to differ from readable bytes
            data, readable = b"\0unreadable", False
        digest.update(f"{f.name}\0{len(data)}\0".encode())
        digest.update(data)
    content = digest.hexdigest()
    if readable:  # the error may pass (a full disk, a flaky share): hash again next time
        _index_put(cache_dir, "stat", stat_key, content)
    return content


def _stat(folder: Path, name: str) -> File:
    st = (folder / name).stat()
    return File(name, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


# --- decoded datasets: in this process, and in the cache folder ---------------------------------

_in_process: dict[str, Dataset] = {}


def _read_cache(path: Path, key: str) -> Dataset | None:
    """The decoded dataset from `path`; None (and the file deleted) when it is damaged, e.g.
    truncated by a full disk or a killed job, so that it is decoded and written again."""
    try:
        blob = torch.load(path, weights_only=True)
        dataset = Dataset(Split(*blob["train"]), Split(*blob["test"]), list(blob["classes"]), key, "disk")
    except Exception as exc:  # a damaged file raises many types (zip, pickle, key, type errors)
        log.warning("data: the cache file %s is damaged (%s); deleting it and decoding again",
                    path, _reason(exc))
        with contextlib.suppress(OSError):
            path.unlink()
        return None
    log.info("data: read cache %s", path)
    return dataset


def load_dataset(source, cache_dir: str | None) -> Dataset:
    """Decode `source` once; later calls read the in-process copy or the on-disk cache."""
    cache = Path(cache_dir).expanduser() if cache_dir else None
    key = f"{source.name}-{source.fingerprint(cache)[:20]}"
    if key in _in_process:
        cached = _in_process[key]
        return Dataset(cached.train, cached.test, cached.classes, cached.fingerprint, "memory")
    path = cache / f"{key}.pt" if cache is not None else None
    dataset = _read_cache(path, key) if path is not None and path.is_file() else None
    if dataset is None:
        train, test, classes = source.decode()
        dataset = Dataset(train, test, classes, key, "decoded")
        if path is not None:
            blob = {"train": (train.images, train.labels), "test": (test.images, test.labels),
                    "classes": classes}
            _write_atomic(path, lambda f: torch.save(blob, f))
            log.info("data: decoded %s and cached it at %s", source.name, path)
    _in_process[key] = dataset
    return dataset

