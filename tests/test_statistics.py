"""Every number a table prints, checked against statsmodels' own computations (its t-tests and
intervals, Holm's adjustment, the power of a t-test), not against a second copy of our formulas.

Tables are built from hand-made runs (many random sets of per-seed accuracies, a fixed RNG seed):
rows with the baseline's seeds, a subset of them, some in common, none in common, one seed, no
spread at all, and every combination of the raw and the Holm verdict. The numbers are read as a
user reads them: the table's cells (rounded as printed) and the table.csv it writes. Pure: no
training, no store.
"""

from __future__ import annotations

import csv
import math
import re
from collections import Counter

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("statsmodels", reason="statsmodels is a test dependency: pip install -e '.[dev]'")

from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestIndPower, TTestPower
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

from cifar_sweep import results
from cifar_sweep.report.adaptive_seeds import second_round
from cifar_sweep.report.cells import cells
from cifar_sweep.report.studies import Table
from conftest import hand_made_table

RNG_SEED = 20251202
TABLES = 15
BASE = "base"


def table_of(rows: dict[str, dict[str, float]]) -> Table:
    """A table of hand-made runs: `rows` is label -> seed -> test accuracy (0-1); `base` is the
    baseline. One sweep holds them all, in this order."""
    return hand_made_table({label: {seed: {"test_accuracy": acc} for seed, acc in by_seed.items()}
                            for label, by_seed in rows.items()}, BASE)


def expected_row(row: dict[str, float], base: dict[str, float]) -> dict:
    """statsmodels' test of a row against the baseline, in points: paired over the shared
    seeds where there are two or more (the table's rule), else Welch's over all seeds."""
    shared = sorted(set(row) & set(base), key=int)
    if len(shared) >= 2:
        d = np.array([row[s] - base[s] for s in shared]) * 100
        described = DescrStatsW(d)
        with np.errstate(divide="ignore", invalid="ignore"):
            _, p, _ = described.ttest_mean(0)
            low, high = described.tconfint_mean(0.05)
        return {"diff": d.mean(), "low": low, "high": high, "p": p, "test": "paired",
                "sd": d.std(ddof=1), "paired": True}
    a, b = np.array(list(row.values())) * 100, np.array(list(base.values())) * 100
    if len(a) < 2 or len(b) < 2:
        return {"diff": a.mean() - b.mean(), "p": None, "test": ""}
    means = CompareMeans.from_data(a, b)
    with np.errstate(divide="ignore", invalid="ignore"):
        _, p, _ = means.ttest_ind(usevar="unequal")
        low, high = means.tconfint_diff(usevar="unequal")
    return {"diff": a.mean() - b.mean(), "low": low, "high": high, "p": p, "test": "Welch",
            "sd": math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2), "paired": False}


def sm_power(effect: float, n: int, paired: bool, alpha: float) -> float:
    """statsmodels' power of the two-sided t-test. Far in the noncentral t's tail its lower
    tail is nan (scipy's, underneath): then the upper tail alone (the one-sided test at alpha/2),
    the lower one being about 0 there."""
    def power(alternative: str, level: float) -> float:
        if paired:
            return TTestPower().power(effect, nobs=n, alpha=level, alternative=alternative)
        return TTestIndPower().power(effect, nobs1=n, alpha=level, ratio=1,
                                     alternative=alternative)

    value = power("two-sided", alpha)
    return value if np.isfinite(value) else power("larger", alpha / 2)


def numbers(text: str) -> list[float]:
    return [float(x.replace(",", "")) for x in re.findall(r"[-+]?\d[\d,]*(?:\.\d+)?", text)]


def close_printed(printed: float, value: float, digits: int) -> bool:
    """`printed` is `value` rounded to `digits` (half a unit of the last digit, and a hair)."""
    return abs(printed - value) <= 0.5 * 10 ** -digits + 1e-9


def check_p(cell: str, p: float) -> None:
    if p < 0.001:
        assert cell.startswith("<0.001"), (cell, p)
    else:
        assert close_printed(numbers(cell)[0], p, 3), (cell, p)


