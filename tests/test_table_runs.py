"""A sweep's table through the real entrypoint: complete however many pages of runs MLflow
returns, and with the same baseline after any re-run or added seeds."""

import csv

from conftest import ROOT

REPORT = ROOT / "src" / "report.py"
ONE_RUN_A_PAGE = {"CIFAR_SWEEP_PAGE_SIZE": "1"}  # every read of runs over many pages


def table(project, *args, env=None) -> tuple[list[dict], str]:
    project.run("sweep=latest", *args, script=REPORT, check=True, env=env)
    out = project.workdir / "reports" / "cifar-sweep"
    return list(csv.DictReader((out / "table.csv").open())), (out / "table.md").read_text()


def test_a_sweeps_baseline_is_its_first_value_after_re_runs_and_its_table_is_never_cut(project):
    sweep = ("-m", "hydra/launcher=basic", "tracking.figures=false")
    # adam first, alone: a later sweep's first value, sgd, is its baseline all the same
    project.train(*sweep, "optimizer=adam", check=True)
    # one run a page: the sweep's own count of its finished jobs reads every page (else it
    # would count one of two and fail), and so does its table
    proc = project.train(*sweep, "optimizer=sgd,adam", check=True, env=ONE_RUN_A_PAGE)
    assert "already finished" in proc.stdout
    printed = {line.split()[0]: line for line in proc.stdout.splitlines()
               if line.split()[:1] in (["sgd"], ["adam"])}
    assert "(baseline)" in printed["sgd"] and "(baseline)" not in printed["adam"], proc.stdout
    rows, md = table(project, env=ONE_RUN_A_PAGE)
    assert {r["setting"]: r["baseline"] for r in rows} == {"optimizer=sgd": "True",
                                                          "optimizer=adam": "False"}
    assert table(project) == (rows, md)  # one page or many: the same table

    # seeds added by the same sweep again: every run of both rows, sgd still the baseline
    proc = project.train(*sweep, "optimizer=sgd,adam", "trainer.seed=0,1", check=True,
                         env=ONE_RUN_A_PAGE)
    rows, md = table(project, env={"CIFAR_SWEEP_PAGE_SIZE": "2"})
    assert {r["setting"]: (r["baseline"], r["seeds"]) for r in rows} == {
        "optimizer=sgd": ("True", "0 1"), "optimizer=adam": ("False", "0 1")}
    jobs = [r for r in project.runs() if r.data.tags["cifar_sweep.role"] == "job"]
    assert len(jobs) == 4 and sorted(i for r in rows for i in r["run_ids"].split()) == sorted(
        j.info.run_id for j in jobs)
    assert rows[[r["setting"] for r in rows].index("optimizer=adam")]["delta_test"] == "paired"
    assert table(project) == (rows, md)
    # a bad page size: one line naming it
    proc = project.run("sweep=latest", script=REPORT, env={"CIFAR_SWEEP_PAGE_SIZE": "0"})
    assert proc.returncode != 0 and "CIFAR_SWEEP_PAGE_SIZE=0 is invalid" in proc.stderr
