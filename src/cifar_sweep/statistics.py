"""A table's rows against its baseline, over seeds: the difference, its 95% interval and p-value,
Holm's adjustment across the table's comparisons, and how many seeds per row would tell an
undecided difference apart. One function, `judge`, for the table, `SEEDS=auto` and
`cifar_sweep.results` alike.

Which test (`compare`): same seed = same initialisation and data order, so two rows' runs of one
seed are correlated and the seed's share of the spread cancels in their difference.
- A row that shares at least two seeds with the baseline (the same seeds, a subset of them, or
  some in common) is compared **paired, over the shared seeds only**: Welch's test assumes the two
  sides independent, which shared seeds are not, and a pairing is what the adaptive budget builds
  (it adds the same seeds to a row and to the baseline). The baseline's other seeds still count
  in its own mean ± std, not in the difference; Δ is the mean of the paired differences.
- Fewer than two shared seeds: Welch's test over all of each side's seeds (one shared seed's
  correlation is ignored: one pair cannot be tested on its own).
- A side with one run: the difference of the means, no test.

Seeds for 80% power (`judge`): for a row Holm's adjustment leaves undecided, the seeds per row
(paired: pairs) that would give its measured difference, at its measured spread, 80% power in a
two-sided t-test at the level 5%/m, where m is the number of the table's tested comparisons:
the strictest level Holm's step-down asks of any of them (its first step, Bonferroni's), so a
row that reaches it is decided after Holm's adjustment too, with at least that power. With one
comparison this is the 5% level.
"""

from __future__ import annotations

import math
import statistics
import sys
from dataclasses import dataclass
from fractions import Fraction

