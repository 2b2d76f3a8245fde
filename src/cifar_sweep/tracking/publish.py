"""A working store published with the project, and read back anywhere: `publish` copies a local
store's database (SQLite's `VACUUM INTO`, so no WAL and no freed page keeps an old string) and
the artifacts a table reads into a folder of the repository, with nothing in it naming the
machine that made it; `working_copy` turns that folder into a store MLflow can open, in a
temporary folder, so that reading it never writes into the repository.

Why a copy to read: MLflow resolves a run's artifacts from the absolute location recorded with it,
and opening a SQLite store writes to it (journal mode, lock files); the published database holds
locations relative to its folder (`artifacts/<run>/artifacts`), which `working_copy` makes
absolute again in its own copy.
"""

from __future__ import annotations

import atexit
import hashlib
import re
import shutil
import socket
import sqlite3
import tempfile
from contextlib import closing
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from urllib.parse import unquote, urlsplit

from cifar_sweep.errors import UserInputError
from cifar_sweep.tracking.store import read_only

DB = "mlflow.db"
# what SQLite says of a damaged file (an error opening or locking it is not damage)
DAMAGED = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
ARTIFACTS = "artifacts"
# What a table, its figures and the evidence columns read of a job's artifacts; the rest (weights,
# logged models, per-run figures, a config that names the machine's paths) stays behind
KEPT_ARTIFACTS = ("evaluation.json", "predictions.npz", "test_images.npz")
LIMIT_MB = 100  # a clone downloads every commit of it: the bound
# the columns MLflow keeps a location in; each rewritten to be relative to the store's folder
LOCATIONS = (("experiments", "artifact_location"), ("runs", "artifact_uri"))
# what the published store holds no row of: logged models (their weights are not published)
DROPPED_TABLES = ("logged_model_metrics", "logged_model_params", "logged_model_tags",
                  "logged_models")
# an absolute path inside a value: after start, a space, '=', a quote or a comma (not 1/2)
ABSOLUTE_PATH = re.compile(r"(?:^|(?<=[\s='\",(\[]))/[^\s'\",;)\]]+")
# a file URI outside the store (a dataset input's source: `{"uri": "file:///data/cifar10-jpeg"}`)
FILE_URI = re.compile(r"file://(/[^\s'\",;)\]]*)")
HOST_PLACEHOLDER = "<host>"
USER_PLACEHOLDER = "<user>"
PATH_PLACEHOLDER = "<local>"


@dataclass
class Published:
    folder: Path
    runs: int
    artifacts: int
    size_mb: float


def _folder_store(uri: str) -> Path:
    """The folder of a local store: a folder, or a `sqlite:///<folder>/mlflow.db` URI."""
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///").split("?", 1)[0])
        if db.name == DB:
            return db.parent
    elif "://" not in uri:
        return Path(uri).expanduser()
    raise UserInputError(f"STORE={uri}: only a local store (a folder holding {DB} and "
                         f"{ARTIFACTS}/) can be published")


def _path_of(location: str) -> Path | None:
    if location.startswith("file:"):
        return Path(unquote(urlsplit(location).path))
    return Path(location) if location.startswith("/") else None


def _scrub(value: str, folder: Path, host: str) -> str:
    """`value` with the store's folder, the host name and any other absolute path taken out: a
    path keeps its last part (`data.root=<local>/cifar10-jpeg`), which says what it was."""
    value = value.replace(f"file://{folder}/", "").replace(f"{folder}/", "")
    value = value.replace(str(folder), ".")
    value = FILE_URI.sub(lambda m: f"{PATH_PLACEHOLDER}/{Path(unquote(m.group(1))).name}", value)
    value = ABSOLUTE_PATH.sub(lambda m: f"{PATH_PLACEHOLDER}/{Path(m.group(0)).name}", value)
    if host:
        value = re.sub(rf"\b{re.escape(host)}\b", HOST_PLACEHOLDER, value)
    return value


