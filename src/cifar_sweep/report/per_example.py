"""A table's per-example evidence: each of its runs' test predictions read once from the store
(`tracking/predictions.py`), then each row's numbers against the baseline's (`evidence.py`):
the test set's noise, the seeds' ensemble, churn and the two-level bootstrap interval of Δ.
Runs logged before predictions were kept have none: their rows' cells stay empty."""

from __future__ import annotations

import logging

import pandas as pd
from mlflow.exceptions import MlflowException

from cifar_sweep import evidence
from cifar_sweep.report.rows import Record
from cifar_sweep.tracking import bulk_runs
from cifar_sweep.tracking import predictions as kept
from cifar_sweep.tracking.store import sqlite_file

log = logging.getLogger(__name__)


def read_all(client, frame: pd.DataFrame, run_ids: list[str]) -> dict[str, evidence.Predictions]:
    """run id -> its predictions, for the runs (of `frame`: originals, not references) that
    logged them; each file read once."""
    if "predictions" not in frame:
        return {}
    tagged = frame[frame.run_id.isin(run_ids)].dropna(subset=["predictions"])
    artifacts = dict(zip(tagged.run_id, tagged.predictions))
    if not artifacts:
        return {}
    db = sqlite_file(client.tracking_uri)
    uris = bulk_runs.artifact_uris(db, list(artifacts)) if db is not None else None
    if uris is None:  # a server: each run asked for its artifact location
        uris = {run_id: client.get_run(run_id).info.artifact_uri for run_id in artifacts}
    out = {}
    for run_id, artifact in artifacts.items():
        if run_id not in uris:
            continue
        try:
            out[run_id] = evidence.Predictions.of(
                kept.read_artifact(uris[run_id], artifact, client.tracking_uri))
        except (OSError, MlflowException, ValueError, KeyError) as exc:  # a file gone or cut
            log.warning("run %s: its predictions could not be read (%s); its row's per-example "
                        "numbers leave it out", run_id, str(exc).splitlines()[0][:200])
    return out


def by_seed(seed_of: dict[str, str], run_ids: list[str], what: dict) -> dict:
    """seed -> what a row's runs have (their predictions, a metric), for the runs that have it;
    `seed_of`: run id -> its seed."""
    return {seed_of[r]: what[r] for r in run_ids if r in what}


def attach(client, frame: pd.DataFrame, recs: list[Record],
           draws: int = evidence.DRAWS) -> None:
    """Set each record's `evidence` (None where none of its runs has predictions)."""
    wanted = list(dict.fromkeys(run_id for rec in recs for run_id in rec.run_ids))
    loaded = read_all(client, frame, wanted)
    seed_of = dict(zip(frame.run_id, frame.seed.astype(str)))
    base = next((rec for rec in recs if rec.baseline), None)
    base_runs = by_seed(seed_of, base.run_ids, loaded) if base is not None else {}
    for rec in recs:
        runs = by_seed(seed_of, rec.run_ids, loaded)
        rec.evidence = evidence.compare(runs, None if rec is base else base_runs, draws)


