"""An Optuna study through the real entrypoint: trials pruned, a failing trial, a killed study
continued to its total; read back from the Optuna storage and MLflow, as a user would."""

import csv
import os

import optuna
import pytest
from optuna.trial import TrialState

from conftest import ROOT
from test_resume import kill_after, start

REPORT = ROOT / "src" / "report.py"
# six trials, one at a time: two good ones first, then one built to learn nothing (pruned: its
# validation accuracy stays below the median of the finished ones), one whose loss becomes NaN
# (failed), then two the sampler picks
STUDY = ["-m", "hpo=modifiednet", "hydra/launcher=basic", "trainer.epochs=4",
         "hydra.sweeper.n_trials=6", "hydra.sweeper.study_name=test",
         "hydra.sweeper.pruner.n_startup_trials=2", "hydra.sweeper.pruner.n_warmup_steps=0",
         "hydra.sweeper.space={lr.value:{type:float,low:0.01,high:0.1,log:true}}",
         "hydra.sweeper.enqueue=[{lr.value:0.05},{lr.value:0.02},{lr.value:0.00000001},"
         "{lr.value:1000000000000.0}]"]


def trials(project):
    storage = f"sqlite:///{project.workdir / 'hpo' / 'optuna.db'}"
    return optuna.load_study(study_name="test", storage=storage).get_trials()


@pytest.mark.slow  # in `make test-full`: the default suite stays under about 12 minutes
def test_study_prunes_survives_a_failed_trial_and_reports(project):
    proc = project.train(*STUDY, check=True)
    states = [t.state for t in trials(project)]
    assert len(states) == 6, proc.stdout
    assert states[:2] == [TrialState.COMPLETE, TrialState.COMPLETE]
    assert states[2] == TrialState.PRUNED  # built to be bad
    assert states[3] == TrialState.FAIL    # NaN loss: the study went on
    assert all(s in (TrialState.COMPLETE, TrialState.PRUNED) for s in states[4:])

    runs = project.runs("hpo-modifiednet")
    jobs = {int(r.data.tags["hpo.trial"]): r for r in runs if r.data.tags.get("hpo.trial")}
    assert jobs[2].info.status == "KILLED" and jobs[2].data.tags["hpo.state"] == "pruned"
    assert len(project.client.get_metric_history(jobs[2].info.run_id, "val_accuracy")) < 4
    assert jobs[3].info.status == "FAILED" and "NonFiniteLossError" in jobs[3].data.tags["failure_reason"]
    assert jobs[0].info.status == "FINISHED"
    [parent] = [r for r in runs if r.data.tags.get("cifar_sweep.role") == "sweep"]
    best = max(t.value for t in trials(project) if t.state == TrialState.COMPLETE)
    assert abs(parent.data.metrics["best_best_val_accuracy"] - best) < 1e-12
    assert {"optimization_history.png", "param_importances.png"} <= {
        a.path for a in project.client.list_artifacts(parent.info.run_id)}

    project.run("hpo=modifiednet", "hydra.sweeper.study_name=test", script=REPORT, check=True)
    table = (project.workdir / "results" / "hpo-modifiednet" / "table.md").read_text()
    assert "| 2 |" in table and "pruned" in table and "failed" in table

    # the same command again: the study is complete, nothing trains
    again = project.train(*STUDY, check=True)
    assert "epoch 1/4" not in again.stdout and len(trials(project)) == 6


@pytest.mark.slow  # two studies: about 60 s
def test_killed_study_continues_to_its_total(project):
    kill_after(start(project, *STUDY), "trial 1:", "#2 epoch 1/4")
    project.train(*STUDY, check=True)
    ended = [t for t in trials(project) if t.state != TrialState.RUNNING]
    assert len(ended) == len(trials(project))  # nothing left RUNNING
    retried = {t.user_attrs.get("retry_of") for t in trials(project)} - {None}
    assert len([t for t in ended if t.number not in retried]) == 6


