"""Per-example evidence (issue 38): each run's test predictions, kept as `predictions.npz`, read back
through `results.predictions` on every store kind, and each table's numbers made from them (the
test set's noise, the seeds' ensemble, churn, the paired two-level bootstrap of Δ), every one
checked against an independent computation: plain numpy on the artifacts, a loop over drawn
indices for the bootstrap, the formula for the noise."""

from __future__ import annotations

import csv
import itertools
import math
import shutil

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from cifar_sweep import evidence, results
from cifar_sweep.report import per_example
from cifar_sweep.tracking import predictions as kept
from cifar_sweep.tracking import tags as t
from conftest import ROOT, Project

# in one process (the basic launcher): on 2 busy cores faster than a process per job
SWEEP = ("-m", "hydra/launcher=basic", "lr.value=0.005,0.05", "trainer.seed=0,1,2",
         "tracking.figures=false", "tracking.log_model=false")
Z = 1.96


# --- the statistics alone, on generated predictions ---------------------------------------------

def generated(accuracies: list[float], images: int = 400, classes: int = 5, seed: int = 0,
              labels: np.ndarray | None = None) -> list[evidence.Predictions]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, images) if labels is None else labels
    runs = []
    for accuracy in accuracies:
        right = rng.random(images) < accuracy
        predicted = np.where(right, labels, (labels + rng.integers(1, classes, images)) % classes)
        probabilities = rng.dirichlet(np.ones(classes), images).astype(np.float16)
        runs.append(evidence.Predictions(np.arange(images), labels, predicted, probabilities))
    return runs


def loop_deltas(row: list[np.ndarray], base: list[np.ndarray], paired: bool, draws: int,
                seed: int, images_only: bool = False) -> np.ndarray:
    """The bootstrap as its definition says, one draw at a time over drawn indices: the slow
    reference."""
    rng = np.random.default_rng(seed)
    r, b = np.array(row, dtype=float), np.array(base, dtype=float)
    n = r.shape[1]
    out = np.empty(draws)
    for i in range(draws):
        images = rng.integers(0, n, n)
        if paired:
            seeds = np.arange(len(r)) if images_only else rng.integers(0, len(r), len(r))
            out[i] = 100 * (r[seeds][:, images] - b[seeds][:, images]).mean()
        else:
            rs = np.arange(len(r)) if images_only else rng.integers(0, len(r), len(r))
            bs = np.arange(len(b)) if images_only else rng.integers(0, len(b), len(b))
            out[i] = 100 * (r[rs][:, images].mean() - b[bs][:, images].mean())
    return out


def percentile_error(deltas: np.ndarray, draws: int) -> float:
    """The standard error of a 2.5% (97.5%) percentile of `draws` bootstrap values, by the
    normal approximation: sqrt(q(1-q)/B) / density at the quantile."""
    density = math.exp(-Z * Z / 2) / math.sqrt(2 * math.pi) / deltas.std()
    return math.sqrt(0.025 * 0.975 / draws) / density


@pytest.mark.parametrize("shared", [3, 1])
@pytest.mark.parametrize("images_only", [False, True])
def test_bootstrap_matches_a_loop_over_drawn_indices_within_its_monte_carlo_error(shared,
                                                                                 images_only):
    """Paired over 3 shared seeds, and each side's own seeds where only one is shared."""
    row_runs = generated([0.70, 0.74, 0.66], seed=1)
    base_runs = generated([0.64, 0.69, 0.62], seed=2, labels=row_runs[0].label)
    row = {str(s): p for s, p in enumerate(row_runs)}
    base = {str(s if s < shared else 10 + s): p for s, p in enumerate(base_runs)}
    fast = evidence.bootstrap_deltas(row, base, images_only=images_only)
    slow = loop_deltas([p.correct for p in row_runs], [p.correct for p in base_runs],
                       paired=shared >= 2, draws=4000, seed=7, images_only=images_only)
    # the two distributions: their means and spreads within a few Monte Carlo errors
    assert abs(fast.mean() - slow.mean()) < 4 * math.hypot(fast.std() / 100, slow.std() / math.sqrt(4000))
    assert abs(fast.std() / slow.std() - 1) < 0.08
    low, high = evidence.bootstrap_interval(row, base, images_only=images_only)
    error = math.hypot(percentile_error(fast, len(fast)), percentile_error(slow, len(slow)))
    assert abs(low - np.percentile(slow, 2.5)) < 4 * error
    assert abs(high - np.percentile(slow, 97.5)) < 4 * error
    assert len(fast) >= 10_000


