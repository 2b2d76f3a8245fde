"""The plan of a sweep is the decisions its jobs then act on; a config is trained by one command
at a time, and a killed run is continued by one job only. Real processes, real kills."""

import pytest

from conftest import ROOT
from test_resume import epochs_logged, jobs, kill_after, start

PLAN = ROOT / "src" / "plan.py"
FAST_PLAN = ["data=synthetic", "trainer.num_threads=1", "trainer.epochs=2",
             "hydra/launcher=basic", "tracking.figures=false"]


@pytest.mark.slow  # in `make test-full`: the default suite stays under about 12 minutes
def test_the_plan_is_what_the_sweep_then_does_and_creates_no_run(project):
    project.train("-m", "lr.value=0.01,0.02", *FAST_PLAN[2:], check=True)
    kill_after(start(project, "lr.value=0.03", *FAST_PLAN[2:]), "epoch 1/2")
    before = {r.info.run_id: r.info.status for r in project.runs()}
    [killed] = [j for j in jobs(project) if j.data.params["lr.value"] == "0.03"]
    finished = {j.data.params["lr.value"]: j.info.run_id for j in jobs(project)
                if j.info.status == "FINISHED"}

    proc = project.run(*FAST_PLAN, "lr.value=0.01,0.02,0.03,0.04", script=PLAN, check=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("#")]
    assert lines == [
        f"#0 lr.value=0.01: already finished: run {finished['0.01']}",
        f"#1 lr.value=0.02: already finished: run {finished['0.02']}",
        f"#2 lr.value=0.03: continue run {killed.info.run_id} from epoch 2",
        "#3 lr.value=0.04: train"], proc.stdout
    assert {r.info.run_id: r.info.status for r in project.runs()} == before  # nothing written

    bad = project.run(*FAST_PLAN, "lr.value=0.01,0", script=PLAN)
    assert bad.returncode == 2 and "#1 lr.value=0: invalid: lr.value=0" in bad.stdout

    # the sweep does what the plan said
    out = project.train("-m", "lr.value=0.01,0.02,0.03,0.04", *FAST_PLAN[2:], check=True).stdout
    assert out.count("already finished: run") == 2 and "continuing from epoch 2" in out
    runs = {j.data.params["lr.value"]: j for j in jobs(project)}
    assert runs["0.03"].info.run_id == killed.info.run_id and epochs_logged(
        project, killed.info.run_id) == [1, 2]
    assert runs["0.04"].info.status == "FINISHED"


def test_two_identical_commands_train_one_run(project):
    same = ["lr.value=0.02", "trainer.epochs=3", "tracking.figures=false"]
    first, second = start(project, *same), start(project, *same)
    outs = [p.communicate(timeout=600)[0] for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], outs
    trained = [o for o in outs if "epoch 1/3" in o]
    assert len(trained) == 1, outs  # the other stood aside, or found it finished
    other = next(o for o in outs if o not in trained)
    assert "being trained by" in other or "already finished: run" in other, other
    [run] = jobs(project)  # one run, FINISHED; no ghost, no second run
    assert run.info.status == "FINISHED" and epochs_logged(project, run.info.run_id) == [1, 2, 3]


@pytest.mark.slow  # over a minute on the 2-core CPU: make test-full (a default test covers its core)
def test_a_killed_run_is_continued_by_one_job_only(project):
    same = ["lr.value=0.02", "trainer.epochs=4", "tracking.figures=false"]
    kill_after(start(project, *same), "epoch 1/4")
    first, second = start(project, *same), start(project, *same)
    outs = [p.communicate(timeout=600)[0] for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], outs
    assert sum("continuing from epoch 2" in o for o in outs) == 1, outs
    [run] = jobs(project)
    assert run.info.status == "FINISHED" and epochs_logged(project, run.info.run_id) == [1, 2, 3, 4]


def test_the_plan_says_an_error_all_jobs_share_once(project):
    proc = project.run("data=image_folder", "data.root=does/not/exist", "optimizer=sgd,adam",
                       "trainer.seed=0,1", script=PLAN)
    assert proc.returncode == 2
    lines = [line for line in proc.stdout.splitlines() if line.startswith("#")]
    assert lines[0].startswith("#0 optimizer=sgd trainer.seed=0: invalid: ") and "does/not/exist" in lines[0]
    assert lines[1:] == ["#1 optimizer=sgd trainer.seed=1: invalid: as #0",
                         "#2 optimizer=adam trainer.seed=0: invalid: as #0",
                         "#3 optimizer=adam trainer.seed=1: invalid: as #0"], proc.stdout
    assert proc.stdout.count("does/not/exist") == 1