@pytest.mark.slow  # two studies through the parallel launcher: about 70 s
def test_trials_run_side_by_side_with_the_next_ones_queued(project):
    """The parallel launcher, 2 jobs: trials go to it 4 at a time (twice the jobs side by side),
    so that a worker whose trial ends early takes the next; each is a child of one sweep run,
    with its share of the cores. Then the study grown to 8 trials, 3 per launch."""
    study = ["-m", "hpo=modifiednet", "hydra/launcher=parallel", "hydra.launcher.n_jobs=2",
             "trainer.num_threads=null", "hydra.sweeper.study_name=test"]
    proc = project.train(*study, "hydra.sweeper.n_trials=5", check=True)
    out = proc.stdout + proc.stderr
    assert "n_jobs=2," in out and "is launching 4 jobs" in out and "is launching 1 jobs" in out
    assert [t.state for t in trials(project)] == [TrialState.COMPLETE] * 5
    runs = project.runs("hpo-modifiednet")
    [parent] = [r for r in runs if r.data.tags.get("cifar_sweep.role") == "sweep"]
    jobs = [r for r in runs if r.data.tags.get("hpo.trial")]
    assert sorted(int(r.data.tags["hpo.trial"]) for r in jobs) == [0, 1, 2, 3, 4]
    assert {r.data.tags["mlflow.parentRunId"] for r in jobs} == {parent.info.run_id}
    share = str(max(1, len(os.sched_getaffinity(0)) // 2))
    assert all(r.info.status == "FINISHED" and r.data.tags["num_threads"] == share for r in jobs)
    # the trial table names each trial's values, the schedule (a config group's option) included
    project.run("hpo=modifiednet", "hydra.sweeper.study_name=test", script=REPORT, check=True)
    with open(project.workdir / "results" / "hpo-modifiednet" / "table.csv") as f:
        table = list(csv.DictReader(f))
    by_trial = {int(r.data.tags["hpo.trial"]): r for r in jobs}
    for row in table:
        run = by_trial[int(row["Trial"])]
        assert row["lr"] == run.data.tags["lr"] and row["lr"] in {"constant", "cosine", "onecycle"}
        assert float(row["lr.value"]) == pytest.approx(float(run.data.params["lr.value"]), rel=1e-3)

    proc = project.train(*study, "hydra.sweeper.n_trials=8", "hydra.sweeper.trials_per_launch=3",
                         check=True)
    assert "is launching 3 jobs" in proc.stdout + proc.stderr
    assert [t.state for t in trials(project)] == [TrialState.COMPLETE] * 8


@pytest.mark.parametrize("override, said", [
    ("hydra.sweeper.trials_per_launch=0",
     "error: hydra.sweeper.trials_per_launch=0 is invalid: allowed: an integer >= 1, or null"),
    ("hydra.sweeper.metric=test_accuracy",
     "error: hydra.sweeper.metric=test_accuracy is invalid: allowed: best_val_accuracy"),
    ("hydra.sweeper.pruner.kind=mean",
     "error: hydra.sweeper.pruner.kind=mean is invalid: allowed: median, successive_halving, none"),
    ("hydra.sweeper.space.lr.choices=[constant,cosin]",
     "Could not find 'lr/cosin'; available options in 'lr': constant, cosine, onecycle, step"),
    pytest.param("+hydra.sweeper.space={lr.valu:{type:float,low:0.1,high:0.2}}", "Could not override 'lr.valu'", marks=pytest.mark.slow),
    pytest.param("hydra.sweeper.space={lr.value:{type:float,low:0.3,high:0.2}}",
                 "error: hydra.sweeper.space.lr.value={'type': 'float', 'low': 0.3, 'high': 0.2, 'log': True} "
                 "is invalid: `low <= high` must hold", marks=pytest.mark.slow),
])
def test_bad_search_settings_are_one_line_before_any_run(project, override, said):
    proc = project.train("-m", "hpo=modifiednet", "hydra.sweeper.study_name=test", override)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    [line] = [x for x in out.splitlines() if x.startswith("error:")]
    assert said in line, line
    assert "Traceback" not in out
    assert project.runs("hpo-modifiednet") == []  # no parent run, no trial
    assert not (project.workdir / "hpo" / "optuna.db").exists()


@pytest.mark.slow  # submitit's local executor: a process per trial, about 45 s
def test_search_through_submitit_the_clusters_path(project):
    """hydra/launcher=submitit_local runs the SLURM preset's code path on this machine: trials
    are submitit jobs, 2 per launch as asked, each a child run of the one search run."""
    proc = project.train("-m", "hpo=modifiednet", "hydra/launcher=submitit_local",
                         "hydra.sweeper.study_name=test", "hydra.sweeper.n_trials=3",
                         "hydra.sweeper.trials_per_launch=2", check=True, timeout=600)
    launches = [line for line in (proc.stdout + proc.stderr).splitlines()
                if "Submitit 'local' sweep output dir" in line]
    assert len(launches) == 2, proc.stdout + proc.stderr  # trials 0 and 1, then trial 2
    assert [t.state for t in trials(project)] == [TrialState.COMPLETE] * 3
    runs = project.runs("hpo-modifiednet")
    [parent] = [r for r in runs if r.data.tags.get("cifar_sweep.role") == "sweep"]
    jobs = [r for r in runs if r.data.tags.get("hpo.trial")]
    assert sorted(int(r.data.tags["hpo.trial"]) for r in jobs) == [0, 1, 2]
    assert {r.data.tags["mlflow.parentRunId"] for r in jobs} == {parent.info.run_id}
    assert parent.info.status == "FINISHED" and all(r.info.status == "FINISHED" for r in jobs)