def test_bootstrap_is_reproducible_and_resamples_seeds_too():
    row_runs = generated([0.70, 0.80, 0.60], seed=3)
    base_runs = generated([0.65, 0.66, 0.64], seed=4, labels=row_runs[0].label)
    row, base = dict(zip("012", row_runs)), dict(zip("012", base_runs))
    assert evidence.bootstrap_interval(row, base) == evidence.bootstrap_interval(row, base)
    both = evidence.bootstrap_interval(row, base)
    images = evidence.bootstrap_interval(row, base, images_only=True)
    # seeds that disagree widen the interval over seeds and images beyond the images' alone
    assert both[1] - both[0] > images[1] - images[0]


def test_noise_is_the_binomial_half_width():
    assert evidence.noise_half_width(0.728, 10_000) == pytest.approx(
        100 * 1.96 * math.sqrt(0.728 * 0.272 / 10_000))
    assert round(evidence.noise_half_width(0.728, 10_000), 2) == 0.87  # the example


def test_ensemble_and_churn_on_hand_made_predictions():
    labels = np.array([0, 1, 2, 0])
    probs = [np.array([[.6, .4, 0], [.5, .5, 0], [0, .2, .8], [.1, .9, 0]], dtype=np.float16),
             np.array([[.2, .8, 0], [.5, .5, 0], [0, .2, .8], [.3, .7, 0]], dtype=np.float16)]
    runs = [evidence.Predictions(np.arange(4), labels, p.argmax(1), p) for p in probs]
    # mean: [.4 .6 0] -> 1 (wrong), [.5 .5 0] -> a tie -> the lower class 0 (wrong: label 1),
    # [0 .2 .8] -> 2 (right), [.2 .8 0] -> 1 (wrong)
    assert evidence.ensemble_accuracy(runs) == 0.25
    # predicted: [0, 0, 2, 1] and [1, 0, 2, 1]: they differ on image 0
    assert evidence.churn(runs) == 0.25
    third = evidence.Predictions(np.arange(4), labels, np.array([1, 1, 2, 1]), None)
    # pairs: 1 image, 2 images (0, 1), 1 image (1) of 4 differ; no probabilities: not in the ensemble
    assert evidence.churn([*runs, third]) == pytest.approx((1 + 2 + 1) / 3 / 4)
    assert evidence.ensemble_accuracy([*runs, third]) == 0.25
    one = evidence.compare({"0": runs[0]})
    assert one.ensemble_accuracy is None and one.churn is None  # one seed: no pair, no ensemble


def test_notes_say_when_more_seeds_cannot_settle_a_row():
    runs = generated([0.70, 0.70, 0.70], seed=5)
    close = generated([0.71, 0.70, 0.69], seed=6, labels=runs[0].label)
    row = evidence.compare(dict(zip("012", close)), dict(zip("012", runs)))
    assert row.images_only_low < 0 < row.images_only_high and row.seeds_cannot_settle
    from cifar_sweep.report.rows import Record

    recs = [Record("a", "", ["r1"], ["0"], ["1"], True, {}, None, {}),
            Record("b", "", ["r2"], ["0"], ["1"], False, {}, None, {}, evidence=row),
            Record("c", "", ["r3"], ["0"], ["1"], False, {}, None, {})]
    notes = "\n".join(per_example.notes(recs))
    assert "Test noise and Δ bootstrap are empty for a, c: their runs kept no test predictions" \
        in notes
    assert (f"More seeds cannot settle these rows beyond this test set: Δ's interval over the "
            f"test images alone (each seed's pair kept) includes 0: b "
            f"[{row.images_only_low:+.2f}, {row.images_only_high:+.2f}]") in notes


