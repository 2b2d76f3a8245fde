"""The report's claims read against the published studies by the rule reports/README.md fixed
before their runs existed: each claim's Δ (test accuracy of A minus B, points, the mean over the
seeds) with its paired two-level bootstrap (evidence.bootstrap_deltas), a verdict against the
margin, and Holm's adjustment across every claim read, not only within a table.

The tests, on the bootstrap's draws of Δ (p of a null: the share of draws on the null's side of
its bound, at least 1/draws):
- "A beats B": *holds* when the null Δ ≤ 0 is rejected; *falls* when Δ ≥ 0 is rejected (B
  ahead) or both Δ ≤ -m and Δ ≥ +m are (equal within m: TOST); its falls p is the smaller of the
  two routes (each route's rejections imply that of Δ ≥ m, so the union keeps the level).
- "A equals B": *holds* when both Δ ≤ -m and Δ ≥ +m are rejected (TOST: the larger p); *falls*
  when Δ ≤ +m or Δ ≥ -m is rejected (the smaller p).
- Holm across the claims: the holds p's as one family, the falls p's as another, at 5% each; a
  verdict is "cannot settle" where neither rejects. A directional claim can both hold and be
  shown within the margin (A ahead, by less than m): it holds, and the verdict says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cifar_sweep import evidence
from cifar_sweep.statistics import ALPHA, compare, holm

MARGIN = 1.0  # points: reports/README.md says why
BEATS, EQUALS = "beats", "equals"
HOLDS, FALLS, OPEN = "holds", "falls", "cannot settle"


@dataclass(frozen=True)
class Claim:
    """One of the report's claims: row `a` of a study's table beats (or equals) row `b`."""

    study: str   # the preset study whose table holds both rows
    a: str       # each row's setting, as the table names it (its overrides)
    b: str
    kind: str    # BEATS or EQUALS
    report: str  # the report's numbers, as it prints them

    @property
    def text(self) -> str:
        return f"{_short(self.a)} {self.kind} {_short(self.b)}"


def _lr(rate: str) -> str:
    return f"lr.value={rate}"


def _opt(name: str, tuned: bool = False) -> str:
    return f"+tuned_optimizer={name}" if tuned else f"+preset_optimizer={name}"


# The report's claims (reports/README.md lists them, with why each is read this way).
CLAIMS: tuple[Claim, ...] = (
    *(Claim("lr", _lr("0.005"), _lr(rate), BEATS, f"72.80 / {paper}")
      for rate, paper in (("0.0001", "65.21"), ("0.0005", "69.62"), ("0.001", "71.20"),
                          ("0.01", "71.49"))),
    *(Claim("optimizer", _opt("sgd"), _opt(name), BEATS, f"72.80 / {paper}")
      for name, paper in (("adam", "70.43"), ("rmsprop", "48.64"), ("adagrad", "53.48"))),
    Claim("optimizer", _opt("adagrad"), _opt("rmsprop"), BEATS, "53.48 / 48.64"),
    *(Claim("optimizer_tuned", _opt("sgd", True), _opt(name, True), BEATS, "(untuned only)")
      for name in ("adam", "rmsprop", "adagrad")),
    Claim("arch", "model=modified_net", "model=origin_net", BEATS, "F1 0.6536 / 0.5521"),
    Claim("loss", "loss=label_smoothing", "loss=cross_entropy", EQUALS, "(no numbers)"),
    Claim("loss", "loss=weighted_cross_entropy", "loss=cross_entropy", EQUALS, "(our control)"),
)


def _short(setting: str) -> str:
    return setting.split("=", 1)[-1]


def share(draws: np.ndarray, bound: float, below: bool) -> float:
    """The bootstrap p of the null Δ ≤ bound (`below`) or Δ ≥ bound: the share of draws on the
    null's side, at least 1/len(draws)."""
    side = draws <= bound if below else draws >= bound
    return max(float(side.mean()), 1 / len(draws))


def p_values(draws: np.ndarray, kind: str, margin: float = MARGIN) -> tuple[float, float]:
    """(the p of the claim's holds test, the p of its falls test), before Holm."""
    tost = max(share(draws, -margin, True), share(draws, margin, False))
    if kind == BEATS:
        return share(draws, 0, True), min(share(draws, 0, False), tost)
    return tost, min(share(draws, margin, True), share(draws, -margin, False))


@dataclass
class Reading:
    """One claim set against its runs (None fields: the rows are not in the store)."""

    claim: Claim
    a_mean: float | None = None      # test accuracy, %, the mean over the seeds
    b_mean: float | None = None
    delta: float | None = None       # points: the mean over the seeds a and b share
    boot: tuple[float, float] | None = None  # Δ's 95% bootstrap interval
    t_interval: tuple[float | None, float | None] | None = None  # the seeds' paired t interval
    seeds: int = 0                   # the seeds a and b share
    p_holds: float | None = None
    p_falls: float | None = None
    holm_holds: float | None = None
    holm_falls: float | None = None
    missing: str = ""                # why it could not be read

    @property
    def verdict(self) -> str:
        if self.holm_holds is None or self.holm_falls is None:
            return "not run"
        holds, falls = self.holm_holds < ALPHA, self.holm_falls < ALPHA
        if holds and falls:  # a directional claim: ahead, but within the margin
            return f"{HOLDS} (by less than {MARGIN:g} point)"
        return HOLDS if holds else FALLS if falls else OPEN