def notes(recs: list[Record]) -> list[str]:
    """The table's notes on its per-example numbers: the rows without them (one line), what the
    test noise and the bootstrap interval cover, the seeds' ensembles and churn, and the rows
    that more seeds cannot settle beyond this test set."""
    out = []
    missing = [rec.label for rec in recs if rec.evidence is None]
    if missing:
        out.append(f"Test noise and Δ bootstrap are empty for {', '.join(missing)}: "
                   f"{'its' if len(missing) == 1 else 'their'} runs kept no test predictions "
                   "(made before runs kept them).")
    with_evidence = [(rec, rec.evidence) for rec in recs if rec.evidence is not None]
    if not with_evidence:
        return out
    out.append(
        "**Per-example evidence** (each run's test predictions, `predictions.npz`). Test noise "
        "(±95%): the test set's own sampling noise, the 95% half-width of the row's mean "
        "accuracy p as a binomial proportion over its N test images, 1.96 √(p(1-p)/N), in "
        "points; it bounds one row's accuracy: rows are not compared by overlapping noise, "
        "their difference's interval is the bootstrap. Δ bootstrap: Δ's 95% percentile "
        f"interval from a paired two-level bootstrap ({evidence.DRAWS:,} draws, a fixed "
        "generator seed): each draw resamples the seeds a row shares with the baseline (each "
        "side's own where it shares fewer than two) and, independently, the test images, the "
        "same for both sides. The t interval (Δ accuracy [95% CI]) covers this test set over "
        "seeds; the bootstrap covers new test images and, roughly, new seeds (with few seeds "
        "it understates the seed part). The CSV adds `ensemble_accuracy` (the accuracy of the "
        "argmax of the seeds' mean probabilities) and `churn` (the fraction of test images "
        "whose predicted class differs between two seeds, averaged over the pairs).")
    ensembles = [f"{rec.label} {100 * e.ensemble_accuracy:.2f}% (churn {100 * e.churn:.1f}%)"
                 for rec, e in with_evidence
                 if e.ensemble_accuracy is not None and e.churn is not None]
    if ensembles:
        out.append("Seeds' ensemble accuracy (their churn): " + "; ".join(ensembles) + ".")
    partial = [f"{rec.label} ({e.runs} of {len(rec.run_ids)} runs)" for rec, e in with_evidence
               if e.runs < len(rec.run_ids)]
    if partial:
        out.append("Per-example numbers over the runs that kept predictions only: "
                   + ", ".join(partial) + ".")
    unsettled = [f"{rec.label} [{e.images_only_low:+.2f}, {e.images_only_high:+.2f}]"
                 for rec, e in with_evidence if e.seeds_cannot_settle]
    if unsettled:
        out.append("More seeds cannot settle these rows beyond this test set: Δ's interval over "
                   "the test images alone (each seed's pair kept) includes 0: "
                   + "; ".join(unsettled) + ".")
    return out


def write_figures(client, frame: pd.DataFrame, recs: list[Record], fingerprint: str, out,
                  title: str, pdf: bool = True) -> list[str]:
    """The study's per-example figures into `out`: for each row against the baseline, the test
    images it flips most consistently (`flips_<n>.png`, the images from the store: logged once
    per data fingerprint, so a report made offline draws the same), and every row's per-class
    churn. Returns the files' stems; nothing where no run kept predictions."""
    from cifar_sweep.report import study_figures
    from cifar_sweep.tracking import test_images

    loaded = read_all(client, frame, [r for rec in recs for r in rec.run_ids])
    if not loaded:
        return []
    seed_of = dict(zip(frame.run_id, frame.seed.astype(str)))
    by_row = {rec.label: {seed_of[r]: loaded[r] for r in rec.run_ids if r in loaded}
              for rec in recs}
    stored = test_images.read(client, fingerprint)
    some = next(iter(loaded.values()))
    names = (list(some.classes) if some.classes else [str(c) for c in stored["classes"]]
             if stored is not None else
             [str(c) for c in range(max(int(p.label.max()) for p in loaded.values()) + 1)])
    written = []
    churn = {rec.label: evidence.per_class_churn(list(by_row[rec.label].values()), len(names))
             for rec in recs}
    shown = {label: values.tolist() for label, values in churn.items() if values is not None}
    if shown:
        study_figures.per_class_churn(shown, names, out, title, pdf)
        written.append("per_class_churn")
    base = next((rec for rec in recs if rec.baseline), None)
    if base is None or stored is None:
        return written  # no baseline to flip against, or no images in the store to show
    images = {int(i): (image.transpose(1, 2, 0), int(label)) for i, image, label in
              zip(stored["index"], stored["images"], stored["label"])}
    for number, rec in enumerate(recs, 1):
        if rec is base:
            continue
        found = evidence.flips(by_row[rec.label], by_row[base.label])
        if found is None:
            continue
        # each image with its wrong prediction: the row's where it lost it, the baseline's where
        # it gained it
        wrong = {"lost": found.lost_as, "gained": found.gained_from}
        picks = {which: [(int(found.index[p]), int(getattr(found, which)[p]),
                          int(wrong[which][p])) for p in found.most(which)]
                 for which in ("lost", "gained")}
        study_figures.flipped_images(images, names, picks["lost"], picks["gained"], found.seeds,
                                     rec.label, base.label, out, f"flips_{number}", title, pdf,
                                     (int((found.lost > 0).sum()), int((found.gained > 0).sum())))
        written.append(f"flips_{number}")
    return written