# --- a real sweep: its artifacts, results.predictions and table.csv -------------------------------

@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Project:
    """A 2-setting x 3-seed sweep on generated data (it logs its table on its parent run)."""
    project = Project(tmp_path_factory.mktemp("evidence"))
    project.train(*SWEEP, check=True)
    return project


def jobs(project: Project) -> list:
    return [r for r in project.runs() if r.data.tags.get(t.ROLE) == t.ROLE_JOB]


def raw_artifact(client: MlflowClient, run_id: str, folder) -> dict[str, np.ndarray]:
    """The file as a user without this package reads it: MLflow's download, numpy's load."""
    path = client.download_artifacts(run_id, "predictions.npz", str(folder))
    with np.load(path, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def test_every_run_keeps_its_predictions_as_a_plain_numpy_file(sweep, tmp_path):
    runs = jobs(sweep)
    assert len(runs) == 6
    for run in runs:
        assert run.data.tags[t.PREDICTIONS] == "predictions.npz"
        raw = raw_artifact(sweep.client, run.info.run_id, tmp_path / run.info.run_id)
        assert set(raw) == {"index", "label", "predicted", "probabilities", "classes"}
        n = len(raw["label"])
        assert n == 500 and raw["probabilities"].shape == (n, 10)  # data=synthetic's test split
        assert raw["probabilities"].dtype == np.float16
        assert np.array_equal(raw["index"], np.arange(n))
        assert np.allclose(raw["probabilities"].astype(float).sum(1), 1, atol=1e-2)
        # the file's accuracy is the run's test_accuracy (torchmetrics, from the logits)
        assert np.mean(raw["predicted"] == raw["label"]) == pytest.approx(
            run.data.metrics["test_accuracy"], abs=1e-6)
        # results.predictions gives the same, on a folder store and on its SQLite URI
        for uri in (str(sweep.store), f"sqlite:///{sweep.store / 'mlflow.db'}"):
            frame = results.predictions(run.info.run_id, tracking_uri=uri)
            assert list(frame.columns) == ["index", "label", "predicted",
                                           *[f"p_{c}" for c in range(10)]]
            assert np.array_equal(frame.predicted, raw["predicted"])
            assert np.array_equal(frame[[f"p_{c}" for c in range(10)]].to_numpy(),
                                  raw["probabilities"])


def test_a_reference_run_gives_its_originals_predictions(sweep):
    """A reference run as a sweep writes one (tracking/runs.log_reference), by hand."""
    from cifar_sweep.tracking.runs import log_reference

    client = sweep.client
    original = jobs(sweep)[0]
    log_reference(client, original.info.experiment_id, "a reference", {"k": "v"}, {},
                  original, 1, ending=lambda exc: None)
    [ref] = [r for r in sweep.runs() if r.data.tags.get(t.ROLE) == t.ROLE_REFERENCE]
    assert ref.data.tags[t.SAME_AS] == original.info.run_id and t.PREDICTIONS not in ref.data.tags
    pd.testing.assert_frame_equal(results.predictions(ref.info.run_id, str(sweep.store)),
                                  results.predictions(original.info.run_id, str(sweep.store)))
    client.delete_run(ref.info.run_id)  # the other tests' store as the sweep left it


@pytest.mark.slow  # the same sweep again (about 20 s): every job a reference written in bulk
def test_a_sweeps_reference_runs_give_their_originals_predictions(sweep):
    sweep.train(*SWEEP, check=True)
    references = [r for r in sweep.runs() if r.data.tags.get(t.ROLE) == t.ROLE_REFERENCE]
    assert len(references) == 6  # the second command trained nothing
    for ref in references:
        original = ref.data.tags[t.SAME_AS]
        pd.testing.assert_frame_equal(results.predictions(ref.info.run_id, str(sweep.store)),
                                      results.predictions(original, str(sweep.store)))


def parent_table(project: Project, name: str) -> str:
    """table.csv or table.md as the first sweep logged it on its parent run."""
    parents = [r for r in project.runs() if r.data.tags.get(t.ROLE) == t.ROLE_SWEEP]
    first = min(parents, key=lambda r: r.info.start_time)
    path = project.client.download_artifacts(first.info.run_id, f"table/{name}",
                                             str(project.workdir / "parent"))
    with open(path) as f:
        return f.read()


def table_rows(project: Project) -> dict[str, dict]:
    return {row["setting"]: row
            for row in csv.DictReader(parent_table(project, "table.csv").splitlines())}


def correct_matrix(frames: list[pd.DataFrame]) -> np.ndarray:
    return np.stack([(f.predicted == f.label).to_numpy() for f in frames]).astype(float)


def test_table_csv_numbers_equal_a_recomputation_from_the_predictions(sweep):
    rows = table_rows(sweep)
    assert set(rows) == {"lr.value=0.005", "lr.value=0.05"}
    frames = {}
    for setting, row in rows.items():
        by_seed = dict(zip(row["seeds"].split(), row["run_ids"].split()))
        frames[setting] = [results.predictions(by_seed[s], str(sweep.store)) for s in "012"]
    for setting, row in rows.items():
        runs = frames[setting]
        correct = correct_matrix(runs)
        p, n = correct.mean(), correct.shape[1]
        # the noise by its formula, on the row's mean accuracy (the runs' metric)
        assert float(row["test_noise_95"]) == pytest.approx(
            100 * Z * math.sqrt(p * (1 - p) / n), abs=1e-4)
        assert float(row["test_accuracy_mean"]) == pytest.approx(p, abs=1e-6)
        # the ensemble: float16 probabilities averaged in float64, argmax (ties: lower class)
        probs = np.mean([f[[f"p_{c}" for c in range(10)]].to_numpy(np.float64) for f in runs], 0)
        assert float(row["ensemble_accuracy"]) == np.mean(probs.argmax(1) == runs[0].label)
        # churn: every pair of seeds, the fraction of images predicted differently
        pairs = [np.mean(a.predicted.to_numpy() != b.predicted.to_numpy())
                 for a, b in itertools.combinations(runs, 2)]
        assert float(row["churn"]) == pytest.approx(np.mean(pairs), abs=1e-12)
    base, other = rows["lr.value=0.005"], rows["lr.value=0.05"]
    assert base["delta_boot_low"] == base["delta_boot_high"] == ""  # the baseline itself
    # the bootstrap: a 50,000-draw reference by drawn indices (chunks of draws at once)
    diff = correct_matrix(frames["lr.value=0.05"]) - correct_matrix(frames["lr.value=0.005"])
    rng = np.random.default_rng(12345)
    deltas = []
    for _ in range(10):
        seeds = rng.integers(0, 3, (5000, 3))
        images = rng.integers(0, diff.shape[1], (5000, diff.shape[1]))
        deltas.append(100 * diff[seeds[:, :, None], images[:, None, :]].mean((1, 2)))
    low, high = np.percentile(np.concatenate(deltas), [2.5, 97.5])
    assert abs(float(other["delta_boot_low"]) - low) < 0.4
    assert abs(float(other["delta_boot_high"]) - high) < 0.4
    # the markdown shows the noise and the bootstrap interval
    md = parent_table(sweep, "table.md")
    assert "Test noise (±95%)" in md and "Δ bootstrap [95%]" in md
    assert f"±{float(base['test_noise_95']):.2f}" in md
    assert (f"[{float(other['delta_boot_low']):+.2f}, {float(other['delta_boot_high']):+.2f}]"
            in md)
    assert "**Per-example evidence**" in md  # what each interval covers


def test_results_evidence_on_two_lists_of_runs_is_the_tables(sweep):
    rows = table_rows(sweep)
    found = results.evidence(rows["lr.value=0.05"]["run_ids"].split(),
                             rows["lr.value=0.005"]["run_ids"].split(),
                             tracking_uri=str(sweep.store))
    for name in ("test_noise_95", "ensemble_accuracy", "churn", "delta_boot_low",
                 "delta_boot_high"):
        assert getattr(found, name) == pytest.approx(float(rows["lr.value=0.05"][name]),
                                                     abs=1e-9), name
    assert found.paired_seeds == 3


def test_a_store_with_runs_made_before_predictions_still_tables(sweep, tmp_path, monkeypatch):
    """The runs of one setting as older code left them: no tag, no file; report.py's command
    in-process (its own process costs the imports again)."""
    from cifar_sweep.commands.report import main

    old = Project(tmp_path)
    shutil.copytree(sweep.store, old.store)
    client = old.client
    rows = table_rows(sweep)
    for run_id in rows["lr.value=0.05"]["run_ids"].split():
        client.delete_tag(run_id, t.PREDICTIONS)
    # and one baseline run whose file is gone (its tag kept): left out, said in a note
    import sqlite3
    from contextlib import closing

    gone = rows["lr.value=0.005"]["run_ids"].split()[0]
    with closing(sqlite3.connect(old.store / "mlflow.db")) as db, db:
        db.execute("UPDATE runs SET artifact_uri = ? WHERE run_uuid = ?",
                   ((tmp_path / "gone").as_uri(), gone))
    monkeypatch.chdir(tmp_path)
    assert main(["sweep=latest", f"tracking.uri={old.store}", "tracking.figures=false"]) == 0
    [out] = {p.parent for p in tmp_path.glob("**/table.csv") if old.store not in p.parents}
    with (out / "table.csv").open() as f:
        table = {row["setting"]: row for row in csv.DictReader(f)}
    for name in ("test_noise_95", "ensemble_accuracy", "churn", "delta_boot_low",
                 "delta_boot_high"):
        assert table["lr.value=0.05"][name] == ""
    kept_runs = [results.predictions(r, str(sweep.store))
                 for r in rows["lr.value=0.005"]["run_ids"].split() if r != gone]
    p = np.mean([(f.predicted == f.label).mean() for f in kept_runs])
    assert float(table["lr.value=0.005"]["test_noise_95"]) == pytest.approx(
        100 * Z * math.sqrt(p * (1 - p) / 500), abs=1e-9)  # over the two runs left
    md = (out / "table.md").read_text()
    assert "Per-example numbers over the runs that kept predictions only: 0.005 (2 of 3 runs)" \
        in md
    assert ("Test noise and Δ bootstrap are empty for 0.05: its runs kept no test predictions"
            in md)
    with pytest.raises(LookupError, match="no test predictions logged"):
        results.predictions(rows["lr.value=0.05"]["run_ids"].split()[0], str(old.store))


def test_probabilities_off_keeps_the_predicted_class():
    columns = kept.arrays(np.eye(3)[[0, 2, 1, 1]], np.array([0, 2, 2, 1]), ["a", "b", "c"],
                          probabilities=False)
    assert "probabilities" not in columns
    frame = kept.frame(columns)
    assert list(frame.columns) == ["index", "label", "predicted"]
    assert frame.predicted.tolist() == [0, 2, 1, 1] and frame["index"].tolist() == [0, 1, 2, 3]
    on = evidence.Predictions.of(frame)
    assert on.probabilities is None and evidence.ensemble_accuracy([on, on]) is None
    assert evidence.churn([on, on]) == 0.0


@pytest.mark.slow  # two jobs (in this process): the setting's plumbing and identity
def test_probabilities_off_in_a_run_changes_no_identity(tmp_path):
    project = Project(tmp_path)
    project.job("trainer.seed=7", "tracking.predictions_probabilities=false",
                "tracking.figures=false", "tracking.log_model=false", check=True)
    [run] = jobs(project)
    frame = results.predictions(run.info.run_id, str(project.store))
    assert list(frame.columns) == ["index", "label", "predicted"]
    raw = raw_artifact(project.client, run.info.run_id, tmp_path / "raw")
    assert "probabilities" not in raw
    # a tracking setting: the same config with probabilities on is the finished run
    proc = project.job("trainer.seed=7", "tracking.figures=false", "tracking.log_model=false",
                       check=True)
    assert len(jobs(project)) == 1, proc.stdout + proc.stderr


@pytest.mark.slow  # a real `mlflow server`: about 20 s to start
def test_predictions_read_back_through_a_server(tmp_path):
    from conftest import free_port
    from test_server import Server

    server = Server(tmp_path / "server", free_port())
    server.start()
    try:
        client = MlflowClient(tracking_uri=server.uri)
        experiment = client.create_experiment("evidence")
        run_id = client.create_run(experiment).info.run_id
        rng = np.random.default_rng(0)
        logits, labels = rng.normal(size=(300, 4)), rng.integers(0, 4, 300)
        written = kept.log(client, run_id, logits, labels, ["a", "b", "c", "d"],
                           index=np.arange(1000, 1300))
        ref_id = client.create_run(experiment, tags={t.ROLE: t.ROLE_REFERENCE,
                                                     t.SAME_AS: run_id}).info.run_id
        for asked in (run_id, ref_id):
            frame = results.predictions(asked, tracking_uri=server.uri)
            assert np.array_equal(frame["index"], np.arange(1000, 1300))
            assert np.array_equal(frame.predicted, logits.argmax(1))
            assert np.array_equal(frame[[f"p_{c}" for c in range(4)]].to_numpy(),
                                  written["probabilities"])
            assert frame.attrs["classes"] == ["a", "b", "c", "d"]
        assert list((server.folder / "artifacts").rglob("predictions.npz"))  # on the server
    finally:
        server.kill()


# --- the images behind a difference: from the store, logged once per data fingerprint -----------

def test_test_images_are_logged_once_per_fingerprint_and_match_the_data(sweep):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from cifar_sweep.tracking import test_images

    client = sweep.client
    experiment = client.get_experiment_by_name(test_images.EXPERIMENT)
    stored_runs = client.search_runs([experiment.experiment_id])
    fingerprint = jobs(sweep)[0].data.tags[t.DATA_FINGERPRINT]
    assert [r.data.tags[t.DATA_FINGERPRINT] for r in stored_runs] == [fingerprint]  # 6 jobs: one copy
    stored = test_images.read(client, fingerprint)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["data=synthetic"])
    _, test, _ = instantiate(cfg.data.source).decode()  # the source itself, decoded again
    assert stored["images"].dtype == np.uint8
    assert np.array_equal(stored["images"], test.images.numpy())
    assert np.array_equal(stored["label"], test.labels.numpy())
    assert np.array_equal(stored["index"], np.arange(len(test.labels)))
    assert test_images.read(client, "synthetic-not-stored") is None


