"""The published store (`make publish-store`): nothing in it names the machine that made it, it
holds what the tables read and nothing else, reading it writes nothing into it, and a table made
from it equals the table made from the working store."""

from __future__ import annotations

import getpass
import hashlib
import json
import socket
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from conftest import ROOT, make_ui

PUBLISH = ROOT / "src" / "publish_store.py"
REPORT = ROOT / "src" / "report.py"


def _table_csv(folder: Path) -> str:
    found = sorted(folder.rglob("table.csv"))
    assert len(found) == 1, found
    return found[0].read_text()


def _every_text(db: Path) -> list[str]:
    """Every text value in every table: an independent read of the database."""
    values = []
    with sqlite3.connect(db) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                values += [v for v in row if isinstance(v, str)]
    return values


def _digest(folder: Path) -> dict[str, str]:
    return {str(f.relative_to(folder)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(folder.rglob("*")) if f.is_file()}


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    from conftest import Project

    work = tmp_path_factory.mktemp("publish")
    project = Project(work)
    store = (work / "working-store").resolve()
    # a preset study (so that `make tables` alone tables it into reports/lr/), 2 settings x 2 seeds;
    # its jobs one by one in the sweep's process (the basic launcher): what is checked here is the
    # store and its copy, and two worker processes each importing torch cost more than they save
    project.train("-m", "ablation=lr", "lr.value=0.005,0.01", "trainer.seed=0,1", "hydra/launcher=basic",
                  f"tracking.uri={store}", "tracking.figures=false", "tracking.log_model=false",
                  check=True)
    dest = work / "repo" / "published"
    proc = project.run(str(store), str(dest), script=PUBLISH, check=True)
    return project, store, dest, proc


def test_published_store_names_no_path_host_or_user(published):
    _project, store, dest, proc = published
    with sqlite3.connect(store / "mlflow.db") as conn:  # every run: the sweep's, the test images'
        runs = conn.execute("SELECT count(*) FROM runs").fetchone()[0]
    assert runs >= 5 and f"published {runs} runs" in proc.stdout, proc.stdout
    values = _every_text(dest / "mlflow.db")
    host, user = socket.gethostname(), getpass.getuser()
    assert not [v for v in values if str(store) in v or "file://" in v]
    assert not [v for v in values if v.startswith("/") or " /" in v or "=/" in v]
    assert not [v for v in values if host in v.split() or v == host]
    assert user not in values
    # nor in the bytes of the file (a freed page keeps an old string)
    assert str(store).encode() not in (dest / "mlflow.db").read_bytes()
    assert not list(dest.parent.glob("*.db-wal")) and not (dest / "mlflow.db-wal").exists()


def test_published_store_keeps_what_tables_read_only(published):
    _project, store, dest, _proc = published
    kept = {f.name for f in (dest / "artifacts").rglob("*") if f.is_file()}
    # the table's, the evidence columns' and the flipped-images figure's
    assert {"evaluation.json", "predictions.npz", "test_images.npz"} <= kept, kept
    assert not kept & {"best_weights.pt", "config.yaml", "curves.png", "MLmodel", "model.pth"}
    # every kept file is byte-equal to the working store's, at the same relative place
    for f in (dest / "artifacts").rglob("*"):
        if f.is_file():
            assert f.read_bytes() == (store / f.relative_to(dest)).read_bytes()


def test_a_table_from_the_published_store_equals_the_working_stores(published, tmp_path):
    project, store, dest, _proc = published
    before = _digest(dest)
    for name, uri in (("from-working", store), ("from-published", dest)):
        (tmp_path / name).mkdir()
        proc = project.run("sweep=latest", f"tracking.uri={uri}", "tracking.figures=false",
                           script=REPORT, check=True)
        # report.py writes under its working folder; read what it wrote
        for line in proc.stdout.splitlines():
            if line.startswith("wrote "):
                written = project.workdir / line.removeprefix("wrote ").strip().rstrip("/")
        (tmp_path / name / "table.csv").write_text(_table_csv(written))
    assert (tmp_path / "from-working" / "table.csv").read_text() == \
        (tmp_path / "from-published" / "table.csv").read_text()
    assert _digest(dest) == before  # reading it wrote nothing there: no lock, no journal


def test_training_into_the_published_store_is_one_line(published):
    project, _store, dest, _proc = published
    before = _digest(dest)
    proc = project.job(f"tracking.uri={dest}")
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "published store" in lines[0]
    assert _digest(dest) == before


def test_a_dataset_inputs_file_uri_is_published_without_its_path(tmp_path):
    """A run on data with a root (data=cifar10_jpeg data.root=...) logs its splits as MLflow
    dataset inputs whose source is the folder's file URI: published, it keeps the folder's name
    only, and MLflow still reads the input back."""
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.tracking import MlflowClient

    from cifar_sweep.tracking import publish

    store = tmp_path / "store"
    store.mkdir()
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    run = client.create_run(client.create_experiment("e", (store / "artifacts").as_uri()))
    data = tmp_path / "deep" / "cifar10-jpeg"
    source = json.dumps({"uri": data.as_uri()})
    client.log_inputs(run.info.run_id, datasets=[DatasetInput(
        Dataset("CIFAR-10 (JPEG copy)", "d1", "local", source),
        [InputTag("mlflow.data.context", "train")])])
    done = publish.publish(str(store), tmp_path / "published", host="no-such-host")
    db = done.folder / "mlflow.db"
    assert publish.machine_strings(db, store, "no-such-host") == []
    assert not [v for v in _every_text(db) if str(tmp_path) in v or "file://" in v]
    copy = MlflowClient(f"sqlite:///{publish.working_copy(done.folder)}/mlflow.db")
    (read,) = copy.get_run(run.info.run_id).inputs.dataset_inputs
    assert read.dataset.source == '{"uri": "<local>/cifar10-jpeg"}'


def test_a_damaged_store_is_refused_and_nothing_is_published(published, tmp_path):
    """A really damaged database (an index page of `runs` overwritten on disk): one line naming
    the store and SQLite's finding, exit 2, the destination untouched."""
    import shutil

    from conftest import Project

    _project, store, _dest, _proc = published
    damaged = tmp_path / "damaged"
    shutil.copytree(store / "artifacts", damaged / "artifacts")
    with closing(sqlite3.connect(store / "mlflow.db")) as conn:  # a copy: the module's stays sound
        conn.execute("VACUUM INTO ?", (str(damaged / "mlflow.db"),))
    with closing(sqlite3.connect(damaged / "mlflow.db")) as conn:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        [root] = conn.execute("SELECT rootpage FROM sqlite_master WHERE type = 'index' AND "
                              "tbl_name = 'runs' ORDER BY name LIMIT 1").fetchone()
    with open(damaged / "mlflow.db", "r+b") as f:  # no connection is open on it
        f.seek((root - 1) * page_size + 8)
        f.write(b"\xff" * 64)
    dest = tmp_path / "published"
    proc = Project(tmp_path).run(str(damaged), str(dest), script=PUBLISH)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    [line] = lines
    assert line.startswith(f"error: STORE={damaged}: its database is damaged (SQLite's integrity "
                           "check: "), line
    assert line.endswith("nothing published: publish a sound copy of the store"), line
    assert not dest.exists()


def test_publishing_a_server_is_refused(tmp_path):
    from conftest import Project

    proc = Project(tmp_path).run("http://127.0.0.1:9", str(tmp_path / "out"), script=PUBLISH)
    assert proc.returncode == 2 and proc.stderr.startswith("error: STORE=http://127.0.0.1:9")


def test_make_ui_serves_the_published_store_without_writing_to_it(published):
    from test_output_folders import api

    _project, _store, dest, _proc = published
    before = _digest(dest)
    with make_ui(f"STORE={dest}") as ui:
        base = ui.base
        experiment = api(base, "experiments/get-by-name", query="?experiment_name=ablation-lr")
        runs = api(base, "runs/search", {"experiment_ids": [
            experiment["experiment"]["experiment_id"]]})["runs"]
        job = next(r for r in runs if r["data"].get("tags") and any(
            t["key"] == "cifar_sweep.role" and t["value"] == "job" for t in r["data"]["tags"]))
        import urllib.request

        url = f"{base}/get-artifact?path=evaluation.json&run_uuid={job['info']['run_uuid']}"
        with urllib.request.urlopen(url, timeout=10) as answer:
            assert answer.read() == (dest / "artifacts" / job["info"]["run_uuid"] / "artifacts"
                                     / "evaluation.json").read_bytes()
    assert _digest(dest) == before


def test_the_kept_copy_for_make_ui_is_made_once_per_version_and_leaves_nothing_beside_it(
        published, tmp_path, monkeypatch):
    """`make ui`'s copy (keep=True) outlives its process: made once per published store and
    version, in one step (no half-made folder or second copy left in the temporary folder), its
    locations pointing at the published artifacts."""
    import tempfile

    from mlflow import MlflowClient

    from cifar_sweep.tracking import publish

    _project, _store, dest, _proc = published
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    first = publish.working_copy(dest, keep=True)
    again = publish.working_copy(dest, keep=True)
    assert first == again and first.parent == tmp_path
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.name]
    assert sorted(p.name for p in first.iterdir()) == ["artifacts", "mlflow.db"]
    client = MlflowClient(f"sqlite:///{first}/mlflow.db")
    run = client.search_runs([client.get_experiment_by_name("ablation-lr").experiment_id],
                             "tags.`cifar_sweep.role` = 'job'")[0]
    assert run.info.artifact_uri == (dest / "artifacts" / run.info.run_id / "artifacts").as_uri()
    # a half-made copy under that name (older code killed while copying): made again
    import shutil

    shutil.rmtree(first)
    (first / "artifacts").mkdir(parents=True)
    assert publish.working_copy(dest, keep=True) == first and (first / "mlflow.db").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.name]


