"""Per-example evidence: what a setting's runs' test predictions say beyond their accuracies. A
table's rows and a notebook (`cifar_sweep.results.evidence`) use the same functions.

- `noise_half_width`: the test set's own sampling noise, the 95% half-width of an accuracy p
  over N test images as a binomial proportion, 1.96 x sqrt(p(1-p)/N). It bounds one row's
  accuracy; two rows are not compared by overlapping it (their difference is paired: below).
- `ensemble_accuracy`: the accuracy of the argmax of the seeds' mean class probabilities (the
  stored float16 values averaged in float64; a tie goes to the lower class).
- `churn`: over every pair of seeds, the fraction of test images whose predicted class differs,
  averaged over the pairs.
- `bootstrap_interval`: Δ's 95% percentile interval over seeds and test images together, a
  paired two-level bootstrap. Each draw resamples, with replacement, the seeds the row shares
  with the baseline and, independently, the test images; the same seeds and images for both
  sides; Δ of a draw = the mean over the drawn seeds and images of (row correct - baseline
  correct), in points. With fewer than two shared seeds each side's seeds are resampled on
  their own (the images still shared). `images_only=True` keeps every seed (each seed's pair)
  and resamples the images alone: where that interval holds 0, more seeds cannot settle the
  difference beyond this test set.

How the bootstrap is vectorised: given a draw's seeds, an image counts in its Δ only through
its score (on how many drawn seeds the row, and the baseline, are right); a draw of N images with
replacement is then one multinomial draw over the few scores, weighted by how many test images
have each: exactly the same distribution as drawing N indices (tests/test_evidence.py holds it to
a loop over drawn indices), at the cost of `draws` x (S+1)^2 binomials instead of `draws` x N x S
look-ups. The generator's seed is fixed (BOOTSTRAP_SEED): a table made twice is the same.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

Z95 = 1.96
DRAWS = 10_000
BOOTSTRAP_SEED = 20240  # fixed: the same runs give the same interval in every table


@dataclass(frozen=True)
class Predictions:
    """One run's test predictions (see tracking/predictions.py): aligned by `index`."""

    index: np.ndarray                 # int, each example's position in the full test set
    label: np.ndarray                 # int, its class
    predicted: np.ndarray             # int, the predicted class
    probabilities: np.ndarray | None  # float16, N x C; None where the run kept none
    classes: tuple[str, ...] = ()     # the class names, where known

    @classmethod
    def of(cls, columns) -> Predictions:
        """From the artifact's columns (a dict of arrays) or `results.predictions`' DataFrame."""
        if hasattr(columns, "columns"):  # a DataFrame: p_0 ... p_<C-1>
            names = [c for c in columns.columns if str(c).startswith("p_")]
            probabilities = columns[names].to_numpy() if names else None
            return cls(columns["index"].to_numpy(), columns["label"].to_numpy(),
                       columns["predicted"].to_numpy(), probabilities,
                       tuple(columns.attrs.get("classes", ())))
        return cls(columns["index"], columns["label"], columns["predicted"],
                   columns.get("probabilities"), tuple(str(c) for c in columns.get("classes", ())))

    @property
    def correct(self) -> np.ndarray:
        return self.predicted == self.label

    def __len__(self) -> int:
        return len(self.label)


def aligned(runs: list[Predictions]) -> list[Predictions]:
    """The runs on the test examples they all hold, in one order: as they are where their
    indices agree (one test set), else their common examples ordered by index."""
    if all(np.array_equal(runs[0].index, r.index) for r in runs[1:]):
        return runs
    common = runs[0].index
    for run in runs[1:]:
        common = np.intersect1d(common, run.index)
    out = []
    for run in runs:
        at = np.flatnonzero(np.isin(run.index, common))
        at = at[np.argsort(run.index[at], kind="stable")]
        out.append(Predictions(run.index[at], run.label[at], run.predicted[at],
                               None if run.probabilities is None else run.probabilities[at],
                               run.classes))
    return out


def noise_half_width(accuracy: float, images: int) -> float:
    """The 95% half-width of an accuracy (a fraction) over `images` test images, in points."""
    return 100 * Z95 * math.sqrt(accuracy * (1 - accuracy) / images)