def check_table(rows: dict[str, dict[str, float]], tmp_path, verdicts: Counter) -> None:
    """Build the table of `rows` and compare every printed number with statsmodels."""
    table = table_of(rows)
    header, printed, _ = cells(table.records, table.axis_title)
    col = {title: header.index(title) for title in
           ("Accuracy (%)", "Δ accuracy [95% CI]", "p (test)", "p (Holm)", "Seeds for 80% power")}
    table.write_tables(tmp_path)
    written = {r["setting"]: r for r in csv.DictReader((tmp_path / "table.csv").open())}
    base = rows[BASE]
    labels = [r.label for r in table.records]
    assert sorted(labels) == sorted(rows)  # every row, none made up

    # Holm across the rows that have a p-value, by statsmodels
    expected = {label: expected_row(rows[label], base) for label in labels if label != BASE}
    for e in expected.values():  # no spread and no difference at all: nothing to test; p = 1
        if e["p"] is not None and math.isnan(e["p"]):
            assert e["diff"] == 0 and e["sd"] == 0
            e["p"] = 1.0
    tested = [label for label in labels if label != BASE and expected[label]["p"] is not None]
    if tested:
        reject, adjusted, _, _ = multipletests([expected[x]["p"] for x in tested], alpha=0.05,
                                               method="holm")
        for label, r, q in zip(tested, reject, adjusted):
            expected[label].update(holm=q, decided=bool(r))

    rounds = {v: n for n, values in second_round(table, cap=10**6) for v in values[1:]}
    compared = results.compare(table.frame, "lr.value", BASE)
    for line, label in zip(printed, labels):
        values = np.array(list(rows[label].values())) * 100
        row_csv = written[f"lr.value={label}"]
        # mean ± sample std over seeds
        assert math.isclose(float(row_csv["test_accuracy_mean"]) * 100, values.mean(), abs_tol=1e-9)
        shown = numbers(line[col["Accuracy (%)"]])
        assert close_printed(shown[0], values.mean(), 2)
        if len(values) > 1:
            sd = values.std(ddof=1)
            assert math.isclose(float(row_csv["test_accuracy_std"]) * 100, sd, abs_tol=1e-9)
            assert close_printed(shown[1], sd, 2)
        else:
            assert len(shown) == 1 and float(row_csv["test_accuracy_std"]) == 0
        if label == BASE:
            assert line[col["Δ accuracy [95% CI]"]] == "" and row_csv["delta_p"] == ""
            continue
        e = expected[label]
        delta = line[col["Δ accuracy [95% CI]"]]
        d_numbers = numbers(delta)
        assert close_printed(d_numbers[0], e["diff"], 2), (delta, e)
        assert math.isclose(float(row_csv["delta_accuracy_points"]), e["diff"], abs_tol=1e-9)
        if e["p"] is None:  # one seed on a side, none shared: no test, no interval
            assert len(d_numbers) == 1 and line[col["p (test)"]] == "–"
            assert line[col["p (Holm)"]] == "–" and line[col["Seeds for 80% power"]] == ""
            assert not delta.startswith("≈") and row_csv["delta_p"] == ""
            verdicts["no test"] += 1
            continue
        # the interval and the test's p
        assert close_printed(d_numbers[1], e["low"], 2) and close_printed(d_numbers[2], e["high"], 2)
        assert math.isclose(float(row_csv["delta_ci95_low"]), e["low"], abs_tol=1e-9)
        assert math.isclose(float(row_csv["delta_ci95_high"]), e["high"], abs_tol=1e-9)
        assert line[col["p (test)"]].endswith(e["test"]) and row_csv["delta_test"] == e["test"]
        check_p(line[col["p (test)"]], e["p"])
        assert math.isclose(float(row_csv["delta_p"]), e["p"], abs_tol=1e-9)
        # Holm's p, and the verdict it gives
        check_p(line[col["p (Holm)"]], e["holm"])
        assert math.isclose(float(row_csv["delta_p_holm"]), e["holm"], abs_tol=1e-9)
        assert delta.startswith("≈ ") == (not e["decided"]), (delta, e)
        verdicts[("raw decided" if e["p"] < 0.05 else "raw undecided",
                  "Holm decided" if e["decided"] else "Holm undecided")] += 1
        # seeds for 80% power: filled for every undecided row, by statsmodels' power
        needed = line[col["Seeds for 80% power"]]
        notebook = compared.loc[label]
        assert math.isclose(notebook["p_holm"], e["holm"], abs_tol=1e-9)
        assert math.isclose(notebook["diff"], e["diff"], abs_tol=1e-9)
        if e["decided"]:
            assert needed == "" and row_csv["seeds_for_80pct_power"] == ""
            assert label not in rounds  # SEEDS=auto adds no seeds to a decided row
            continue
        alpha = 0.05 / len(tested)
        if e["diff"] == 0 or e["sd"] == 0 or sm_power(abs(e["diff"]) / e["sd"], 1000,
                                                      e["paired"], alpha) < 0.8:
            assert needed == "> 1000" and row_csv["seeds_for_80pct_power"] == ""
            assert pd.isna(notebook["seeds_needed"])
            continue
        n = int(needed)
        assert row_csv["seeds_for_80pct_power"] == needed and int(notebook["seeds_needed"]) == n
        effect = abs(e["diff"]) / e["sd"]
        # the fewest seeds (2 or more) with 80% power in statsmodels' power function
        assert sm_power(effect, n, e["paired"], alpha) >= 0.8
        assert n == 2 or sm_power(effect, n - 1, e["paired"], alpha) < 0.8
        solver = TTestPower() if e["paired"] else TTestIndPower()
        solved = solver.solve_power(effect, alpha=alpha, power=0.8, alternative="two-sided")
        # and its solver, where it converged (it answers 2.0 where it did not)
        if np.isfinite(solved) and solved > 2 and abs(solver.power(
                effect, solved, alpha, alternative="two-sided") - 0.8) < 1e-6:
            assert math.ceil(solved - 1e-6) == n, (solved, n)
            verdicts["solved"] += 1
        # SEEDS=auto trains up to the same number (at least one seed more than the row has)
        assert rounds[label] == max(n, len(rows[label]) + 1)
        verdicts["seeds filled"] += 1


