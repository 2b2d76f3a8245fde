"""A tiny study through the real multirun; the report reads it back from MLflow alone."""

import csv
import re
import statistics

import pytest
from PIL import Image

from conftest import ROOT

REPORT = ROOT / "src" / "report.py"


@pytest.mark.slow  # in `make test-full`: the default suite stays under about 12 minutes
def test_tiny_study_table_matches_the_logged_runs(project):
    project.train("-m", "ablation=lr", "lr.value=0.005,0.05", "trainer.seed=0,1", check=True)
    proc = project.run("ablation=lr", script=REPORT, check=True)
    out = project.sweep_report("lr")
    md = (out / "table.md").read_text()
    rows = list(csv.DictReader((out / "table.csv").open()))
    assert [r["setting"] for r in rows] == ["lr.value=0.005", "lr.value=0.05"]
    assert [r["baseline"] for r in rows] == ["True", "False"]
    assert all(r["runs"] == "2" and r["seeds"] == "0 1" for r in rows)

    client = project.client
    exp = client.get_experiment_by_name("ablation-lr")
    jobs = client.search_runs([exp.experiment_id], "tags.`cifar_sweep.role` = 'job'")
    assert len(jobs) == 4
    for row in rows:
        lr = row["setting"].split("=")[1]
        logged = [j for j in jobs if j.data.params["lr.value"] == lr]
        assert sorted(row["run_ids"].split()) == sorted(j.info.run_id for j in logged)
        for metric in ("test_accuracy", "test_f1_weighted", "train_seconds"):
            values = [j.data.metrics[metric] for j in logged]
            assert abs(float(row[f"{metric}_mean"]) - statistics.fmean(values)) < 1e-9
            assert abs(float(row[f"{metric}_std"]) - statistics.stdev(values)) < 1e-9
        acc = statistics.fmean(j.data.metrics["test_accuracy"] for j in logged) * 100
        acc_std = statistics.stdev(j.data.metrics["test_accuracy"] for j in logged) * 100
        assert f"{acc:.2f} ± {acc_std:.2f}" in md
    assert "0.005 (baseline)" in md and "Runs behind each row" in md
    # the table says what it is made of: data, fingerprint, budget, seeds
    fingerprint = jobs[0].data.tags["data_fingerprint"]
    assert f"synthetic (generated) (fingerprint `{fingerprint}`), 1 epoch per run, 2 seeds" in md
    assert all(r["data"] == "synthetic (generated)" and r["data_fingerprint"] == fingerprint
               for r in rows)
    # the difference to the baseline, over seeds, with Welch's interval and p-value
    base_acc = [j.data.metrics["test_accuracy"] for j in jobs if j.data.params["lr.value"] == "0.005"]
    other_acc = [j.data.metrics["test_accuracy"] for j in jobs if j.data.params["lr.value"] == "0.05"]
    delta = (statistics.fmean(other_acc) - statistics.fmean(base_acc)) * 100
    assert abs(float(rows[1]["delta_accuracy_points"]) - delta) < 1e-9
    assert rows[0]["delta_accuracy_points"] == "nan"
    assert "Δ accuracy [95% CI]" in md and "p (test)" in md and "p (Holm)" in md
    assert rows[1]["delta_test"] == "paired"  # both rows hold seeds 0 and 1
    assert "(+0)" not in md and "(+0.000)" not in md  # the same model: no change to show
    assert "Table VIII: Accuracy (%)" in md and "| 72.80 |" in md  # the report's own number
    # ModifiedNet, batch 64, SGD 0.005 momentum 0.9, flip + rotation: conf's defaults, the report's
    assert ("\\caption{Ablation \\texttt{lr} on synthetic (generated) at the report's protocol, 1 "
            "epoch per run") in (out / "table.tex").read_text()
    assert "\\begin{tabular}" in (out / "table.tex").read_text()
    for name in ("curves.png", "confusion.png", "per_class_accuracy.png"):
        with Image.open(out / name) as image:
            image.verify()
    # the sweep logged its own table on its parent run; the report wrote nothing to the store
    [parent] = client.search_runs([exp.experiment_id], "tags.`cifar_sweep.role` = 'sweep'")
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} == {"table", "figures"}
    assert "lr.value" in proc.stdout

    # without training, again: the same table
    project.run("ablation=lr", script=REPORT, check=True)
    assert (out / "table.md").read_text() == md


