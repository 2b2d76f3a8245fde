"""report/claims.py: the report's claims read by the rule reports/README.md fixed before the runs.
Each p is checked against a count over the draws written out plainly, Holm against statsmodels,
Δ against the seeds' accuracies computed here, and every claim's rows against the presets that
make them (a misspelled setting would leave a claim 'not run' for ever)."""

from __future__ import annotations

import numpy as np
import pytest
from statsmodels.stats.multitest import multipletests

from cifar_sweep import evidence
from cifar_sweep.report import claims
from cifar_sweep.report.claims import BEATS, CLAIMS, EQUALS, FALLS, HOLDS, OPEN, Claim, Reading
from cifar_sweep.report.presets import compose_preset, study


def count_p(draws, bound: float, below: bool) -> float:
    """The share of draws on the null's side of the bound, by a plain loop, floored at 1/n."""
    n = sum(1 for d in draws if (d <= bound if below else d >= bound))
    return max(n / len(draws), 1 / len(draws))


@pytest.mark.parametrize("centre", [-3.0, -0.8, 0.0, 0.3, 0.9, 2.5])
@pytest.mark.parametrize("kind", [BEATS, EQUALS])
def test_p_values_are_the_shares_of_draws_the_rule_names(centre, kind):
    draws = np.random.default_rng(1).normal(centre, 0.4, 4000)
    m = claims.MARGIN
    below0, above0 = count_p(draws, 0, True), count_p(draws, 0, False)
    below_m, above_m = count_p(draws, -m, True), count_p(draws, m, False)
    if kind == BEATS:  # holds: null Δ ≤ 0; falls: null Δ ≥ 0, or TOST (both nulls |Δ| ≥ m)
        expected = (below0, min(above0, max(below_m, above_m)))
    else:  # holds: TOST; falls: null Δ ≤ +m or null Δ ≥ -m
        expected = (max(below_m, above_m), min(count_p(draws, m, True), count_p(draws, -m, False)))
    assert claims.p_values(draws, kind) == pytest.approx(expected)


def test_a_p_is_never_below_one_over_the_draws():
    assert claims.p_values(np.full(500, 7.0), BEATS)[0] == 1 / 500


def test_holm_runs_across_every_claim_as_statsmodels_computes_it():
    rng = np.random.default_rng(2)
    readings = [Reading(CLAIMS[i % len(CLAIMS)], p_holds=float(a), p_falls=float(b))
                for i, (a, b) in enumerate(rng.uniform(0, 0.08, (9, 2)))]
    readings.append(Reading(CLAIMS[0]))  # a claim not read: in neither family
    claims.adjust(readings)
    for family, target in (("p_holds", "holm_holds"), ("p_falls", "holm_falls")):
        raw = [getattr(r, family) for r in readings[:-1]]
        expected = multipletests(raw, method="holm")[1]
        assert [getattr(r, target) for r in readings[:-1]] == pytest.approx(list(expected))
    assert readings[-1].holm_holds is None and readings[-1].verdict == "not run"


@pytest.mark.parametrize(("holds", "falls", "verdict"), [
    (0.01, 0.5, HOLDS), (0.5, 0.01, FALLS), (0.2, 0.3, OPEN), (0.049, 0.04, HOLDS + " (by less than 1 point)"),
    (0.05, 0.05, OPEN)])
def test_a_verdict_is_read_from_the_holm_ps_at_five_percent(holds, falls, verdict):
    assert Reading(CLAIMS[0], holm_holds=holds, holm_falls=falls).verdict == verdict


def predictions(correct: np.ndarray, label: np.ndarray) -> evidence.Predictions:
    """A run's predictions that are right exactly where `correct` says."""
    predicted = np.where(correct, label, (label + 1) % 10)
    return evidence.Predictions(np.arange(len(label)), label, predicted, None)