def test_flips_and_per_class_churn_figures_from_the_store(sweep, tmp_path):
    from cifar_sweep.report.studies import TableSpec, build_table

    client = sweep.client
    table = build_table(client, TableSpec("evidence", "cifar-sweep", kind="Sweep"))
    stems = per_example.write_figures(client, table.frame, table.records,
                                      table.data["data_fingerprint"], tmp_path, "t", pdf=False)
    assert stems == ["per_class_churn", "flips_2"]
    assert all((tmp_path / f"{stem}.png").stat().st_size > 10_000 for stem in stems)
    # the counts behind the figure, against plain numpy on results.predictions
    rows = table_rows(sweep)
    frames = {}
    for setting, row in rows.items():
        by_seed = dict(zip(row["seeds"].split(), row["run_ids"].split()))
        frames[setting] = [results.predictions(by_seed[s], str(sweep.store)) for s in "012"]
    row_right = correct_matrix(frames["lr.value=0.05"]).astype(bool)
    base_right = correct_matrix(frames["lr.value=0.005"]).astype(bool)
    found = evidence.flips(*[{s: evidence.Predictions.of(f) for s, f in zip("012", frames[k])}
                             for k in ("lr.value=0.05", "lr.value=0.005")])
    assert np.array_equal(found.lost, (base_right & ~row_right).sum(0))
    assert np.array_equal(found.gained, (~base_right & row_right).sum(0))
    # each flipped image's wrong prediction: the most frequent over the seeds it flipped in
    row_pred = np.stack([f.predicted.to_numpy() for f in frames["lr.value=0.05"]])
    base_pred = np.stack([f.predicted.to_numpy() for f in frames["lr.value=0.005"]])
    for image in range(row_pred.shape[1]):
        for flipped, pred, got in ((base_right & ~row_right, row_pred, found.lost_as),
                                   (~base_right & row_right, base_pred, found.gained_from)):
            seeds = flipped[:, image]
            if not seeds.any():
                assert got[image] == -1
                continue
            counts = np.bincount(pred[seeds, image], minlength=10)
            assert got[image] == int(np.argmax(counts)) and got[image] != frames[
                "lr.value=0.05"][0].label.iloc[image]
    top = found.most("gained")
    assert len(top) == min(16, int((found.gained > 0).sum()))
    assert list(found.gained[top]) == sorted(found.gained[found.gained > 0], reverse=True)[:16]
    # per-class churn of the fast rate's seeds
    runs = frames["lr.value=0.05"]
    label = runs[0].label.to_numpy()
    expected = np.mean([[np.mean((a.predicted != b.predicted).to_numpy()[label == c])
                         for c in range(10)] for a, b in itertools.combinations(runs, 2)], 0)
    got = evidence.per_class_churn([evidence.Predictions.of(f) for f in runs], 10)
    assert np.allclose(got, expected, atol=1e-12)


