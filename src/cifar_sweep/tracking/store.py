"""Where runs go, made ready before any MlflowClient uses it: a local SQLite store is created once,
under a file lock, and set up for several writers; a tracking server is asked whether it answers.

Why the lock: MLflow creates a missing schema in whichever process opens the database first, with
no lock between processes, so parallel sweep jobs or commands started together against a fresh
store crash in its migration ("table already exists", alembic errors).
"""

from __future__ import annotations

import logging
import os
import re
import socket
import sqlite3
from contextlib import closing
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

import requests
from filelock import FileLock
from mlflow.exceptions import MlflowException

from cifar_sweep.errors import UserInputError

log = logging.getLogger(__name__)

LOCK_TIMEOUT_S = 300  # making the schema takes seconds; far longer means a stuck process
PROBE_TIMEOUT_S = 5
# SQLite's WAL keeps its index in shared memory, which processes on different hosts cannot share
NETWORK_FS = {"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "fuse", "ceph", "glusterfs", "lustre",
              "afs", "virtiofs"}


def sqlite_file(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI (its query string dropped); None for any other URI
    and for an in-memory database."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri.removeprefix("sqlite:///").split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def read_only(db: Path, immutable: bool = False) -> sqlite3.Connection:
    """A read-only SQLite connection to `db`, its path encoded as a file URI (a `?` or `#` in a
    folder's name would otherwise cut the path short and drop `mode=ro`). `immutable`: no locks,
    no `-wal` or `-shm` files made beside it and no wait for a writer: for reading the header
    only, since it ignores what the WAL holds."""
    flags = "mode=ro&immutable=1" if immutable else "mode=ro"
    return sqlite3.connect(f"{db.resolve().as_uri()}?{flags}", uri=True)


def claim_lock(uri: str) -> FileLock | None:
    """Held by a new run from its creation until it has checked for another live run of its
    config (job/steps.py's `_claim`); None for a server, whose runs are ordered by their start instead.
    Why: without it two commands started together each checked before the other's run was
    written, and both trained (a run's start time is taken before it is written, so "the first
    started" is not "the first visible")."""
    db = sqlite_file(uri)
    return FileLock(f"{db}.claim.lock", timeout=LOCK_TIMEOUT_S) if db is not None else None


SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file
# a database URI's default port, and the pip package of each Python driver SQLAlchemy asks for
DATABASE_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}
DRIVERS = {"psycopg": "psycopg[binary] (pip install -e '.[server]')",
           "psycopg2": "psycopg2-binary", "MySQLdb": "mysqlclient", "pymysql": "pymysql",
           "pyodbc": "pyodbc"}


def not_a_database(db: Path, shown: str) -> UserInputError | None:
    """A file at `db` that is not an SQLite database (a text file, a copy cut short), said
    before MLflow opens it: SQLAlchemy's "file is not a database" is a 60-line traceback.

    SQLite itself reads the header, through its own connection: every job calls this, in
    processes that already hold MLflow's connections to `db`, and closing any other descriptor
    of the file drops every POSIX lock the process holds on it. Another process then took itself
    for the last one, checkpointed and removed the WAL under those connections, which read a
    stale store and then "database disk image is malformed" (seen: a sweep run again beside an
    open client; sqlite.org/howtocorrupt.html, 2.2). Only a file SQLite refuses is opened here."""
    try:
        with closing(read_only(db, immutable=True)) as conn:
            conn.execute("PRAGMA schema_version")  # reads the header: SQLITE_NOTADB if none
        return None
    except sqlite3.Error as exc:
        if getattr(exc, "sqlite_errorcode", None) != sqlite3.SQLITE_NOTADB:
            return None  # missing (made below), unreadable (the writable check says so), busy
    try:
        with db.open("rb") as f:  # a file SQLite refuses: no connection of ours holds it
            head = f.read(16)
    except OSError:
        return None
    if not head or head == SQLITE_HEADER:
        return None
    return UserInputError(f"tracking.uri={shown}: {db} is not an SQLite database (its first bytes "
                          f"are {head[:8]!r}); point tracking.uri at a store: a folder (mlruns), "
                          f"sqlite:///<file>.db or http://host:port")