def rows(accuracies: list[float], images: int, rng) -> tuple[dict, dict]:
    """(seed -> accuracy, seed -> predictions) of a row with these accuracies."""
    label = np.arange(images) % 10
    out = {}
    for seed, acc in enumerate(accuracies):
        correct = np.zeros(images, bool)
        correct[rng.choice(images, int(round(acc * images)), replace=False)] = True
        out[str(seed)] = predictions(correct, label)
    return {s: float(p.correct.mean()) for s, p in out.items()}, out


def test_a_large_difference_holds_and_its_delta_is_the_seeds_mean_difference():
    rng = np.random.default_rng(3)
    acc_a, pred_a = rows([0.70, 0.72, 0.71], 3000, rng)
    acc_b, pred_b = rows([0.60, 0.61, 0.59], 3000, rng)
    claim = Claim("lr", "a=1", "b=1", BEATS, "")
    reading = claims.read(claim, acc_a, acc_b, pred_a, pred_b, draws=2000)
    expected = 100 * np.mean([acc_a[s] - acc_b[s] for s in acc_a])
    assert reading.delta == pytest.approx(expected)
    assert reading.a_mean == pytest.approx(100 * np.mean(list(acc_a.values())))
    assert reading.boot is not None and reading.boot[0] < expected < reading.boot[1]
    assert reading.seeds == 3
    claims.adjust([reading])
    assert reading.verdict == HOLDS


@pytest.mark.parametrize("a_is_baseline", [True, False])
def test_a_claims_interval_is_its_tables_own_with_the_sign_its_direction_needs(a_is_baseline):
    """The table draws each row against its baseline (evidence.bootstrap_interval(row,
    baseline)); a claim on the same two rows uses those same draws, so its interval is the
    table's, negated where A is the baseline (they once differed by a few hundredths: each drew
    its own)."""
    rng = np.random.default_rng(11)
    acc_a, pred_a = rows([0.70, 0.72, 0.71], 3000, rng)
    acc_b, pred_b = rows([0.68, 0.69, 0.70], 3000, rng)
    reading = claims.read(Claim("lr", "a=1", "b=1", BEATS, ""), acc_a, acc_b, pred_a, pred_b,
                          draws=4000, a_is_baseline=a_is_baseline)
    if a_is_baseline:  # the table's row is B: its interval of B - A
        low, high = evidence.bootstrap_interval(pred_b, pred_a, draws=4000)
        assert reading.boot == pytest.approx((-high, -low), abs=1e-12)
    else:  # the table's row is A, B its baseline: A - B
        assert reading.boot == pytest.approx(
            evidence.bootstrap_interval(pred_a, pred_b, draws=4000), abs=1e-12)


def test_the_same_predictions_are_equal_within_the_margin_and_beat_nothing():
    rng = np.random.default_rng(4)
    acc, pred = rows([0.70, 0.72, 0.71], 3000, rng)
    same = claims.read(Claim("loss", "a=1", "b=1", EQUALS, ""), acc, acc, pred, pred, draws=2000)
    beats = claims.read(Claim("lr", "a=1", "b=1", BEATS, ""), acc, acc, pred, pred, draws=2000)
    claims.adjust([same, beats])
    assert same.delta == 0 and same.verdict == HOLDS
    assert beats.verdict == FALLS  # shown equal within the margin


def test_fewer_than_two_shared_seeds_is_not_read():
    rng = np.random.default_rng(5)
    acc, pred = rows([0.7, 0.7], 1000, rng)
    reading = claims.read(CLAIMS[0], acc, {"0": acc["0"]}, pred, {"0": pred["0"]})
    assert reading.delta is None and "1 seed(s)" in reading.missing
    assert "not run: 1 seed(s)" in claims.markdown([reading])


@pytest.mark.parametrize("claim", CLAIMS, ids=lambda c: f"{c.study}: {c.text}")
def test_each_claims_rows_are_settings_its_preset_sweeps(claim):
    spec = study(claim.study, [])
    params = compose_preset("ablation", claim.study, []).hydra.sweeper.params
    values = {v.strip() for text in params.values() for v in str(text).split(",")}
    for setting in (claim.a, claim.b):
        key, _, value = setting.partition("=")
        assert key in spec.axes and value in values, (setting, spec.axes, values)
