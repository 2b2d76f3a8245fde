"""The choice of a table's rows and its statistics, as pure functions on hand-made frames."""

import math

import pandas as pd
import pytest

from cifar_sweep.report.selection import choose, describe_left_out
from cifar_sweep.results import _frame
from cifar_sweep.statistics import compare, holm, judge, seeds_needed

T0 = pd.Timestamp("2026-01-01")


def run(run_id, sweep, seed, lr="0.005", batch="64", minute=0, code="c1", job=0, status="FINISHED",
        overrides=None, acc=0.5):
    setting = f"s-{lr}-{batch}"  # the config without the seed: the code is not in it
    return {"run_id": run_id, "status": status, "start_time": T0 + pd.Timedelta(minutes=minute),
            "sweeps": sweep, "seed": str(seed), "role": "job", "setting_hash": setting,
            "code_version": code, "code.model": f"m-{code}", "code.training": "t1",
            "data_fingerprint": "fp", "precision": "fp32", "device": "cpu",
            "job_num": str(job), "overrides": overrides or f"lr.value={lr} trainer.seed={seed}",
            "lr.value": lr, "trainer.batch_size": batch, "trainer.seed": str(seed),
            "trainer.precision": "auto", "tracking.uri": "mlruns", "test_accuracy": acc}


def frames(runs, sweeps):
    config = {"lr.value", "trainer.batch_size", "trainer.seed", "trainer.precision", "tracking.uri"}
    jobs = _frame(runs, config, {"test_accuracy"})
    table = pd.DataFrame([{"run_id": s, "start_time": T0 + pd.Timedelta(minutes=m), "varying": v}
                          for s, m, v in sweeps])
    return jobs, table


def test_a_second_sweep_at_another_batch_size_is_not_mixed_in():
    runs = [run(f"a{i}", "A", 0, lr, minute=i, job=i) for i, lr in enumerate(["0.001", "0.005", "0.01"])]
    runs += [run(f"b{i}", "B", 0, lr, batch="256", minute=10 + i, job=i)
             for i, lr in enumerate(["0.001", "0.01"])]
    jobs, sweeps = frames(runs, [("A", 0, "lr.value"), ("B", 10, "lr.value")])
    newest = choose(jobs, sweeps, baseline="lr.value=0.005")
    assert [r.label for r in newest.rows] == ["0.001", "0.01"]
    assert newest.baseline is None  # the baseline is never taken from other fixed settings
    assert describe_left_out(newest) == ["trainer.batch_size=64: 3 runs, not mixed in"]
    older = choose(jobs, sweeps, where={"trainer.batch_size": "64"}, baseline="lr.value=0.005")
    assert [r.label for r in older.rows] == ["0.001", "0.005", "0.01"]
    assert older.baseline.label == "0.005" and older.reference_sweep == "A"
    assert describe_left_out(older) == ["trainer.batch_size=256: 2 runs, not mixed in"]
    assert choose(jobs, sweeps, sweep="A").reference_sweep == "A"


def test_seeds_added_later_join_their_row_and_a_seed_trained_twice_counts_once():
    runs = [run(f"a{s}", "A", s, minute=s) for s in range(3)]
    runs += [run(f"b{s}", "B", s, minute=10 + s) for s in (3, 4)]
    runs += [run("single", "", 1, minute=20, overrides="")]  # seed 1 again, by a single command
    runs += [run("failed", "B", 5, minute=21, status="FAILED")]
    jobs, sweeps = frames(runs, [("A", 0, "trainer.seed"), ("B", 10, "trainer.seed")])
    [row] = choose(jobs, sweeps).rows
    assert row.seeds == ["0", "1", "2", "3", "4"]
    assert row.run_ids == ["a0", "single", "a2", "b3", "b4"]


def test_other_code_is_another_fixed_setting():
    runs = [run("old", "A", 0, minute=0, code="c1"), run("new", "B", 0, minute=10, code="c2")]
    jobs, sweeps = frames(runs, [("A", 0, "lr.value"), ("B", 10, "lr.value")])
    chosen = choose(jobs, sweeps)
    assert [r.run_ids for r in chosen.rows] == [["new"]]
    assert describe_left_out(chosen) == ["code.model=m-c1: 1 run, not mixed in"]


