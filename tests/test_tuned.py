"""A tuned study (`study.tune`, src/tune.py) through the real command, on small generated data:
each arm searched on validation (its trials never test), each arm's best trained anew over the
seeds, the table read back; killed and run again; and the grid of a two-setting sweep. Results
are read back from MLflow and the files written, and checked against the trials' own runs."""

from __future__ import annotations

import csv
import math
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT

TUNE = ROOT / "src" / "tune.py"
# 400 generated images (80 for validation), one thread, basic launcher: seconds a trial
TINY = ["data=synthetic", "data.source.num_train=400", "data.source.num_test=100",
        "trainer.num_threads=1", "hydra/launcher=basic"]
PRESET = """# @package _global_
defaults:
  - override /model: modified_net
  - override /lr: constant
study:
  name: tiny_tuned
  baseline: optimizer=sgd
  tune:
    trials: 2
    seed: 1000
    pruner: {kind: none}
    space:
      lr.value: {type: float, low: 1.0e-3, high: 0.1, log: true}
tracking:
  experiment: tiny-tuned
hydra:
  sweeper:
    params:
      optimizer: sgd,adam
"""


def command(project, *extra: str) -> list[str]:
    conf = project.workdir / "myconf"
    (conf / "ablation").mkdir(parents=True, exist_ok=True)
    (conf / "ablation" / "tiny_tuned.yaml").write_text(PRESET)
    given = {e.partition("=")[0] for e in extra}
    return [sys.executable, str(TUNE), "--config-dir", str(conf), "ablation=tiny_tuned",
            *[o for o in TINY if o.partition("=")[0] not in given], *extra]