ALPHA = 0.05
POWER = 0.8
MAX_SEEDS = 1000  # beyond this the answer is "no practical number of seeds"


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1); the std is 0 for a single run."""
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), stdev(values) if len(values) > 1 else 0.0


def stdev(values: list[float]) -> float:
    """`statistics.stdev` of two or more finite floats, the same float to the last bit (the exact
    variance, its square root correctly rounded, as Python 3.11 computes it), about 4.5x faster
    (3 values: 31 -> 6.9 us): each float is an integer over a power of two, so the sums are over
    integers on the largest denominator instead of over Fractions (9 metrics x 5,000 rows took
    3.4 s of a table's time under cProfile, docs/speed.md). tests/test_statistics.py holds the
    two equal. NaN where a value is not finite."""
    exact = _exact_variance(values)
    return math.nan if exact is None else _sqrt_of_fraction(exact.numerator, exact.denominator)


def variance(values: list[float]) -> float:
    """`statistics.variance` (n - 1) of two or more finite floats, to the last bit, as `stdev`."""
    exact = _exact_variance(values)
    return math.nan if exact is None else float(exact)


def _exact_variance(values: list[float]) -> Fraction | None:
    if not all(map(math.isfinite, values)):  # (Python 3.11's own raises AttributeError here)
        return None
    ratios = [float(v).as_integer_ratio() for v in values]
    scale = max(d for _, d in ratios)  # every denominator is a power of two: each divides it
    xs = [n * (scale // d) for n, d in ratios]
    count, total = len(xs), sum(xs)
    return Fraction(count * sum(x * x for x in xs) - total * total,
                    count * (count - 1) * scale * scale)


_SQRT_BITS = 2 * sys.float_info.mant_dig + 3


def _sqrt_of_fraction(n: int, m: int) -> float:
    """The square root of n/m as a float, correctly rounded: an integer square root carried to
    _SQRT_BITS bits, rounded to odd, then to the nearest float (the method of Python's own
    statistics module, https://bugs.python.org/msg407078)."""
    q = (n.bit_length() - m.bit_length() - _SQRT_BITS) // 2
    if q >= 0:
        numerator, denominator = _isqrt_to_odd(n, m << 2 * q) << q, 1
    else:
        numerator, denominator = _isqrt_to_odd(n << -2 * q, m), 1 << -q
    return numerator / denominator


def _isqrt_to_odd(n: int, m: int) -> int:
    root = math.isqrt(n // m)
    return root | (root * root * m != n)


@dataclass
class Delta:
    """A row's mean minus the baseline's (scaled), with the test that judged it."""

    diff: float
    low: float | None = None
    high: float | None = None
    p: float | None = None
    test: str = ""               # "paired", "Welch", or "" where no test can be made
    p_holm: float | None = None  # p adjusted for the table's other comparisons (Holm)
    seeds_needed: int | None = None  # per row, for 80% power (see the module), where undecided
    spread: float | None = None  # the sd the power uses: of the paired differences, or per side
    shared: int = 0              # the seeds a paired test used

    @property
    def seeds_tell_apart(self) -> bool | None:
        p = self.p_holm if self.p_holm is not None else self.p
        return None if p is None else p < ALPHA

    @property
    def paired(self) -> bool:
        return self.test == "paired"


def compare(values: dict[str, float], baseline: dict[str, float], scale: float) -> Delta:
    """`values`, `baseline`: seed -> metric. Paired over the shared seeds where there are at
    least two, else Welch's over all seeds (see the module). Holm's p and the seeds needed are
    the table's: `judge` adds them."""
    return compare_all([values], baseline, scale)[0]


def compare_all(rows: list[dict[str, float]], baseline: dict[str, float],
                scale: float) -> list[Delta]:
    """`compare` for each row. The rows whose test has the same shape (paired over n seeds, or
    Welch's over n and m) go to scipy as one array: one call per row cost about 4 ms, 20 s for
    a table of 5,000 rows (docs/speed.md)."""
    out: list[Delta | None] = []
    pending: dict[tuple, list[tuple[int, list[float], list[float], float, float, int]]] = {}
    for values in rows:
        shared = sorted(set(values) & set(baseline), key=_seed_order)
        if len(shared) >= 2:
            a, b = [values[s] for s in shared], [baseline[s] for s in shared]
            d = [(x - y) * scale for x, y in zip(a, b)]
            diff = statistics.fmean(d)
            if len(set(d)) == 1:  # every pair differs by the same: no spread to test
                out.append(Delta(diff, diff, diff, 1.0 if diff == 0 else 0.0, "paired",
                                 spread=0.0, shared=len(shared)))
                continue
            shape, sd = ("paired", len(a), len(b)), stdev(d)
        else:
            a, b = list(values.values()), list(baseline.values())
            diff = (statistics.fmean(a) - statistics.fmean(b)) * scale
            if len(a) < 2 or len(b) < 2:
                out.append(Delta(diff))
                continue
            if len(set(a)) == 1 and len(set(b)) == 1:  # no spread on either side
                out.append(Delta(diff, diff, diff, 1.0 if diff == 0 else 0.0, "Welch",
                                 spread=0.0))
                continue
            # the effect size of equal arms: the sd of the two variances' mean
            shape = ("Welch", len(a), len(b))
            sd = math.sqrt((variance(a) + variance(b)) / 2) * scale
        pending.setdefault(shape, []).append((len(out), a, b, diff, sd, len(shared)))
        out.append(None)
    if pending:
        from scipy import stats
    for (test, _, _), items in pending.items():
        firsts = [item[1] for item in items]
        seconds = [item[2] for item in items]
        result = (stats.ttest_rel(firsts, seconds, axis=1) if test == "paired"
                  else stats.ttest_ind(firsts, seconds, axis=1, equal_var=False))
        interval = result.confidence_interval(0.95)
        for j, (at, _, _, diff, sd, n_shared) in enumerate(items):
            out[at] = Delta(diff, float(interval.low[j]) * scale,
                            float(interval.high[j]) * scale, float(result.pvalue[j]), test,
                            spread=sd, shared=n_shared if test == "paired" else 0)
    return out  # type: ignore[return-value]  # every None was filled above


def judge(rows: list[dict[str, float]], baseline: dict[str, float], scale: float) -> list[Delta]:
    """Each row against the baseline (`compare`), Holm's p across them, and for each row Holm
    leaves undecided the seeds that would decide it (see the module)."""
    deltas = compare_all(rows, baseline, scale)
    for delta, adjusted in zip(deltas, holm([d.p for d in deltas])):
        delta.p_holm = adjusted
    tested = sum(d.p is not None for d in deltas)
    undecided = [d for d in deltas if d.seeds_tell_apart is False]
    for paired in (True, False):
        chosen = [d for d in undecided if d.paired == paired]
        for d, needed in zip(chosen, seeds_needed_all(
                [d.diff for d in chosen], [d.spread or 0.0 for d in chosen], paired,
                alpha=ALPHA / max(tested, 1))):
            d.seeds_needed = needed
    return deltas


def power(effect, n, paired: bool, alpha: float = ALPHA):
    """The power of a two-sided t-test with `n` seeds per row (paired: n pairs) for an effect
    size `effect` (difference / sd): the noncentral t's mass beyond both critical values.
    `effect` and `n` may be arrays of the same shape (one power each)."""
    import numpy as np
    from scipy import stats

    effect, n = np.asarray(effect, dtype=float), np.asarray(n, dtype=float)
    df = n - 1 if paired else 2 * n - 2
    shift = effect * np.sqrt(n if paired else n / 2)
    critical = stats.t.ppf(1 - alpha / 2, df)
    upper, lower = stats.nct.sf(critical, df, shift), stats.nct.cdf(-critical, df, shift)
    # scipy's noncentral t can give nan far in a tail (a large shift), where the mass is about 0
    # or 1: there the normal approximation is as good
    upper = np.where(np.isfinite(upper), upper, stats.norm.sf(critical - shift))
    lower = np.where(np.isfinite(lower), lower, stats.norm.cdf(-critical - shift))
    total = upper + lower
    return float(total) if total.ndim == 0 else total


def seeds_needed(diff: float, sd: float, paired: bool, alpha: float = ALPHA) -> int | None:
    """The fewest seeds per row (2 or more) for which a two-sided t-test at `alpha` detects
    `diff` with 80% power, given the measured spread `sd` (of the paired differences, or of each
    side); None where the difference is 0 or the spread unknown (no number of seeds will tell
    it) or beyond MAX_SEEDS."""
    return seeds_needed_all([diff], [sd], paired, alpha)[0]


def seeds_needed_all(diffs: list[float], sds: list[float], paired: bool,
                     alpha: float = ALPHA) -> list[int | None]:
    """`seeds_needed` for many rows, all bisected at once (power grows with n: the first n that
    reaches 80%); row by row this was about 6 ms a row."""
    import numpy as np

    out: list[int | None] = [None] * len(diffs)
    known = [i for i, (diff, sd) in enumerate(zip(diffs, sds))
             if diff != 0 and math.isfinite(sd) and sd != 0]
    if not known:
        return out
    effect = np.array([abs(diffs[i]) / sds[i] for i in known])
    reachable = power(effect, np.full(len(known), MAX_SEEDS), paired, alpha) >= POWER
    effect = effect[reachable]
    low, high = np.full(len(effect), 2), np.full(len(effect), MAX_SEEDS)
    while (open_ := low < high).any():
        middle = (low + high) // 2
        enough = power(effect, middle, paired, alpha) >= POWER
        high = np.where(open_ & enough, middle, high)
        low = np.where(open_ & ~enough, middle + 1, low)
    for i, n in zip([i for i, r in zip(known, reachable) if r], low.tolist()):
        out[i] = int(n)
    return out


def holm(pvalues: list[float | None]) -> list[float | None]:
    """Holm's step-down adjustment (family-wise error at 5% across a table's comparisons);
    None stays None and is not counted."""
    known = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(known):
        running = max(running, min(1.0, (len(known) - rank) * p))
        out[i] = running
    return out


def _seed_order(seed: str):
    try:
        return (0, int(seed), seed)
    except ValueError:
        return (1, 0, seed)