def seeds_for(kind: str, base_seeds: list[str], rng) -> list[str]:
    """A row's seeds, in relation to the baseline's."""
    new = [str(100 + i) for i in rng.choice(50, size=5, replace=False)]
    if kind == "equal":
        return base_seeds
    if kind == "subset":
        return sorted(rng.choice(base_seeds, size=int(rng.integers(2, len(base_seeds))),
                                 replace=False).tolist(), key=int)
    if kind == "overlap":
        return sorted(base_seeds[:2] + new[:int(rng.integers(1, 3))], key=int)
    if kind == "one shared":
        return [base_seeds[0]] + new[:int(rng.integers(1, 4))]
    if kind == "disjoint":
        return new[:int(rng.integers(2, 6))]
    return [new[0] if rng.random() < 0.5 else base_seeds[0]]  # one seed


KINDS = ["equal", "subset", "overlap", "one shared", "disjoint", "one seed"]


@pytest.fixture(autouse=True)
def _no_full_collection(monkeypatch):
    """statsmodels' multipletests runs a full garbage collection on every call: about a second
    in a test process that has imported MLflow and torch. Its numbers do not depend on it."""
    import gc

    monkeypatch.setattr(gc, "collect", lambda *args: 0)  # it imports gc inside the function


def test_every_printed_statistic_agrees_with_statsmodels(tmp_path):
    rng = np.random.default_rng(RNG_SEED)
    verdicts, kinds = Counter(), Counter()
    for i in range(TABLES):
        base_seeds = [str(s) for s in range(int(rng.integers(3, 7)))]
        # the seed's share of the accuracy (same initialisation and data order in every row)
        seed_share = {str(s): rng.normal(0, 0.02) for s in [*range(10), *range(100, 150)]}
        noise = rng.choice([0.002, 0.005, 0.01, 0.02])
        rows = {BASE: {s: 0.6 + seed_share[s] + rng.normal(0, noise) for s in base_seeds}}
        for r in range(int(rng.integers(2, 9))):
            kind = KINDS[int(rng.integers(len(KINDS)))]
            kinds[kind] += 1
            effect = rng.choice([0.0, 0.003, 0.006, 0.01, 0.02, 0.05]) * rng.choice([-1, 1])
            rows[f"r{r}"] = {s: 0.6 + effect + seed_share[s] + rng.normal(0, noise)
                             for s in seeds_for(kind, base_seeds, rng)}
        out = tmp_path / str(i)
        check_table(rows, out, verdicts)
    assert set(kinds) == set(KINDS)
    # every combination of the raw and the Holm verdict was met, the undecided-after-Holm one
    # (where the seeds column used to say "> 1000") more than once
    assert verdicts[("raw decided", "Holm decided")] > 5, verdicts
    assert verdicts[("raw undecided", "Holm undecided")] > 5
    assert verdicts[("raw decided", "Holm undecided")] > 2, verdicts
    assert verdicts[("raw undecided", "Holm decided")] == 0  # Holm only raises p
    assert verdicts["seeds filled"] > 5 and verdicts["solved"] > 5 and verdicts["no test"] > 0
    print(dict(verdicts), dict(kinds))


