"""A row against the baseline, over seeds: the difference, its 95% interval and p-value (paired
where both arms hold the same seeds, Welch's otherwise), Holm's adjustment across the rows of a
table, and how many seeds per arm would tell an undecided difference apart.

Same seed = same initialisation and data order, so with the same seeds on both sides the paired
test removes the seed's share of the spread; with different seeds only Welch's test is valid.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

ALPHA = 0.05
POWER = 0.8
MAX_SEEDS = 1000  # beyond this the answer is "no practical number of seeds"


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1); the std is 0 for a single run."""
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


@dataclass
class Delta:
    """A row's mean minus the baseline's (scaled), with the test that judged it."""

    diff: float
    low: float | None = None
    high: float | None = None
    p: float | None = None
    test: str = ""               # "paired", "Welch", or "" where a side has one run
    p_holm: float | None = None  # p adjusted for the table's other comparisons (Holm)
    seeds_needed: int | None = None  # per arm, for 80% power at 5%, where undecided

    @property
    def seeds_tell_apart(self) -> bool | None:
        p = self.p_holm if self.p_holm is not None else self.p
        return None if p is None else p < ALPHA


def compare(values: dict[str, float], baseline: dict[str, float], scale: float) -> Delta:
    """`values`, `baseline`: seed -> metric. Paired over the seeds both hold, when both hold the
    same seeds (at least two); else Welch's test over all of each side's seeds."""
    from scipy import stats

    a, b = list(values.values()), list(baseline.values())
    diff = (statistics.fmean(a) - statistics.fmean(b)) * scale
    if len(a) < 2 or len(b) < 2:
        return Delta(diff)
    if set(values) == set(baseline):
        d = [(values[s] - baseline[s]) * scale for s in sorted(values)]
        if statistics.pvariance(d) == 0:
            return Delta(diff, diff, diff, 1.0 if diff == 0 else 0.0, "paired")
        result = stats.ttest_rel([values[s] for s in sorted(values)],
                                 [baseline[s] for s in sorted(values)])
        sd = statistics.stdev(d)
        needed = seeds_needed(diff, sd, paired=True)
    else:
        if statistics.pvariance(a) == 0 and statistics.pvariance(b) == 0:
            return Delta(diff, diff, diff, 1.0 if diff == 0 else 0.0, "Welch")
        result = stats.ttest_ind(a, b, equal_var=False)
        sd = math.sqrt((statistics.variance(a) + statistics.variance(b)) / 2) * scale
        needed = seeds_needed(diff, sd, paired=False)
    interval = result.confidence_interval(0.95)
    p = float(result.pvalue)
    return Delta(diff, interval.low * scale, interval.high * scale, p,
                 "paired" if set(values) == set(baseline) else "Welch",
                 seeds_needed=None if p < ALPHA else needed)


def seeds_needed(diff: float, sd: float, paired: bool) -> int | None:
    """Seeds per arm for a two-sided t-test at 5% to detect `diff` with 80% power, given the
    measured spread `sd` (of the paired differences, or of each arm); None where the difference
    is 0 (no number of seeds will tell it) or beyond MAX_SEEDS."""
    from scipy import stats

    if diff == 0 or not math.isfinite(sd) or sd == 0:
        return None
    effect = abs(diff) / sd
    for n in range(2, MAX_SEEDS + 1):
        df = n - 1 if paired else 2 * n - 2
        shift = effect * math.sqrt(n if paired else n / 2)
        critical = stats.t.ppf(1 - ALPHA / 2, df)
        power = stats.nct.sf(critical, df, shift) + stats.nct.cdf(-critical, df, shift)
        if power >= POWER:
            return n
    return None


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