@pytest.mark.slow  # over a minute on the 2-core CPU: make test-full (a default test covers its core)
def test_report_without_runs_says_what_to_do(project):
    proc = project.run("ablation=loss", script=REPORT)
    assert proc.returncode == 1
    assert "make ablation-loss" in proc.stderr
    proc = project.run("ablation=nope", script=REPORT)
    assert proc.returncode == 2 and "allowed: ablation=<arch|loss|lr|lr_onecycle|optimizer|optimizer_onecycle>, hpo=<modifiednet>, sweep=<latest|run id>, experiment=<name>" in proc.stderr
    proc = project.run("sweep=latest", script=REPORT)
    assert proc.returncode == 1 and "the store holds no sweep" in proc.stderr


def test_model_tables(project):
    project.run("models", script=REPORT, check=True)
    md = (project.workdir / "results" / "models.md").read_text()
    assert "| OriginNet | 132,402 | 0.530 | 48,252 |" in md
    assert "| ModifiedNet | 100,080 | 0.401 | 35,730 |" in md
    assert "| ResNet18 | 11,689,512 |" in md
    assert "Table III: OriginNet: layers for a 3x32x32 input (48,252 parameters)" in md
    assert "Table VI: ModifiedNet: layers for a 3x32x32 input (35,730 parameters)" in md


def test_the_design_cards_sweep_ends_with_its_table_and_report_writes_the_same(project):
    proc = project.train("-m", "optimizer=sgd,adam,rmsprop,adagrad", check=True)
    lines = proc.stdout.splitlines()
    start = lines.index(next(line for line in lines if line.startswith("Sweep cifar-sweep:")))
    printed = lines[start + 1:start + 6]
    # the runs kept their predictions: the test set's noise and Δ's bootstrap interval too
    assert printed[0].split()[:6] == ["optimizer", "accuracy", "%", "test", "noise", "F1"]
    assert printed[0].endswith("Δ bootstrap [95%]")
    assert [line.split()[0] for line in printed[1:]] == ["sgd", "adam", "rmsprop", "adagrad"]
    assert "(baseline)" in printed[1]  # the first setting, unless the user names another

    client = project.client
    [parent] = [r for r in project.runs() if r.data.tags["cifar_sweep.role"] == "sweep"]
    logged = client.download_artifacts(parent.info.run_id, "table", str(project.workdir / "dl"))
    logged_rows = list(csv.DictReader(open(f"{logged}/table.csv")))
    assert [r["setting"] for r in logged_rows] == [f"optimizer={o}" for o in
                                                   ("sgd", "adam", "rmsprop", "adagrad")]
    jobs = {r.info.run_id: r for r in project.runs() if r.data.tags["cifar_sweep.role"] == "job"}
    for row in logged_rows:
        [run_id] = row["run_ids"].split()
        assert float(row["test_accuracy_mean"]) == jobs[run_id].data.metrics["test_accuracy"]
        assert row["setting"] == f"optimizer={jobs[run_id].data.tags['optimizer']}"

    project.run("sweep=latest", script=REPORT, check=True)
    out = project.sweep_report()
    rows = list(csv.DictReader((out / "table.csv").open()))
    assert [(r["setting"], r["run_ids"], r["test_accuracy_mean"]) for r in rows] == [
        (r["setting"], r["run_ids"], r["test_accuracy_mean"]) for r in logged_rows]
    for name in ("table.md", "table.tex", "curves.png", "confusion.png"):
        assert (out / name).is_file()
    # another baseline, named by the user; the tables only
    for figure in out.glob("*.png"):
        figure.unlink()
    project.run(f"sweep={parent.info.run_id}", "baseline=optimizer=adam", "tracking.figures=false",
                script=REPORT, check=True)
    [again] = [p for p in (project.workdir / "results" / "cifar-sweep").iterdir()
               if p.name.endswith("_" + parent.info.run_id[:8])]  # the same sweep's folder
    rows = list(csv.DictReader((again / "table.csv").open()))
    assert [r["baseline"] for r in rows] == ["False", "True", "False", "False"]
    assert again == out and not list(again.glob("*.png"))