def test_no_spread_and_no_difference(tmp_path):
    base = {"0": 0.5, "1": 0.625, "2": 0.5625}  # binary fractions: differences are exact
    rows = {
        BASE: base,
        "shifted": {s: v + 0.0625 for s, v in base.items()},  # the same gain on every seed
        "same": dict(base),                                   # no difference at all
        "flat": {"7": 0.63, "8": 0.63, "9": 0.63},            # other seeds, no spread of its own
        "subset": {"0": 0.505, "1": 0.628},                   # two of the baseline's seeds
    }
    verdicts = Counter()
    check_table(rows, tmp_path, verdicts)
    table = table_of(rows)
    by_label = {r.label: r.delta for r in table.records if r.delta}
    assert by_label["shifted"].p == 0 and by_label["shifted"].seeds_tell_apart
    assert by_label["same"].p == 1 and by_label["same"].seeds_tell_apart is False
    assert by_label["subset"].test == "paired" and by_label["subset"].shared == 2
    assert by_label["flat"].test == "Welch"
    # both sides without spread, no seed in common: Welch's test has nothing to estimate
    flat = table_of({BASE: {"0": 0.6, "1": 0.6}, "other": {"5": 0.61, "6": 0.61}})
    [delta] = [r.delta for r in flat.records if r.delta]
    assert (delta.test, delta.p, delta.low, delta.high) == ("Welch", 0.0, delta.diff, delta.diff)


def test_the_caption_says_the_rule_and_the_level(tmp_path):
    rows = {BASE: {"0": 0.6, "1": 0.62, "2": 0.61}, "a": {"0": 0.61, "1": 0.625},
            "b": {"3": 0.6, "4": 0.64}}
    table = table_of(rows)
    caption = " ".join(table.caption_notes())  # the caption's notes: the Markdown's, notes.md's
    assert "paired t-test over the seeds a row shares with the baseline" in caption
    assert "2 comparisons" in caption and "at the 2.5% level" in caption
    assert "Holm-adjusted over 2 comparisons" in table.caption()
    md = table.markdown()
    assert all(f"- {note}" in md for note in table.caption_notes())
    assert "Runs made by code version `c1` (git `000000000000`), the newest started 2026-01-01" in md


def test_our_stdev_and_variance_are_pythons_to_the_last_bit():
    import random
    import statistics as stdlib

    from cifar_sweep.statistics import stdev, variance

    rng = random.Random(0)
    samples = [[0.7, 0.7], [0.1, 0.2, 0.3], [1e-300, 2e-300], [5e-324, 1e-323, 0.0], [1e300, -1e300],
               [0.7231, 0.7230999999999999], [3, 4.5]]
    for _ in range(20_000):
        scale = 10.0 ** rng.randint(-12, 12)
        center = rng.uniform(-1, 1) * scale
        samples.append([center + rng.gauss(0, scale * 10.0 ** rng.randint(-16, 0))
                        for _ in range(rng.randint(2, 12))])
    for values in samples:
        assert stdev(values).hex() == stdlib.stdev(values).hex(), values
        if values == [1e300, -1e300]:  # a variance past the largest float: both raise
            with pytest.raises(OverflowError):
                stdlib.variance(values)
            with pytest.raises(OverflowError):
                variance(values)
            continue
        assert variance(values).hex() == stdlib.variance(values).hex(), values
    assert math.isnan(stdev([1.0, math.nan])) and math.isnan(stdev([1.0, math.inf]))