def _text_cells(db: sqlite3.Connection):
    """(table, column) of every text column of every table."""
    for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'"):
        for _cid, column, kind, *_ in db.execute(f'PRAGMA table_info("{table}")'):
            if kind.upper() in ("", "TEXT") or "CHAR" in kind.upper() or "CLOB" in kind.upper():
                yield table, column


def machine_strings(db_file: Path, folder: Path | None = None,
                    host: str | None = None) -> list[str]:
    """Every text cell of the database that names a host or an absolute path: empty for a store
    fit to publish. The check a publish ends with, and what a test asks of the published store."""
    host = socket.gethostname() if host is None else host
    found = []
    with closing(sqlite3.connect(db_file)) as db:
        for table, column in list(_text_cells(db)):
            for (value,) in db.execute(f'SELECT "{column}" FROM "{table}" WHERE "{column}" IS NOT NULL'):
                if not isinstance(value, str):
                    continue
                if (ABSOLUTE_PATH.search(value) or "file://" in value
                        or (host and re.search(rf"\b{re.escape(host)}\b", value))
                        or (folder is not None and str(folder) in value)):
                    found.append(f"{table}.{column}: {value[:120]}")
    return found


def publish(source: str, dest: Path, host: str | None = None) -> Published:
    """Copy the local store `source` into `dest` (replacing what was there), fit to commit."""
    src = _folder_store(source).resolve()
    if not (src / DB).is_file():
        raise UserInputError(f"STORE={source}: no {DB} there; a store is made by a run "
                             f"(tracking.uri=<folder>)")
    host = socket.gethostname() if host is None else host
    with closing(read_only(src / DB)) as db:
        # before the snapshot, which rebuilds every index from its table and would hide a damaged
        # one: a damaged store is not copied into the repo (about 0.3 s for the studies' 30 MB)
        try:
            problems = [row[0] for row in db.execute("PRAGMA integrity_check")]
        except sqlite3.DatabaseError as exc:  # damaged where the check itself reads; a lock or
            if getattr(exc, "sqlite_errorcode", 0) & 0xFF not in DAMAGED:  # a file it cannot
                raise                                                       # open is not damage
            problems = [str(exc)]
    if problems != ["ok"]:
        found = "; ".join(line for p in problems for line in p.splitlines() if line.strip())
        found = found if len(found) <= 200 else found[:200] + " ..."
        raise UserInputError(f"STORE={source}: its database is damaged (SQLite's integrity check: "
                             f"{found}); nothing published: publish a sound copy of the store")
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / DB
        with closing(sqlite3.connect(src / DB)) as db:
            db.execute("VACUUM INTO ?", (str(work),))  # a consistent snapshot, WAL included
        with closing(sqlite3.connect(work)) as db:
            for table in DROPPED_TABLES:
                db.execute(f'DELETE FROM "{table}"')
            # who ran it: a login name is the machine's, not the result's
            db.execute("UPDATE runs SET user_id = ?", (USER_PLACEHOLDER,))
            db.execute("UPDATE tags SET value = ? WHERE key = 'mlflow.user'", (USER_PLACEHOLDER,))
            for table, column in list(_text_cells(db)):
                # only the cells that can hold a path or the host: a metrics table has many rows
                rows = db.execute(f'SELECT rowid, "{column}" FROM "{table}" WHERE instr("{column}", '
                                  f"'/') > 0 OR instr(\"{column}\", ?) > 0", (host or "/",)).fetchall()
                for rowid, value in rows:
                    if isinstance(value, str):
                        new = _scrub(value, src, host)
                        if new != value:
                            db.execute(f'UPDATE "{table}" SET "{column}" = ? WHERE rowid = ?',
                                       (new, rowid))
            db.commit()
            runs = db.execute("SELECT run_uuid, artifact_uri FROM runs").fetchall()
        final = dest / DB
        final.unlink(missing_ok=True)
        # again through VACUUM INTO: the rewritten strings' old bytes stay in freed pages otherwise
        with closing(sqlite3.connect(work)) as db:
            db.execute("VACUUM INTO ?", (str(final),))
    copied = _copy_artifacts(src, dest, [location for _run, location in runs])
    left = machine_strings(final, src, host)
    if left:
        raise RuntimeError(f"the published store still names the machine: {left[:3]}")
    size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file()) / 1e6
    if size > LIMIT_MB:
        raise UserInputError(f"the published store is {size:.0f} MB, over {LIMIT_MB} MB: publish "
                             f"fewer runs (a store of the studies only)")
    return Published(dest, len(runs), copied, size)