def read(claim: Claim, accuracy_a: dict[str, float], accuracy_b: dict[str, float],
         predictions_a: dict[str, evidence.Predictions],
         predictions_b: dict[str, evidence.Predictions],
         draws: int = evidence.DRAWS, a_is_baseline: bool = False) -> Reading:
    """A claim from its two rows: seed -> test accuracy (a fraction) and seed -> predictions.
    `a_is_baseline`: A is its table's baseline row, so the draws are the table's own for B
    (the bootstrap of B - A, negated), and the claim's interval is the table's, sign flipped;
    else those of A - B, as the table draws them where B is the baseline."""
    shared = sorted(set(predictions_a) & set(predictions_b))
    if len(shared) < 2:
        return Reading(claim, missing=f"{len(shared)} seed(s) with predictions on both rows")
    a = {s: predictions_a[s] for s in shared}
    b = {s: predictions_b[s] for s in shared}
    deltas = (-evidence.bootstrap_deltas(b, a, draws) if a_is_baseline
              else evidence.bootstrap_deltas(a, b, draws))
    low, high = np.percentile(deltas, [2.5, 97.5])
    t = compare({s: accuracy_a[s] for s in shared}, {s: accuracy_b[s] for s in shared}, 100)
    p_h, p_f = p_values(deltas, claim.kind)
    return Reading(claim, a_mean=100 * float(np.mean(list(accuracy_a.values()))),
                   b_mean=100 * float(np.mean(list(accuracy_b.values()))), delta=t.diff,
                   boot=(float(low), float(high)), t_interval=(t.low, t.high), seeds=len(shared),
                   p_holds=p_h, p_falls=p_f)


def adjust(readings: list[Reading]) -> None:
    """Holm across every claim read: the holds p's one family, the falls p's another."""
    for family, target in (("p_holds", "holm_holds"), ("p_falls", "holm_falls")):
        for reading, p in zip(readings, holm([getattr(r, family) for r in readings])):
            setattr(reading, target, p)


def markdown(readings: list[Reading]) -> str:
    """claims.md: one line per claim, then what the columns mean."""
    def interval(pair) -> str:
        if pair is None or pair[0] is None or pair[1] is None:
            return ""
        return f"[{pair[0]:+.2f}, {pair[1]:+.2f}]"

    def p(value: float | None) -> str:
        return "" if value is None else ("<0.001" if value < 0.001 else f"{value:.3f}")

    lines = ["# The report's claims, read by the rule fixed before the runs", "",
             "| Study | Claim | Report | Ours (A / B, %) | Δ (points) | Δ bootstrap 95% "
             "| seeds' paired t 95% | p holds (Holm) | p falls (Holm) | Verdict |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in readings:
        c = r.claim
        if r.delta is None:
            lines.append(f"| {c.study} | {c.text} | {c.report} | | | | | | | not run"
                         f"{': ' + r.missing if r.missing else ''} |")
            continue
        lines.append(
            f"| {c.study} | {c.text} | {c.report} | {r.a_mean:.2f} / {r.b_mean:.2f} "
            f"| {r.delta:+.2f} | {interval(r.boot)} | {interval(r.t_interval)} "
            f"| {p(r.holm_holds)} | {p(r.holm_falls)} | {r.verdict} |")
    read_ = [r for r in readings if r.delta is not None]
    lines += ["", f"{len(read_)} of {len(readings)} claims read; margin m = {MARGIN:g} point. "
              "Δ: the mean over the seeds both rows share of A's test accuracy minus B's. The "
              f"bootstrap ({evidence.DRAWS:,} draws of seeds and test images together, a fixed "
              "generator seed: the draws of the table's Δ bootstrap column for the same two "
              "rows) gives Δ's interval and the p's: a claim that A beats B holds "
              "when Δ ≤ 0 is rejected; falls when Δ ≥ 0 is rejected or Δ is shown within ±m "
              "(TOST); a claim that A equals B holds when Δ is shown within ±m, falls when Δ is "
              "shown beyond +m or below -m. Holm's adjustment runs across all the claims read "
              "(the holds tests one family, the falls tests another), at 5%. The seeds' paired t "
              "interval covers this test set over the seeds only; it changes no verdict. "
              "(report/claims.py; the rule: reports/README.md.)"]
    return "\n".join(lines) + "\n"


def read_tables(client, tables: dict) -> list[Reading]:
    """Every claim against the study tables given (preset name -> report.studies.Table), Holm
    across them; a claim whose study or rows are not there is 'not run'."""
    from cifar_sweep.report.per_example import by_seed, read_all
    from cifar_sweep.report.rows import ACCURACY

    readings = []
    for claim in CLAIMS:
        table = tables.get(claim.study)
        rows = {r.setting: r for r in table.records} if table is not None else {}
        if table is None or claim.a not in rows or claim.b not in rows:
            absent = [s for s in (claim.a, claim.b) if s not in rows]
            readings.append(Reading(claim, missing=(
                f"no {claim.study} table" if table is None else "no row " + ", ".join(absent))))
            continue
        frame = table.frame
        seed_of = dict(zip(frame.run_id, frame.seed.astype(str)))
        value = dict(zip(frame.run_id, frame[ACCURACY.metric]))
        a, b = rows[claim.a], rows[claim.b]
        loaded = read_all(client, frame, a.run_ids + b.run_ids)
        readings.append(read(claim, by_seed(seed_of, a.run_ids, value),
                             by_seed(seed_of, b.run_ids, value),
                             by_seed(seed_of, a.run_ids, loaded),
                             by_seed(seed_of, b.run_ids, loaded), a_is_baseline=a.baseline))
    adjust(readings)
    return readings