@pytest.mark.slow  # over a minute on the 2-core CPU: make test-full (a default test covers its core)
def test_an_ad_hoc_sweep_with_seeds_gets_mean_and_std_rows(project):
    proc = project.train("-m", "hydra/launcher=basic", "augment=report,none", "trainer.seed=0,1",
                         "tracking.figures=false", "study.baseline='augment=none'", check=True)
    assert re.search(r"^augment +accuracy %", proc.stdout, re.M)
    # the baseline the user named: the other row is compared with it
    assert re.search(r"^none .*\(baseline\)$", proc.stdout, re.M), proc.stdout
    assert re.search(r"^report .* paired$", proc.stdout, re.M), proc.stdout
    project.run("experiment=cifar-sweep", script=REPORT, check=True)
    rows = list(csv.DictReader((project.sweep_report() / "table.csv").open()))
    assert [(r["setting"], r["runs"], r["seeds"]) for r in rows] == [
        ("augment=report", "2", "0 1"), ("augment=none", "2", "0 1")]
    jobs = [r for r in project.runs() if r.data.tags["cifar_sweep.role"] == "job"]
    for row in rows:
        values = [j.data.metrics["test_accuracy"] for j in jobs
                  if f"augment={j.data.tags['augment']}" == row["setting"]]
        assert abs(float(row["test_accuracy_mean"]) - statistics.fmean(values)) < 1e-12
        assert abs(float(row["test_accuracy_std"]) - statistics.stdev(values)) < 1e-12
    md = (project.sweep_report() / "table.md").read_text()
    assert "Sweep `cifar-sweep`" in md and " ± " in md


@pytest.mark.slow  # over a minute on the 2-core CPU: make test-full (a default test covers its core)
def test_a_mixed_store_reports_each_setting_once_in_a_folder_per_sweep(project):
    """A sweep and single runs in one experiment: a run of other data (20 classes) crashed the
    figures (`shape mismatch`), and SGD at another momentum was a second row labelled `sgd`."""
    quiet = "tracking.figures=false"
    project.train("-m", "optimizer=sgd,adam", quiet, check=True)
    project.job("data.source.num_classes=20", quiet, check=True)  # single runs: in this process
    project.job("optimizer=sgd", "optimizer.momentum=0.5", quiet, check=True)
    project.run("sweep=latest", script=REPORT, check=True)
    base = project.workdir / "results" / "cifar-sweep"
    [first] = [r for r in project.runs() if r.data.tags["cifar_sweep.role"] == "sweep"]
    folder = (base / "LATEST").read_text().strip()
    assert folder.endswith("_" + first.info.run_id[:8])
    out = base / folder
    rows = list(csv.DictReader((out / "table.csv").open()))
    assert [r["setting"] for r in rows] == ["optimizer=sgd", "optimizer=adam",
                                            "optimizer=sgd optimizer.momentum=0.5"]
    md = (out / "table.md").read_text()
    labels = [line.split("|")[1].strip() for line in md.splitlines()  # the table's rows
              if line.startswith("| ") and len(line.split("|")) > 10][1:]
    assert labels == ["sgd (baseline)", "adam", "optimizer=sgd optimizer.momentum=0.5"], labels
    [other_data] = [r for r in project.runs()
                    if r.data.params.get("data.source.num_classes") == "20"]
    assert (f"data_fingerprint={other_data.data.tags['data_fingerprint']}: 1 run, not mixed in"
            in md)
    for name in ("curves.png", "confusion.png", "per_class_accuracy.png",
                 "confusion/03-optimizer=sgd_optimizer.momentum=0.5.png"):
        with Image.open(out / name) as image:
            image.verify()

    # the same sweep again (its runs reused): a folder of its own, the first one kept
    project.train("-m", "optimizer=sgd,adam", quiet, check=True)
    project.run("sweep=latest", script=REPORT, check=True)
    folders = sorted(p.name for p in base.iterdir() if p.is_dir())
    assert len(folders) == 2 and folder in folders
    assert (base / "LATEST").read_text().strip() == folders[-1] != folder
    index = (base / "index.md").read_text()
    assert f"Latest: [{folders[-1]}]({folders[-1]}/table.md)" in index
    assert f"- [{folder}]({folder}/table.md)" in index