def check_uri(uri: str) -> None:
    """A URI that is not a folder, SQLite or a server, refused in one line before MLflow opens
    it: a scheme MLflow has no store for, MLflow's retired file store, a database server that
    does not answer, or one whose Python driver is not installed."""
    scheme = urlsplit(uri).scheme.lower()
    dialect = scheme.split("+", 1)[0]
    if scheme == "file":
        folder = url2pathname(urlsplit(uri).path)
        raise UserInputError(f"tracking.uri={uri}: MLflow's file store is retired; give the folder "
                             f"itself (tracking.uri={folder}): an SQLite store is made inside it")
    if dialect in ("databricks", "databricks-uc", "uc"):
        return  # MLflow's hosted stores: their own credentials and checks
    if dialect not in DATABASE_PORTS:
        raise UserInputError(
            f"tracking.uri={uri}: no store MLflow can open ({scheme}://); use a folder (mlruns), "
            f"sqlite:///<file>.db, http(s)://host:port or a database URI (postgresql://, "
            f"mysql://, mssql://)")
    where = urlsplit(uri)
    host, port = where.hostname or "localhost", where.port or DATABASE_PORTS[dialect]
    try:
        socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S).close()
    except OSError as exc:
        why = "no answer within 5 s" if isinstance(exc, TimeoutError) else (
            exc.strerror or str(exc)).lower()
        raise UserInputError(f"tracking.uri={uri}: no {dialect} server answers at {host}:{port} "
                             f"({why}); start it or check the host and port") from None
    import sqlalchemy

    try:
        sqlalchemy.create_engine(uri).dispose()  # imports the driver; connects to nothing
    except ModuleNotFoundError as exc:
        package = DRIVERS.get(str(exc.name), str(exc.name))
        raise UserInputError(f"tracking.uri={uri}: its Python driver {exc.name} is not installed: "
                             f"pip install {package}") from None


def prepare_sqlite(db: Path, uri: str, shown: str) -> None:
    """Make sure `db` (opened by MLflow as `uri`) exists with MLflow's whole schema; `shown` is
    the user's `tracking.uri`, for the error message."""
    folder = db.parent
    refused = not_a_database(db, shown)
    if refused is not None:  # before the lock file is made beside it: nothing left behind
        raise refused
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _not_writable(shown, folder, exc.strerror or str(exc)) from None
    if not os.access(folder, os.W_OK | os.X_OK) or (db.exists() and not os.access(db, os.W_OK)):
        raise _not_writable(shown, folder, "permission denied")
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    with FileLock(f"{db}.lock", timeout=LOCK_TIMEOUT_S):
        _journal_mode(db)
        try:
            # creates and migrates the schema and the default experiment when missing; checks it
            # otherwise. The engine it makes is cached by MLflow and reused by MlflowClient.
            SqlAlchemyStore(uri, (folder / "artifacts").as_uri())
        except MlflowException as exc:
            if "mlflow db upgrade" in exc.message:  # a store made by an older MLflow
                raise UserInputError(f"tracking.uri={shown}: {exc.message}") from None
            raise


def _not_writable(shown: str, folder: Path, why: str) -> UserInputError:
    return UserInputError(f"tracking.uri={shown} is not writable: cannot write in {folder} ({why}); "
                          f"choose a folder you can write to")


def _journal_mode(db: Path) -> None:
    """WAL where the file system allows it. With the default rollback journal a writer locks out
    every reader and each commit rewrites the journal; with WAL readers (other jobs, the UI) never
    wait for writers, writers append, and only writers queue for each other. The mode is stored
    in the file, so it is set once for every later connection. The wait for a busy database is
    MLflow's: it sets `PRAGMA busy_timeout = 20000` (20 s) on each of its sessions, ample for a few
    processes each writing a few rows per epoch."""
    if _on_network_fs(db.parent):
        log.info("%s is on a network file system: SQLite's default journal, not WAL", db)
        return
    try:
        with closing(sqlite3.connect(db, timeout=30)) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
    except sqlite3.Error as exc:  # e.g. another process holds it: the store still works without
        log.warning("could not switch %s to WAL: %s", db, exc)


def _on_network_fs(path: Path) -> bool:
    """Whether `path` is on a network (or FUSE) file system, from Linux's mount table."""
    try:
        mounts = [line.split()[1:3] for line in Path("/proc/self/mounts").read_text().splitlines()]
    except OSError:
        return False
    path_s = str(path.resolve())
    inside = [m for m in mounts if path_s == m[0] or path_s.startswith(m[0].rstrip("/") + "/")]
    if not inside:
        return False
    return max(inside, key=lambda m: len(m[0]))[1].split(".")[0] in NETWORK_FS