def test_a_row_holds_one_code_version_where_the_code_differs_between_rows():
    # as in the arch study: each model's code differs by design, so the model's code is no fixed
    # setting; a run of one model made by its older code is still left out of that model's row
    runs = [run("a-old", "A", 0, "m1", minute=0, code="c0"),
            run("b1", "B", 0, "m1", minute=10, code="c1", job=0),
            run("b2", "B", 0, "m2", minute=11, code="c2", job=1)]
    jobs, sweeps = frames(runs, [("A", 0, "lr.value"), ("B", 10, "lr.value")])
    chosen = choose(jobs, sweeps)
    assert [r.run_ids for r in chosen.rows] == [["b1"], ["b2"]]
    assert describe_left_out(chosen) == ["code.model=m-c0: 1 run, not mixed in"]
    assert chosen.sweeps_used == ["B"]


def test_a_key_the_reference_sweep_lacks_is_no_fixed_setting():
    # a sweep of two optimizers does not leave out the runs of a third, which has a key of its own
    runs = [run("a0", "A", 0, "0.1", minute=0, job=0), run("a1", "A", 0, "0.2", minute=1, job=1)]
    runs[1]["optimizer.lr_decay"] = "0"
    runs += [run("b0", "B", 1, "0.1", minute=10, job=0), run("b1", "B", 1, "0.3", minute=11, job=1)]
    jobs, sweeps = frames(runs, [("A", 0, "lr.value trainer.seed"), ("B", 10, "lr.value trainer.seed")])
    jobs["optimizer.lr_decay"] = [None, "0", None, None]
    jobs.attrs["config_keys"] = [*jobs.attrs["config_keys"], "optimizer.lr_decay"]
    chosen = choose(jobs, sweeps)
    assert [(r.label, r.seeds) for r in chosen.rows] == [("0.1", ["0", "1"]), ("0.2", ["0"]),
                                                         ("0.3", ["1"])]
    assert chosen.left_out == []


def test_rows_follow_the_sweep_and_the_first_is_the_default_baseline():
    runs = [run(f"a{i}", "A", 0, lr, minute=5 - i, job=i) for i, lr in enumerate(["0.1", "0.01"])]
    runs.append(run("later", "", 0, "0.5", minute=30, overrides="lr.value=0.5"))
    jobs, sweeps = frames(runs, [("A", 0, "lr.value")])
    chosen = choose(jobs, sweeps, default_baseline_first=True)
    assert [r.label for r in chosen.rows] == ["0.1", "0.01", "0.5"]  # job order, then the rest
    # a newer sweep of two of them (more seeds for a row and its baseline) keeps the order
    runs += [run("b0", "B", 1, "0.01", minute=40, job=0), run("b1", "B", 1, "0.1", minute=41, job=1)]
    jobs, sweeps = frames(runs, [("A", 0, "lr.value"), ("B", 40, "lr.value trainer.seed")])
    assert [r.label for r in choose(jobs, sweeps).rows] == ["0.1", "0.01", "0.5"]
    assert [r.baseline for r in chosen.rows] == [True, False, False]
    with pytest.raises(LookupError):
        choose(jobs, sweeps, sweep="nope")


def test_paired_where_the_seeds_match_else_welch_and_holm():
    base = {"0": 0.50, "1": 0.60, "2": 0.55}
    same_seeds = compare({"0": 0.52, "1": 0.625, "2": 0.57}, base, 100)
    assert same_seeds.test == "paired"
    # the seed's share of the spread is gone: the paired test decides where Welch's cannot
    assert same_seeds.p < 0.05
    other_seeds = compare({"3": 0.52, "4": 0.625, "5": 0.57}, base, 100)
    assert other_seeds.test == "Welch" and other_seeds.p > 0.5
    assert math.isclose(same_seeds.diff, other_seeds.diff)
    [undecided] = judge([{"3": 0.52, "4": 0.625, "5": 0.57}], base, 100)
    assert undecided.seeds_needed > 3  # the table's judgement adds the seeds needed
    # a subset of the baseline's seeds: paired over the two shared
    subset = compare({"0": 0.52, "1": 0.625}, base, 100)
    assert subset.test == "paired" and subset.shared == 2 and math.isclose(subset.diff, 2.25)
    assert compare({"0": 0.5}, base, 100).p is None  # one run cannot say
    assert holm([0.01, 0.04, None, 0.03]) == [0.03, 0.06, None, 0.06]


def test_seeds_needed_matches_the_textbook_power():
    # two-sided t-test at 5%, 80% power: d = 1 needs 17 per group; paired d_z = 1 needs 10
    assert seeds_needed(1.0, 1.0, paired=False) == 17
    assert seeds_needed(1.0, 1.0, paired=True) == 10
    assert seeds_needed(0.0, 1.0, paired=True) is None