def test_make_tables_alone_regenerates_the_published_tables_byte_for_byte(published, tmp_path):
    """Two checkouts, at other paths and times, each with the published store in reports/store:
    `src/report.py all published` (what `make tables` alone runs) writes the same bytes in both,
    figures (PNG, PDF) included; nothing is written into the store."""
    import shutil

    from conftest import Project

    _project, _store, dest, _proc = published
    written = {}
    for name in ("first", "second"):
        checkout = tmp_path / name / "repo"
        shutil.copytree(dest, checkout / "reports" / "store")
        store_before = _digest(checkout / "reports" / "store")
        proc = Project(checkout).run("all", "published", script=REPORT, check=True)
        assert "wrote reports/lr/" in proc.stdout, proc.stdout
        assert _digest(checkout / "reports" / "store") == store_before
        written[name] = {k: v for k, v in _digest(checkout / "reports").items()
                         if not k.startswith("store/")}
    assert any(k.endswith(".png") for k in written["first"]) and \
        any(k.endswith(".pdf") for k in written["first"]), sorted(written["first"])
    assert "lr/table.tex" in written["first"]
    assert written["first"] == written["second"]


def test_the_committed_tables_are_what_make_tables_writes_from_the_committed_store(tmp_path):
    """reports/ as committed: every table, figure and claims.md is what `make tables` alone
    (`src/report.py all published`) writes from the committed published store, byte for byte,
    in a checkout elsewhere; nothing else is there but the hand-written README.md (no table of
    earlier runs left behind)."""
    import shutil

    from conftest import Project

    committed = ROOT / "reports"
    checkout = tmp_path / "repo"
    shutil.copytree(committed / "store", checkout / "reports" / "store")
    Project(checkout).run("all", "published", script=REPORT, check=True)
    written = {k: v for k, v in _digest(checkout / "reports").items() if not k.startswith("store/")}
    kept = {k: v for k, v in _digest(committed).items()
            if not k.startswith("store/") and k != "README.md"}
    assert sorted(set(kept) - set(written)) == [], "committed, not written: stale"
    assert sorted(set(written) - set(kept)) == [], "written, not committed: run `make tables`"
    assert [k for k in kept if kept[k] != written[k]] == [], "differs: run `make tables`"