def _copy_artifacts(src: Path, dest: Path, locations: list[str]) -> int:
    """The kept artifacts of every run, at the same place relative to the store's folder."""
    target = dest / ARTIFACTS
    if target.exists():
        shutil.rmtree(target)
    copied = 0
    for location in locations:
        if not location or location.startswith(("/", "file:", "<")) or "://" in location:
            continue  # outside the store (a server's, another disk's): not published
        for name in KEPT_ARTIFACTS:
            file = src / location / name
            if file.is_file():
                (dest / location).mkdir(parents=True, exist_ok=True)
                shutil.copy2(file, dest / location / name)
                copied += 1
    return copied


def is_published(folder: Path) -> bool:
    """Whether `folder` is a published store: its locations relative to itself."""
    db = folder / DB
    if not db.is_file():
        return False
    with closing(read_only(db)) as conn:
        row = conn.execute("SELECT artifact_uri FROM runs LIMIT 1").fetchone()
        if row is None:
            row = conn.execute("SELECT artifact_location FROM experiments LIMIT 1").fetchone()
    return row is not None and not str(row[0]).startswith(("file:", "/")) and "://" not in str(row[0])


def working_copy(folder: Path, keep: bool = False) -> Path:
    """A temporary store folder equal to the published `folder`, its locations absolute again
    (pointing at `folder`'s artifacts, read in place): what `make tables` and `make ui` open.
    Made once per process and version of the database, and removed when the process ends unless
    `keep` (`make ui`, whose server outlives the command that made it: then one folder per
    published store and version, made again only when either changes)."""
    folder = folder.resolve()
    if not (folder / DB).is_file():
        raise UserInputError(f"STORE={folder}: no published store there ({DB} missing)")
    version = (folder / DB).stat().st_mtime_ns
    if not keep:
        return _working_copy(folder, version)
    key = hashlib.sha256(f"{folder}:{version}".encode()).hexdigest()[:16]
    kept = Path(tempfile.gettempdir()) / f"cifar-sweep-published-{key}"
    if not (kept / DB).is_file():
        # made beside it, then renamed: a `make ui` killed halfway leaves no half-made copy
        # under the name the next one looks for
        made = Path(tempfile.mkdtemp(prefix=f"{kept.name}-", dir=kept.parent))
        try:
            _fill_working_copy(folder, made)
            if kept.exists() and not (kept / DB).is_file():  # a half-made one of older code
                shutil.rmtree(kept, ignore_errors=True)
            made.rename(kept)
        except OSError:
            if not (kept / DB).is_file():  # not another `make ui` that made it first
                raise
        finally:
            shutil.rmtree(made, ignore_errors=True)
    return kept


@cache
def _working_copy(folder: Path, _version: int) -> Path:
    tmp = Path(tempfile.mkdtemp(prefix="cifar-sweep-published-"))
    atexit.register(shutil.rmtree, tmp, True)
    _fill_working_copy(folder, tmp)
    return tmp


def _fill_working_copy(folder: Path, tmp: Path) -> None:
    """Copy the published `folder`'s database into the empty folder `tmp`, its locations made
    absolute (pointing at `folder`'s artifacts)."""
    shutil.copy2(folder / DB, tmp / DB)
    (tmp / ARTIFACTS).mkdir()
    with closing(sqlite3.connect(tmp / DB)) as db:
        for table, column in LOCATIONS:
            rows = db.execute(f'SELECT rowid, "{column}" FROM "{table}"').fetchall()
            for rowid, value in rows:
                if value and not str(value).startswith(("file:", "/")) and "://" not in str(value):
                    absolute = (folder / value).as_uri()
                    db.execute(f'UPDATE "{table}" SET "{column}" = ? WHERE rowid = ?',
                               (absolute, rowid))
        db.commit()