def test_a_deleted_test_images_experiment_fails_no_run(tmp_path):
    from omegaconf import OmegaConf

    from cifar_sweep.tracking import test_images
    from cifar_sweep.tracking.experiments import open_experiment

    client, experiment_id = open_experiment(OmegaConf.create(
        {"uri": str(tmp_path / "mlruns"), "experiment": test_images.EXPERIMENT}))
    images, labels = np.zeros((4, 3, 2, 2), dtype=np.uint8), np.arange(4)
    assert test_images.log_once(client, str(tmp_path / "mlruns"), "fp", images, labels, list("abcd"))
    assert not test_images.log_once(client, str(tmp_path / "mlruns"), "fp", images, labels,
                                    list("abcd"))  # once
    assert np.array_equal(test_images.read(client, "fp")["images"], images)
    client.delete_experiment(experiment_id)
    assert not test_images.log_once(client, str(tmp_path / "mlruns"), "fp2", images, labels,
                                    list("abcd"))


def test_the_terminal_table_shows_the_noise_and_the_bootstrap_where_runs_kept_predictions():
    """The table a sweep prints as it ends: the two columns appear once a row has evidence, with
    the row's own numbers; without predictions (older runs) the table is as it was."""
    from cifar_sweep.evidence import Evidence
    from cifar_sweep.report.studies import terminal
    from conftest import hand_made_table

    table = hand_made_table({"0.005": {s: {"test_accuracy": 0.70 + s / 100,
                                           "test_f1_weighted": 0.7} for s in (0, 1)},
                             "0.01": {s: {"test_accuracy": 0.72 + s / 100,
                                          "test_f1_weighted": 0.7} for s in (0, 1)}}, "0.005")
    plain = terminal(table)
    assert "test noise" not in plain and "bootstrap" not in plain
    base, row = table.records
    base.evidence = Evidence(10_000, 2, 0.705, 0.8934, 0.71, 0.1)
    row.evidence = Evidence(10_000, 2, 0.725, 0.8751, 0.73, 0.1, 1.234, 2.987)
    header, first, second = terminal(table).splitlines()[1:4]
    assert header.split()[:4] == ["lr.value", "accuracy", "%", "test"]
    assert header.endswith("Δ bootstrap [95%]")
    assert "±0.89" in first and first.endswith("(baseline)")  # no interval on the baseline
    assert "±0.88" in second and second.endswith("[+1.23, +2.99]")