def ensemble_accuracy(runs: list[Predictions]) -> float | None:
    """The accuracy (a fraction) of the argmax of the runs' mean probabilities; None with fewer
    than two runs that kept probabilities."""
    kept = aligned([r for r in runs if r.probabilities is not None])
    if len(kept) < 2:
        return None
    total = np.zeros(kept[0].probabilities.shape, dtype=np.float64)  # type: ignore[union-attr]
    for run in kept:
        total += run.probabilities
    # argmax takes the first of equal values: a tie goes to the lower class
    return float(np.mean(total.argmax(1) == kept[0].label))


def churn(runs: list[Predictions]) -> float | None:
    """The fraction of test images whose predicted class differs between two runs, averaged
    over every pair; None with fewer than two runs."""
    if len(runs) < 2:
        return None
    runs = aligned(runs)
    return float(np.mean([np.mean(a.predicted != b.predicted)
                          for a, b in itertools.combinations(runs, 2)]))


def _patterns(columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the distinct columns of a K x N matrix of -1/0/1, P x K; how many columns each is, P).
    Each column read as one base-3 number where it fits an int64 (a 1-d unique: 50x faster
    than numpy's unique over rows, which sorts them as records)."""
    if len(columns) > 39:  # 3^40 > 2^63
        unique, counts = np.unique(columns.T, axis=0, return_counts=True)
        return unique.astype(np.float64), counts
    codes = (columns.astype(np.int64) + 1).T @ (3 ** np.arange(len(columns), dtype=np.int64))
    _, first, counts = np.unique(codes, return_index=True, return_counts=True)
    return columns[:, first].T.astype(np.float64), counts


def bootstrap_interval(row: dict[str, Predictions], baseline: dict[str, Predictions],
                       draws: int = DRAWS, seed: int = BOOTSTRAP_SEED,
                       images_only: bool = False) -> tuple[float, float] | None:
    """Δ's 95% percentile interval in points (see the module): `row`, `baseline`: seed -> a
    run's predictions. Paired over the shared seeds where there are two or more, else each
    side's seeds on their own. None where a side has no run."""
    if not row or not baseline:
        return None
    deltas = bootstrap_deltas(row, baseline, draws, seed, images_only)
    low, high = np.percentile(deltas, [2.5, 97.5])
    return float(low), float(high)


CHUNK = 1000  # seed draws at a time: a chunk's draws x patterns matrices stay a few MB


def bootstrap_deltas(row: dict[str, Predictions], baseline: dict[str, Predictions],
                     draws: int = DRAWS, seed: int = BOOTSTRAP_SEED,
                     images_only: bool = False) -> np.ndarray:
    """The `draws` bootstrap values of Δ (points) behind `bootstrap_interval`.

    How: a draw first resamples the seeds (each seed's count, `c`); given those, an image
    counts in the draw's Δ only through its *score*: paired, c · (row correct - baseline
    correct), an integer in [-S, S]; unpaired, the drawn seeds on which the row is right and
    those on which the baseline is. So the N images drawn with replacement are one multinomial
    draw over the few scores, each weighted by how many test images have it: the same
    distribution as drawing N indices, at the cost of a multinomial over at most (S+1)^2
    values. Images with one pattern of correctness over the runs share every score, so scores
    are computed per pattern, and per distinct draw of the seeds (with 3 seeds, 10 of them)."""
    rng = np.random.default_rng(seed)
    shared = [s for s in row if s in baseline]
    paired = len(shared) >= 2
    row_runs = [row[s] for s in shared] if paired else list(row.values())
    base_runs = [baseline[s] for s in shared] if paired else list(baseline.values())
    runs = aligned(row_runs + base_runs)
    n_row, n_base = len(row_runs), len(base_runs)
    correct = np.stack([r.correct for r in runs]).astype(np.int8)
    if paired:  # a draw's Δ: the mean over drawn seeds of (row - baseline): score c · d
        patterns, counts = _patterns(correct[:n_row] - correct[n_row:])
        values = np.arange(-n_row, n_row + 1) / n_row
    else:  # the row's drawn seeds' mean minus the baseline's: score (a, b), a * (n_base + 1) + b
        patterns, counts = _patterns(correct)
        a, b = np.divmod(np.arange((n_row + 1) * (n_base + 1)), n_base + 1)
        values = a / n_row - b / n_base
    images = int(counts.sum())
    seeds = _seed_counts(rng, n_row, draws, images_only)
    if not paired:
        seeds = np.concatenate([seeds, _seed_counts(rng, n_base, draws, images_only)], axis=1)
    # the seeds' draws, each distinct one once: the images' weight on each score under it
    distinct, which = _distinct_rows(seeds)
    weight = np.empty((len(distinct), len(values)))
    for start in range(0, len(distinct), CHUNK):
        chunk = distinct[start:start + CHUNK].astype(np.float64)  # (BLAS: exact small integers)
        if paired:
            score = np.rint(chunk @ patterns.T).astype(np.int64) + n_row
        else:
            score = (np.rint(chunk[:, :n_row] @ patterns[:, :n_row].T) * (n_base + 1)
                     + np.rint(chunk[:, n_row:] @ patterns[:, n_row:].T)).astype(np.int64)
        offsets = np.arange(len(chunk))[:, None] * len(values)
        weight[start:start + len(chunk)] = np.bincount(
            (score + offsets).ravel(), np.broadcast_to(counts, score.shape).ravel(),
            minlength=len(chunk) * len(values)).reshape(-1, len(values))
    used = weight.any(0)
    probabilities = weight[:, used] / images
    if len(distinct) == 1:  # every seed kept (images only): one multinomial for every draw
        drawn = rng.multinomial(images, probabilities[0], size=draws)
    else:
        drawn = rng.multinomial(images, probabilities[which])  # draws x scores
    return 100 * drawn @ values[used] / images


def _distinct_rows(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the distinct rows of a draws x seeds matrix of counts, each row's place among them)."""
    base = int(counts.max()) + 1
    if counts.shape[1] * math.log2(base) >= 63:
        distinct, which = np.unique(counts, axis=0, return_inverse=True)
        return distinct, which.ravel()
    codes = counts @ (base ** np.arange(counts.shape[1], dtype=np.int64))
    _, first, which = np.unique(codes, return_index=True, return_inverse=True)
    return counts[first], which.ravel()


def _seed_counts(rng: np.random.Generator, seeds: int, draws: int,
                 images_only: bool) -> np.ndarray:
    """draws x seeds: how often each seed is drawn (each once where `images_only`)."""
    if images_only:
        return np.ones((draws, seeds), dtype=np.int64)
    return rng.multinomial(seeds, np.full(seeds, 1 / seeds), size=draws)


@dataclass(frozen=True)
class Evidence:
    """A row's per-example numbers (None where they cannot be made)."""

    images: int                          # test images the predictions cover
    runs: int                            # the row's runs with predictions
    accuracy: float                      # their mean test accuracy (a fraction)
    test_noise_95: float                 # points
    ensemble_accuracy: float | None      # a fraction
    churn: float | None                  # a fraction
    delta_boot_low: float | None = None  # points; None on the baseline row
    delta_boot_high: float | None = None
    images_only_low: float | None = None  # the interval over test images alone
    images_only_high: float | None = None
    paired_seeds: int = 0                # the shared seeds the bootstrap paired (0: unpaired)

    @property
    def seeds_cannot_settle(self) -> bool:
        """The interval over test images alone holds 0: more seeds cannot settle Δ beyond this
        test set."""
        return (self.images_only_low is not None and self.images_only_high is not None
                and self.images_only_low <= 0 <= self.images_only_high)


def compare(row: dict[str, Predictions], baseline: dict[str, Predictions] | None = None,
            draws: int = DRAWS, accuracy: float | None = None) -> Evidence | None:
    """Every per-example number of a row (seed -> its run's predictions) against the baseline's
    (None: the baseline row itself, no interval). `accuracy`: the row's mean test accuracy for
    the noise, where the caller has it (a table: its runs' metric); else from the predictions.
    None where the row has no predictions."""
    if not row:
        return None
    runs = aligned(list(row.values()))
    mean = float(np.mean([r.correct.mean() for r in runs])) if accuracy is None else accuracy
    interval = images = None
    if baseline and row is not baseline:
        interval = bootstrap_interval(row, baseline, draws)
        images = bootstrap_interval(row, baseline, draws, images_only=True)
    shared = sum(s in (baseline or {}) for s in row)
    return Evidence(
        images=len(runs[0]), runs=len(runs), accuracy=mean,
        test_noise_95=noise_half_width(mean, len(runs[0])),
        ensemble_accuracy=ensemble_accuracy(runs), churn=churn(runs),
        delta_boot_low=interval[0] if interval else None,
        delta_boot_high=interval[1] if interval else None,
        images_only_low=images[0] if images else None,
        images_only_high=images[1] if images else None,
        paired_seeds=shared if shared >= 2 and interval else 0)


@dataclass(frozen=True)
class Flips:
    """A row's test images against the baseline's, over the seeds they share: per image, in how
    many seeds the baseline is right and the row wrong (`lost`), and the reverse (`gained`)."""

    index: np.ndarray      # each image's position in the full test set
    label: np.ndarray
    lost: np.ndarray       # seeds: baseline right, row wrong
    gained: np.ndarray     # seeds: baseline wrong, row right
    lost_as: np.ndarray      # per image, the row's most frequent (wrong) prediction over the
                             # seeds it lost the image in; -1 where it lost it in none
    gained_from: np.ndarray  # per image, the baseline's most frequent (wrong) prediction over
                             # the seeds the row gained it in; -1 where none
    seeds: int

    def most(self, which: str, count: int = 16) -> np.ndarray:
        """Positions (into these arrays) of the `count` images flipped in the most seeds, `lost`
        or `gained`, at least one; ties in the test set's order."""
        values = getattr(self, which)
        order = np.lexsort((self.index, -values))
        return order[values[order] > 0][:count]


def flips(row: dict[str, Predictions], baseline: dict[str, Predictions]) -> Flips | None:
    """The images behind a row's difference to the baseline, over their shared seeds (same seed
    = same initialisation and data order); None where they share none."""
    shared = [s for s in row if s in baseline]
    if not shared:
        return None
    runs = aligned([row[s] for s in shared] + [baseline[s] for s in shared])
    k = len(shared)
    row_right = np.stack([r.correct for r in runs[:k]])
    base_right = np.stack([r.correct for r in runs[k:]])
    row_predicted = np.stack([r.predicted for r in runs[:k]]).astype(np.int64)
    base_predicted = np.stack([r.predicted for r in runs[k:]]).astype(np.int64)
    lost, gained = base_right & ~row_right, ~base_right & row_right
    return Flips(runs[0].index, runs[0].label, lost.sum(0), gained.sum(0),
                 _most_frequent(row_predicted, lost), _most_frequent(base_predicted, gained), k)


def _most_frequent(predicted: np.ndarray, where: np.ndarray) -> np.ndarray:
    """Per image, the most frequent class in `predicted` (seeds x images) over the seeds where
    `where` holds (the lower class on a tie); -1 where it holds in none."""
    images = predicted.shape[1]
    votes = np.zeros((images, int(predicted.max()) + 1), dtype=np.int64)
    for seed_predictions, chosen in zip(predicted, where):
        votes[np.arange(images)[chosen], seed_predictions[chosen]] += 1
    return np.where(votes.sum(1) > 0, votes.argmax(1), -1)


def per_class_churn(runs: list[Predictions], classes: int) -> np.ndarray | None:
    """Churn by true class: over every pair of runs, the fraction of the class's test images
    whose predicted class differs, averaged over the pairs; None with fewer than two runs."""
    if len(runs) < 2:
        return None
    runs = aligned(runs)
    label = runs[0].label.astype(np.int64)
    count = np.bincount(label, minlength=classes).astype(float)
    pairs = [np.bincount(label[a.predicted != b.predicted], minlength=classes)
             for a, b in itertools.combinations(runs, 2)]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.mean(pairs, axis=0) / count