def bound_http_retries() -> None:
    """MLflow retries a failing request 7 times with backoff 2 and a 120 s timeout: 4.5 minutes
    before a dead server is reported. Here, at most 3 retries 1, 2, 4 s (+ up to 1 s jitter each)
    apart and 15 s per request: about 10 s for a refused connection, about a minute for a server
    that accepts but never answers. Users can still set their own values."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")


def server_problem(uri: str) -> str | None:
    """Why the tracking server at `uri` does not answer (a few words), or None when it does.
    One GET of its /health, no retries, with MLflow's credentials and TLS settings."""
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    try:
        response = http_request(get_default_host_creds(uri), "/health", "GET", max_retries=0,
                                timeout=PROBE_TIMEOUT_S, raise_on_status=False)
    except Exception as exc:  # MLflow wraps requests' errors in MlflowException
        text = str(exc)
        if "timed out" in text.lower() or "timeout" in text.lower():
            return f"no answer within {PROBE_TIMEOUT_S} s"
        errno = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
        return errno.group(1).strip().lower() if errno else text.splitlines()[0][:200]
    if response.status_code in (502, 503, 504):  # a proxy in front of a server that is down
        return f"HTTP {response.status_code} {response.reason}"
    return None  # anything else, 404 or 401 included, comes from something that is there


def check_server(uri: str) -> None:
    bound_http_retries()
    problem = server_problem(uri)
    if problem:
        where = urlsplit(uri)
        raise UserInputError(
            f"tracking.uri={uri}: no tracking server answers there ({problem}); start it "
            f"(`mlflow server --host {where.hostname} --port {where.port or 5000}` on that machine) "
            f"or check the host and port")
    refused = access_problem(uri)
    if refused:
        raise UserInputError(f"tracking.uri={uri}: {refused}")


def access_problem(uri: str) -> str | None:
    """Why the server at `uri` turns these credentials away, or None. /health answers anyone, so
    an authenticating server (`mlflow server --app-name basic-auth`, a proxy) is asked once for
    one experiment: without this the first run's first request fails, as a long traceback."""
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    try:
        response = http_request(get_default_host_creds(uri), "/api/2.0/mlflow/experiments/search",
                                "GET", params={"max_results": 1}, max_retries=0,
                                timeout=PROBE_TIMEOUT_S, raise_on_status=False)
    except Exception:  # it answered /health a moment ago: let the run report what happens next
        return None
    if response.status_code not in (401, 403):
        return None
    who = who_asks(uri)
    if response.status_code == 401:
        said = "no credentials were given" if who == "you" else f"{who} was refused"
        return (f"the server asks who you are (HTTP 401) and {said}; "
                "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or "
                "MLFLOW_TRACKING_TOKEN) to an account on that server")
    return f"the server refuses {who} access (HTTP 403); ask its administrator for permission"


def who_asks(uri: str) -> str:
    """Whom MLflow's requests to `uri` name (from the environment or ~/.mlflow/credentials, as
    MLflow reads them): a user, a token, or "you" when they carry no credentials. MLflow sends a
    user only with a password."""
    from mlflow.utils.credentials import get_default_host_creds

    creds = get_default_host_creds(uri)
    if creds.username and creds.password:
        return f"user {creds.username}"
    return "the token in MLFLOW_TRACKING_TOKEN" if creds.token else "you"


def lost_server_problem(uri: str, exc: BaseException) -> str | None:
    """Why the tracking server at `uri` no longer answers (a few words) where `exc` came from it
    going away, or None (a local store, another error, or a server that answers: an ordinary
    failure). A run it ends stays RUNNING: the next start on this host finds its process gone
    and marks it KILLED (lifecycle.close_ghosts)."""
    if not uri.startswith(("http://", "https://")):
        return None
    if not isinstance(exc, (MlflowException, requests.RequestException)):
        return None
    return server_problem(uri)


def lost_server_line(uri: str, problem: str, kept: str) -> str:
    """What the user is told of a lost server: `kept` says what the same command continues."""
    return (f"lost the tracking server {uri}: {problem}; {kept}: run the same command again "
            "when the server is back")