def test_the_second_round_adds_seeds_to_undecided_rows_and_the_baseline_only():
    from cifar_sweep.report.adaptive_seeds import second_round
    from cifar_sweep.report.rows import records
    from cifar_sweep.report.studies import Table, TableSpec

    accuracy = {"0.005": [0.50, 0.60, 0.55],   # the baseline
                "0.01": [0.70, 0.81, 0.74],    # clearly better: decided
                "0.05": [0.52, 0.61, 0.58],    # close: undecided, a few more seeds would tell
                "0.1": [0.40, 0.71, 0.52]}     # noisy: undecided, more than the cap would tell
    runs = [run(f"{lr}-{s}", "A", s, lr, minute=i, job=i, acc=acc)
            for i, (lr, values) in enumerate(accuracy.items()) for s, acc in enumerate(values)]
    jobs, sweeps = frames(runs, [("A", 0, "lr.value trainer.seed")])
    selection = choose(jobs, sweeps, baseline="lr.value=0.005")
    recs = records(jobs, selection)
    table = Table(TableSpec("lr", "ablation-lr"), jobs, selection, recs, {})
    decided = {r.label: r.delta.seeds_tell_apart for r in recs if r.delta}
    assert decided == {"0.01": True, "0.05": False, "0.1": False}
    needed = {r.label: r.delta.seeds_needed for r in recs if r.delta}
    rounds = second_round(table, cap=8)
    assert rounds == sorted(rounds) and all(values[0] == "0.005" for _, values in rounds)
    assert {v for _, values in rounds for v in values[1:]} == {"0.05", "0.1"}
    assert dict((v, n) for n, values in rounds for v in values[1:]) == {
        "0.05": min(8, needed["0.05"] or 8), "0.1": min(8, needed["0.1"] or 8)}
    assert second_round(table, cap=3) == []  # three seeds already: the cap is reached


def test_a_sweep_logged_before_its_first_job_tag_takes_its_first_override_value():
    # 0.1 ran first (an older sweep); the newer sweep `lr.value=0.01,0.1` names 0.01 first
    runs = [run("old", "A", 0, "0.1", minute=0), run("b0", "B", 0, "0.01", minute=10, job=0),
            run("b1", "", 0, "0.1", minute=0)]
    runs[2]["sweeps"] = "A B"
    jobs, sweeps = frames(runs[1:], [("A", 0, "lr.value"), ("B", 10, "lr.value")])
    sweeps["overrides"] = ["lr.value=0.1", "lr.value=0.01,0.1"]
    chosen = choose(jobs, sweeps, default_baseline_first=True)
    assert [r.label for r in chosen.rows] == ["0.1", "0.01"]  # the order the sweeps first ran them
    assert chosen.baseline.label == "0.01"


def test_a_table_of_rows_of_many_shapes_is_judged_as_each_row_alone():
    # judge hands the rows of one test shape to scipy together: each must get its own answer
    base = {"0": 0.70, "1": 0.72, "2": 0.69, "3": 0.71}
    rows = [{"0": 0.75, "1": 0.74, "2": 0.73},                  # paired over 3
            {"5": 0.60, "6": 0.64},                             # Welch, 2 against 4
            {"0": 0.71, "1": 0.70},                             # paired over 2
            {"0": 0.80, "1": 0.79, "2": 0.83},                  # paired over 3 again
            {"7": 0.50},                                        # one run: no test
            {"5": 0.66, "6": 0.61, "8": 0.70}]                  # Welch, 3 against 4
    judged = judge(rows, base, 100)
    for row, delta in zip(rows, judged):
        alone = compare(row, base, 100)
        assert (delta.diff, delta.low, delta.high, delta.p, delta.test) == \
            (alone.diff, alone.low, alone.high, alone.p, alone.test)
    assert [d.test for d in judged] == ["paired", "Welch", "paired", "paired", "", "Welch"]
    assert judged[0].p != judged[3].p


def test_the_seeds_for_many_rows_are_those_of_each_row_alone():
    from cifar_sweep.statistics import seeds_needed_all

    diffs, sds = [1.0, 0.0, 0.3, 2.5, 0.01, 1.0], [1.0, 1.0, 1.0, 1.0, 1.0, float("nan")]
    for paired in (True, False):
        assert seeds_needed_all(diffs, sds, paired) == [
            seeds_needed(d, s, paired) for d, s in zip(diffs, sds)]
    assert seeds_needed_all(diffs, sds, False)[:2] == [17, None]