@pytest.mark.slow  # over a minute on the 2-core CPU: make test-full (a default test covers its core)
def test_paper_figures_and_a_parent_run_that_compares_its_rows(project):
    """A rate that learns nothing is flagged at chance; the parent run carries each row's numbers
    and the figures; the report's figures are sized for a paper, its LaTeX is LaTeX."""
    # 2,000 test images: the untrained rate's accuracy (11%) stays clear of the 12% line
    proc = project.train("-m", "lr.value=0.005,1e-9", "data.source.num_test=2000", check=True)
    assert re.search(r"^1e-09 † ", proc.stdout, re.M), proc.stdout
    assert "† at chance: mean test accuracy below 1.2 × 1/10 = 12.00%" in proc.stdout
    runs = project.runs()
    [parent] = [r for r in runs if r.data.tags["cifar_sweep.role"] == "sweep"]
    jobs = {r.data.params["lr.value"]: r for r in runs if r.data.tags["cifar_sweep.role"] == "job"}
    metrics = parent.data.metrics
    for label, job in (("0.005", jobs["0.005"]), ("1e-09", jobs["1e-09"])):
        assert metrics[f"row/{label}/test_accuracy_mean"] == job.data.metrics["test_accuracy"]
        assert metrics[f"row/{label}/runs"] == 1.0
    assert metrics["row/1e-09/at_chance"] == 1.0 and metrics["row/0.005/at_chance"] == 0.0
    client = project.client
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "figures")} == {
        "figures/curves.png", "figures/confusion.png", "figures/per_class_accuracy.png",
        "figures/accuracy_vs_lr.value.png"}  # a numeric setting: accuracy against its value

    project.run("sweep=latest", script=REPORT, check=True)
    base = project.workdir / "results" / "cifar-sweep"
    out = base / (base / "LATEST").read_text().strip()
    md, tex = (out / "table.md").read_text(), (out / "table.tex").read_text()
    assert "1 epoch per run, 1 seed (0)" in md and "1e-09 †" in md
    caption = next(line for line in tex.splitlines() if line.startswith("\\caption{"))
    assert "`" not in caption and "\\texttt{cifar-sweep}" in caption, caption
    assert "1e-09 \\textsuperscript{\\dag}" in tex and "12.00\\%" in caption
    # a two-column figure 7 in wide, a column's 3.5 in, at 300 dpi; vector copies beside them
    for name, width in (("curves.png", 2100), ("per_class_accuracy.png", 2100),
                        ("confusion.png", 2100), ("confusion/01-0.005.png", 1050),
                        ("confusion/02-1e-09.png", 1050)):
        with Image.open(out / name) as image:
            assert image.size[0] == width, (name, image.size)
    assert all((out / f"{n}.pdf").is_file() for n in ("curves", "confusion", "per_class_accuracy",
                                                        "accuracy_vs_lr.value"))


def test_latex_escapes_each_character_once_and_code_becomes_texttt():
    from cifar_sweep.report.writers import _tex, plural

    assert _tex("Sweep `cifar_sweep` at 10.00% ≥ chance † a_b & #1") == (
        "Sweep \\texttt{cifar\\_sweep} at 10.00\\% $\\geq$ chance \\textsuperscript{\\dag} "
        "a\\_b \\& \\#1")
    assert _tex("\\_") == "\\textbackslash{}\\_"  # never escaped twice
    assert (plural(1, "run"), plural(2, "run"), plural(1, "epoch")) == ("1 run", "2 runs", "1 epoch")


@pytest.mark.slow  # 13 trainings: make test-full
def test_a_sweep_of_many_settings_gets_a_ranking_and_figures_of_the_best(project):
    """Past 12 settings the figures stay legible: every setting in one ranking, the curves,
    matrices and bars of the baseline and the 5 best only (not 13 of each)."""
    rates = ",".join(f"{0.001 * (i + 1):.3f}" for i in range(13))
    project.train("-m", f"lr.value={rates}", "tracking.figures=false", "tracking.log_model=false",
                  check=True, timeout=1200)
    project.run("sweep=latest", script=REPORT, check=True)
    out = project.sweep_report()
    rows = list(csv.DictReader((out / "table.csv").open()))
    assert len(rows) == 13
    assert (out / "ranking.png").is_file() and (out / "ranking.pdf").is_file()
    with Image.open(out / "ranking.png") as image:
        assert image.width == 7 * 300  # a page's width at 300 dpi, however many settings
    best = sorted(rows[1:], key=lambda r: -float(r["test_accuracy_mean"]))[:5]
    drawn = sorted(p.name for p in (out / "confusion").glob("*.png"))
    assert len(drawn) == 6, drawn  # the baseline (the first setting) and the 5 best
    assert drawn[0].startswith("01-")  # numbered in the table's order, the baseline first
    numbers = {int(name[:2]) for name in drawn}
    assert numbers == {1, *(rows.index(r) + 1 for r in best)}, (numbers, best)


def test_a_searchs_sweeper_settings_are_checked_against_its_own_sweeper():
    """`report.py hpo=<preset> hydra.sweeper.study_name=...` names a setting of the search's
    sweeper (optuna_study), not of the default one (planned): accepted, and a misspelling is one
    line naming the search's sweeper (the check ran against the default sweeper before)."""
    from cifar_sweep.commands.report import syntax_problem

    search = [("hpo", "modifiednet")]
    assert syntax_problem({}, ["hydra.sweeper.study_name=test"], search) is None
    line = syntax_problem({}, ["hydra.sweeper.study_nam=test"], search)
    assert line is not None and "did you mean hydra.sweeper.study_name?" in line
    assert "hydra/sweeper=optuna_study" in line
    # without a search the default sweeper has no such setting, as before
    assert "hydra/sweeper=planned" in syntax_problem({}, ["hydra.sweeper.study_name=test"])