def run(project, *extra: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(command(project, *extra), cwd=project.workdir, capture_output=True,
                          text=True, timeout=900, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return proc


def runs(project):
    return project.runs("tiny-tuned")


def jobs(project):
    """The runs that trained (not sweeps, not reference runs)."""
    return [r for r in runs(project) if r.data.tags.get("cifar_sweep.role") == "job"]


def trials_of(project, arm: str):
    return [r for r in jobs(project) if r.data.tags.get("hpo.trial")
            and r.data.params.get("study.tune.arm") == arm]


def seed_runs(project, arm: str):
    return [r for r in jobs(project) if not r.data.tags.get("hpo.trial")
            and r.data.params.get("study.tune.arm") == arm]


def table_rows(project) -> list[dict]:
    with (project.sweep_report("tiny_tuned") / "table.csv").open() as f:
        return list(csv.DictReader(f))


def check_protocol(project, seeds: list[str], trials: int) -> None:
    """Every arm: `trials` finished trials, none with a test metric; its seed runs trained with
    the argmax of its trials' validation accuracy (read from the trials' runs), and the table's
    row naming exactly that value, the trials and the best validation accuracy."""
    rows = {r["setting"].partition("=")[2]: r for r in table_rows(project)}
    assert set(rows) == {"sgd", "adam"}, rows
    for arm in ("sgd", "adam"):
        tried = trials_of(project, arm)
        assert len(tried) == trials and all(r.info.status == "FINISHED" for r in tried)
        for r in tried:
            assert not [k for k in r.data.metrics if k.startswith("test")], r.data.metrics
            assert r.data.params["trainer.skip_test"] == "True"
            assert r.data.params["trainer.seed"] == "1000"
        # independently: the trial of the highest best_val_accuracy, earliest on a tie
        best = max(sorted(tried, key=lambda r: int(r.data.tags["hpo.trial"])),
                   key=lambda r: r.data.metrics["best_val_accuracy"])
        chosen = float(best.data.params["lr.value"])
        # its seed runs at that value (an earlier best's, after more trials, are others)
        trained = [r for r in seed_runs(project, arm)
                   if float(r.data.params["lr.value"]) == chosen]
        assert sorted(r.data.params["trainer.seed"] for r in trained) == seeds
        assert all(r.info.status == "FINISHED" and "test_accuracy" in r.data.metrics
                   for r in trained)
        row = rows[arm]
        assert sorted(row["run_ids"].split()) == sorted(r.info.run_id for r in trained)
        assert row["tuned"] == f"lr.value={chosen!r}"
        assert int(row["tune_trials"]) == trials
        assert math.isclose(float(row["tune_best_val_accuracy"]),
                            best.data.metrics["best_val_accuracy"])
        mean = sum(r.data.metrics["test_accuracy"] for r in trained) / len(trained)
        assert math.isclose(float(row["test_accuracy_mean"]), mean)


def test_tuned_study_end_to_end_then_again_trains_nothing(project):
    """Two arms x 2 trials, then each arm's best over seeds 0 and 1: the table's rows name the
    values the seeds ran with, the argmax of the trials; the same command again trains
    nothing; the table and the trials' figure come from MLflow alone."""
    first = run(project, "trainer.epochs=1", "trainer.seed=0,1")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    check_protocol(project, ["0", "1"], 2)
    folder = project.sweep_report("tiny_tuned")
    assert (folder / "trials.png").is_file() and (folder / "trials.pdf").is_file()
    caption = (folder / "table.md").read_text()
    assert "2-trial search over lr.value in [0.001, 0.1] (log)" in caption
    assert "optimistic" in caption
    trained = {r.info.run_id for r in jobs(project)}
    assert len(trained) == 2 * 2 + 2 * 2

    again = run(project, "trainer.epochs=1", "trainer.seed=0,1")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert {r.info.run_id for r in jobs(project)} == trained  # nothing trained
    assert "its 2 trials are done" in again.stdout
    check_protocol(project, ["0", "1"], 2)


def test_bad_protocols_are_one_line_before_any_run(project, capsys, monkeypatch):
    """In-process (nothing it refuses reaches a subprocess): one `error:` line, exit 2, no run."""
    from cifar_sweep.commands.tuned import main

    monkeypatch.chdir(project.workdir)
    argv = command(project)[2:]  # without the interpreter and the script
    for extra, said in (
            (["trainer.seed=0,1000"], "study.tune.seed=1000 is invalid"),
            (["trainer.batch_size=32,64"], "trainer.batch_size=32,64 is invalid here"),
            (["study.tune.trials=0"], "study.tune.trials=0 is invalid"),
            (["study.tune.space={lr.value:{type:float,low:0.5,high:0.1}}"],
             "study.tune.space.lr.value="),
            (["optimzer=adam"], "optimzer"),
            (["study.tune.trails=3"], "trails")):
        assert main([*argv, *extra], ROOT / "src") == 2, extra
        errors = [line for line in capsys.readouterr().err.splitlines()
                  if line.startswith("error: ")]
        assert len(errors) == 1 and said in errors[0], (extra, errors)
    assert not (project.store / "mlflow.db").exists()


def _killed_when(project, needle_after: str, needle: str, *extra: str) -> str:
    """Start the command in a session of its own; SIGKILL all its processes (a lost node, a kill
    -9 of the terminal's job) once `needle` appears after `needle_after`."""
    proc = subprocess.Popen(command(project, *extra), cwd=project.workdir,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
    seen, armed = [], False
    try:
        for line in proc.stdout:
            seen.append(line)
            armed = armed or needle_after in line
            if armed and needle in line:
                time.sleep(0.3)
                os.killpg(proc.pid, signal.SIGKILL)
                break
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=60)
    assert armed and seen and needle in seen[-1], "".join(seen)[-3000:]
    return "".join(seen)


@pytest.mark.slow  # three commands of 3-epoch runs: about 2 minutes here
def test_killed_while_tuning_and_while_training_seeds_loses_nothing(project):
    """SIGKILL during an arm's search (a trial mid-run), then during the seeds; the same command
    then finishes: no config trained twice (a killed run continues from its checkpoint), every
    trial and seed run finished, the rows as the protocol says."""
    # 1,600 images: an epoch takes about a second here, so the kill 0.3 s after a trial's first
    # epoch's line lands inside its second
    extra = ("trainer.epochs=3", "trainer.seed=0,1", "data.source.num_train=1600")
    _killed_when(project, "tune adam", "epoch 1/3", *extra)
    assert any(r.info.status != "FINISHED" or not r.data.metrics for r in trials_of(project, "adam"))
    _killed_when(project, "tune adam: best", "epoch 1/3", *extra)
    assert not all(len(seed_runs(project, a)) == 2 for a in ("sgd", "adam")) or any(
        r.info.status != "FINISHED" for a in ("sgd", "adam") for r in seed_runs(project, a))
    last = run(project, *extra)
    assert last.returncode == 0, last.stdout[-3000:] + last.stderr[-3000:]
    check_protocol(project, ["0", "1"], 2)
    by_config: dict[str, list[str]] = {}
    for r in jobs(project):
        by_config.setdefault(r.data.tags["config_hash"], []).append(r.info.run_id)
    assert all(len(ids) == 1 for ids in by_config.values()), by_config  # continued, not anew
    assert len(by_config) == 2 * 2 + 2 * 2
    for r in jobs(project):  # every epoch logged once: a continued run's epochs too
        steps = [m.step for m in project.client.get_metric_history(r.info.run_id,
                                                                   "val_accuracy")]
        assert sorted(steps) == [1, 2, 3], (r.info.run_id, steps)


@pytest.mark.slow  # two commands: about 2 minutes here
def test_more_trials_retrain_only_an_arm_whose_best_changed(project):
    """study.tune.trials=3 after 2: each search continues by one trial; an arm's seeds train
    again only where its best changed (which the test reads from the trials themselves)."""
    extra = ("trainer.epochs=1", "trainer.seed=0")
    assert run(project, *extra).returncode == 0
    before = {a: {r.info.run_id for r in seed_runs(project, a)} for a in ("sgd", "adam")}
    chosen = {a: best_value(project, a) for a in ("sgd", "adam")}
    more = run(project, *extra, "study.tune.trials=3")
    assert more.returncode == 0, more.stdout[-3000:] + more.stderr[-3000:]
    check_protocol(project, ["0"], 3)
    for arm in ("sgd", "adam"):
        now = {r.info.run_id for r in seed_runs(project, arm)}
        if best_value(project, arm) == chosen[arm]:
            assert now == before[arm], arm  # unchanged best: its seeds not trained again
        else:
            assert len(now - before[arm]) == 1, arm


def best_value(project, arm: str) -> float:
    """The lr.value of an arm's best trial (the earliest on a tie), from its trials' runs."""
    tried = sorted(trials_of(project, arm), key=lambda r: int(r.data.tags["hpo.trial"]))
    best = max(tried, key=lambda r: r.data.metrics["best_val_accuracy"])
    return float(best.data.params["lr.value"])


@pytest.mark.slow  # a sweep and a report: test_grid_is_drawn_from_a_tables_rows draws it fast
def test_two_setting_sweep_writes_its_grid(project):
    """A 2x2 sweep: grid.png and grid.pdf beside its table; the cells' means are the table's."""
    proc = project.run("-m", *TINY, "trainer.epochs=1", "optimizer=sgd,adam",
                       "lr.value=0.001,0.05", "tracking.figures=false",
                       "tracking.log_model=false")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = project.run("sweep=latest", script=ROOT / "src" / "report.py")
    assert report.returncode == 0, report.stdout[-2000:] + report.stderr[-2000:]
    folder = project.sweep_report("cifar-sweep")
    assert (folder / "grid.png").is_file() and (folder / "grid.pdf").is_file()


def test_grid_cells_are_the_rows_means_and_each_lines_best():
    from cifar_sweep.report.study_figures import FigureRow, grid_cells

    def row(opt, lr, mean):
        return FigureRow(f"{opt} {lr}", ["r"], accuracy=(mean, 0.01),
                         overrides=(("optimizer", opt), ("lr.value", lr)))

    rows = [row("sgd", "0.001", 0.3), row("sgd", "0.01", 0.5), row("adam", "0.001", 0.7),
            row("adam", "0.01", 0.2), row("adam", "0.1", 0.4)]
    keys, down, across, means, best, _ = grid_cells(rows)
    assert keys == ["optimizer", "lr.value"]
    assert down == ["sgd", "adam"] and across == ["0.001", "0.01", "0.1"]
    assert means[0][:2] == [0.3, 0.5] and math.isnan(means[0][2])
    assert means[1] == [0.7, 0.2, 0.4]
    assert best == [1, 0]
    one = [FigureRow("a", ["r"], accuracy=(0.5, 0), overrides=(("optimizer", "sgd"),))]
    assert grid_cells(one) is None  # one setting: no grid
    assert grid_cells(rows[:2]) is None  # one value of the first setting: no grid


def test_edges_values_and_names():
    from cifar_sweep.commands.tuned import override_value
    from cifar_sweep.report import tuning

    spec = {"type": "float", "low": 1e-5, "high": 1.0, "log": True}
    # 1e-5 .. 1 spans 5 decades: the outer 5% is a quarter decade at each end
    assert tuning.edge_line("adam", "lr.value", 1.7e-5, spec) == \
        "adam: best lr.value at the range's lower edge: widen it"
    assert tuning.edge_line("adam", "lr.value", 1.8e-5, spec) is None  # 10**-4.745 > edge
    assert tuning.edge_line("sgd", "lr.value", 0.6, spec) == \
        "sgd: best lr.value at the range's upper edge: widen it"
    linear = {"type": "float", "low": 0.0, "high": 0.2}
    assert tuning.edge_line("a", "loss.label_smoothing", 0.009, linear) is not None
    assert tuning.edge_line("a", "loss.label_smoothing", 0.011, linear) is None
    assert tuning.values_text({"lr.value": "0.0312450", "trainer.batch_size": "64"}) == \
        "lr.value=0.031245 trainer.batch_size=64"
    assert tuning.arm_axes(["optimizer"], "optimizer=sgd") == (["+tuned_optimizer"],
                                                               "+tuned_optimizer=sgd")
    assert tuning.arm_group("+preset_optimizer") == "tuned_preset_optimizer"
    assert override_value({"lr.value": {"low": 1e-05, "log": True}, "c": ["a", "b c"]}) == \
        "{lr.value:{low:1e-05,log:true},c:[a,'b c']}"
    search = tuning.Search("s", [tuning.Trial(0, "a", "finished", 0.5, {}),
                                 tuning.Trial(1, "b", "finished", 0.7, {}),
                                 tuning.Trial(2, "c", "finished", 0.7, {}),
                                 tuning.Trial(3, "d", "pruned", None, {}),
                                 tuning.Trial(4, "e", "interrupted", None, {})])
    assert search.best.number == 1 and search.spent == 4


def test_grid_is_drawn_from_a_tables_rows(tmp_path):
    """grid.png and grid.pdf from a 2x2 table's rows; nothing where the rows vary one setting."""
    from cifar_sweep.report.study_figures import FigureRow, grid

    rows = [FigureRow(f"{o} {lr}", ["a", "b"], accuracy=(m, 0.02),
                      overrides=(("optimizer", o), ("lr.value", lr)))
            for o, lr, m in (("sgd", "0.001", 0.3), ("sgd", "0.01", 0.5),
                             ("adam", "0.001", 0.7), ("adam", "0.01", 0.2))]
    assert grid(rows, tmp_path, "a 2x2 sweep")
    assert (tmp_path / "grid.png").stat().st_size > 0 and (tmp_path / "grid.pdf").is_file()
    assert not grid(rows[:2], tmp_path / "none", "one value down")


def test_a_tuned_table_keeps_the_arms_current_bests_only():
    """Rows of the reference sweep stay; an arm's earlier best (seed runs of no reference sweep)
    is listed as not mixed in; a table that is not tuned is left as it is."""
    import pandas as pd

    from cifar_sweep.report.selection import Row, Selection
    from cifar_sweep.report.tuning import keep_current

    frame = pd.DataFrame({"run_id": ["a", "b", "c", "d"],
                          "sweeps": ["S2", "S1 S2", "S1", "S1"],
                          "study.tune.search": ["x:sgd", "x:adam", "x:adam", "x:sgd"]})

    def selection():
        arm = "+tuned_optimizer"
        rows = [Row("1", "sgd", {arm: "sgd"}, ["a"], ["0"], (1,)),
                Row("2", "adam lr.value=0.1", {arm: "adam", "lr.value": "0.1"}, ["b"], ["0"],
                    (2,)),
                Row("3", "adam", {arm: "adam"}, ["c"], ["0"], (3,)),
                Row("4", "sgd lr.value=0.2", {arm: "sgd", "lr.value": "0.2"}, ["d"], ["0"], (4,))]
        return Selection(rows, "S2", ["+tuned_optimizer"], {})

    chosen = selection()
    keep_current(frame, chosen)
    assert [r.label for r in chosen.rows] == ["sgd", "adam"]  # the new best named as its arm
    assert chosen.rows[1].overrides == {"+tuned_optimizer": "adam"}
    assert [ids for _, ids in chosen.left_out] == [["c"], ["d"]]
    untuned = selection()
    keep_current(frame.drop(columns="study.tune.search"), untuned)
    assert len(untuned.rows) == 4 and not untuned.left_out
    assert untuned.rows[1].label == "adam lr.value=0.1"
