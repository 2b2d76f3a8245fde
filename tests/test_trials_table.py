"""search/trials_table.py: a hyperparameter search's table, from hand-made MLflow runs tagged as
trials of a study (hpo.study, hpo.study_uid, hpo.trial, hpo.state) in a real local store: one
study only (a study of the same name made again, with another uid, is not mixed in), each trial's
newest run, its value, parameters, state and epochs, and the files written (table.md, .csv, .tex).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from cifar_sweep.errors import UserInputError
from cifar_sweep.search.trials_table import trial_runs, trials_report
from cifar_sweep.tracking import tags as t

T0 = 1_767_225_600_000  # 2026-01-01, in ms: the runs' start times count from here
METRIC = "best_val_accuracy"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[MlflowClient, Path]:
    """One real store for the file (its schema migrations take seconds)."""
    root = tmp_path_factory.mktemp("store")
    return MlflowClient(tracking_uri=f"sqlite:///{root}/mlflow.db"), root


class Search:
    """An experiment of the test's own, and a way to add trial runs to it."""

    def __init__(self, client: MlflowClient, root: Path, name: str):
        self.client, self.name = client, name
        self.exp = client.create_experiment(name, artifact_location=str(root / "art" / name))
        self.clock = 0

    def trial(self, number: int | None, study: str | None = "s", uid: str | None = "uid-1",
              status: str = "FINISHED", state: str | None = None, params: dict | None = None,
              tags: dict | None = None, best: float | None = None,
              history: tuple[float, ...] = (), test: float | None = None) -> str:
        """One trial's run, started after every run before it: `history` its val_accuracy per
        epoch, `best` its best_val_accuracy, `test` its test_accuracy."""
        self.clock += 1
        run_tags = {**(tags or {})}
        for key, value in ((t.TRIAL, number), (t.HPO_STUDY, study), (t.HPO_STUDY_UID, uid),
                           (t.TRIAL_STATE, state)):
            if value is not None:
                run_tags[key] = str(value)
        run_id = self.client.create_run(self.exp, start_time=T0 + self.clock * 1000,
                                        tags=run_tags).info.run_id
        metrics = [Metric("val_accuracy", v, T0, step) for step, v in enumerate(history)]
        metrics += [Metric(k, v, T0, 0) for k, v in ((METRIC, best), ("test_accuracy", test))
                    if v is not None]
        params = {"trainer.epochs": "5", "data.title": "synthetic (generated)", **(params or {})}
        params = {k: v for k, v in params.items() if v is not None}  # None: not logged
        self.client.log_batch(run_id, metrics=metrics,
                              params=[Param(k, v) for k, v in params.items()])
        if status != "RUNNING":
            self.client.set_terminated(run_id, status)
        return run_id

    def report(self, out: Path, keys=("lr.value",), name: str = "s") -> str:
        return trials_report(self.client, self.name, name, list(keys), METRIC, out)


@pytest.fixture
def search(store, request) -> Search:
    client, root = store
    return Search(client, root, request.node.name[:200])


def table_rows(md: str) -> list[list[str]]:
    """The Markdown table's body rows, as cells (bold markers kept)."""
    lines = [line for line in md.splitlines() if line.startswith("| ")]
    return [line[2:-2].split(" | ") for line in lines[1:]]


# --- which runs: one study, each trial's newest run --------------------------------------------

def test_a_study_made_again_under_the_same_name_is_not_mixed_in(search):
    # the first incarnation (uid-old), its storage deleted, then the study made again (uid-new)
    old = [search.trial(n, uid="uid-old", best=0.5) for n in range(3)]
    new = [search.trial(n, uid="uid-new", best=0.6) for n in range(2)]
    other = search.trial(0, study="another", uid="uid-x", best=0.9)
    runs, notes = trial_runs(search.client, search.name, "s")
    assert {n: r.info.run_id for n, r in runs.items()} == {0: new[0], 1: new[1]}
    assert not {*old, other} & {r.info.run_id for r in runs.values()}
    # the note counts and names what it left out
    assert notes == ["Not mixed in: 4 trial runs of other studies in this experiment "
                     "(another uid-x; s uid-old)."]


def test_the_newest_incarnation_is_chosen_by_start_time_not_by_uid(search):
    # uids are random: the study's current one is the uid of its newest run
    search.trial(0, uid="zzz", best=0.5)
    newest = search.trial(0, uid="aaa", best=0.6)
    runs, _ = trial_runs(search.client, search.name, "s")
    assert runs[0].info.run_id == newest


def test_each_trial_is_its_newest_run(search):
    # a trial run twice (a worker died and the trial was retried): the later run is the trial's
    first = search.trial(0, status="FAILED")
    retried = search.trial(0, best=0.7)
    one = search.trial(1, best=0.6)
    runs, notes = trial_runs(search.client, search.name, "s")
    assert {n: r.info.run_id for n, r in runs.items()} == {0: retried, 1: one}
    assert first not in {r.info.run_id for r in runs.values()} and notes == []


def test_untagged_trial_runs_count_only_where_no_run_names_the_study(search):
    # runs from before the study tag existed: the search's own, when nothing else is tagged
    a = search.trial(0, study=None, uid=None, best=0.5)
    b = search.trial(1, study=None, uid=None, best=0.6)
    runs, notes = trial_runs(search.client, search.name, "s")
    assert {n: r.info.run_id for n, r in runs.items()} == {0: a, 1: b} and notes == []
    # once a run names the study, the untagged ones are left out (and said to be)
    tagged = search.trial(0, best=0.7)
    runs, notes = trial_runs(search.client, search.name, "s")
    assert {n: r.info.run_id for n, r in runs.items()} == {0: tagged}
    assert notes == ["Not mixed in: 2 trial runs of other studies in this experiment "
                     "((untagged))."]


def test_a_name_no_run_carries_lists_the_studies_there_are(search, tmp_path):
    search.trial(0, study="alpha", best=0.5)
    search.trial(0, study="beta", best=0.5)
    runs, notes = trial_runs(search.client, search.name, "s")
    assert runs == {}
    assert notes == ["it holds the studies alpha, beta: choose one with "
                     "hydra.sweeper.study_name=<name>"]
    with pytest.raises(UserInputError) as caught:
        search.report(tmp_path)
    assert str(caught.value) == (f"search s: no trial of it in experiment '{search.name}'; "
                                 + notes[0])
    assert not (tmp_path / "table.md").exists()


def test_no_experiment_says_what_to_run(store, tmp_path):
    client, _ = store
    with pytest.raises(UserInputError, match=r"^search s: no trial of it in experiment 'none-"
                                             r"such'; run `python src/train.py -m hpo=<preset>`"):
        trials_report(client, "none-such", "s", [], METRIC, tmp_path)


# --- the rows ----------------------------------------------------------------------------------

def test_every_trials_value_parameters_state_and_epochs(search, tmp_path):
    ids = [
        search.trial(0, params={"lr.value": "0.0006906543748811757", "trainer.batch_size": "64"},
                     tags={"lr": "cosine"}, best=0.61234, history=(0.4, 0.55, 0.61234)),
        search.trial(1, params={"lr.value": "0.05", "trainer.batch_size": "10000"},
                     tags={"lr": "step"}, best=0.7, history=(0.5, 0.6, 0.7, 0.68, 0.7)),
        # pruned: FINISHED in MLflow, but its value is no trial value
        search.trial(2, state="pruned", params={"lr.value": "1e-05", "trainer.batch_size": "32"},
                     tags={"lr": "constant"}, best=0.3, history=(0.2, 0.31, 0.25)),
        search.trial(3, status="FAILED", params={"lr.value": "3.0", "trainer.batch_size": "64"},
                     tags={"lr": "constant"}, best=0.99, history=(0.1,)),
        search.trial(4, status="RUNNING", params={"lr.value": "0.01", "trainer.batch_size": "64"},
                     tags={"lr": "cosine"}, history=(0.3, 0.4)),
    ]
    md = search.report(tmp_path, keys=("lr.value", "trainer.batch_size", "lr"))
    header = next(line for line in md.splitlines() if line.startswith("| Trial"))
    assert header == ("| Trial | best_val_accuracy | lr.value | trainer.batch_size | lr | State | "
                      "Epochs run | Run |")
    plain = [[c.strip("*") for c in row] for row in table_rows(md)]
    assert plain == [
        # a sampled number to four significant digits; an integer as it is
        ["0", "0.6123", "0.0006907", "64", "cosine", "complete", "3", ids[0]],
        ["1", "0.7000", "0.05", "10000", "step", "complete", "5", ids[1]],  # not 1e+04
        # a pruned trial: in brackets, the best it reached before it was stopped
        ["2", "(0.3100)", "1e-05", "32", "constant", "pruned", "3", ids[2]],
        # a failed trial's metric is not its value, whatever it logged
        ["3", "", "3", "64", "constant", "failed", "1", ids[3]],
        ["4", "", "0.01", "64", "cosine", "running", "2", ids[4]],
    ]


def test_the_best_complete_trial_is_bold_and_its_test_accuracy_reported(search, tmp_path):
    search.trial(0, params={"lr.value": "0.1"}, best=0.6, history=(0.6,), test=0.55)
    search.trial(1, params={"lr.value": "0.2"}, best=0.8, history=(0.8,), test=0.7712)
    search.trial(2, status="FAILED", params={"lr.value": "0.3"}, best=0.95, history=(0.95,),
                 test=0.9)  # higher, but failed: never the best
    search.trial(3, state="pruned", params={"lr.value": "0.4"}, best=0.9, history=(0.9,))
    md = search.report(tmp_path)
    bold = [all(c.startswith("**") for c in row if c) for row in table_rows(md)]
    assert bold == [False, True, False, False]
    assert "The best trial's test accuracy: 77.12% (reported, never used to choose)." in md


def test_a_reference_trial_reads_its_numbers_from_the_run_it_stands_for(search, tmp_path):
    # a trial whose config had finished before: its run points at the finished one (same_as)
    source = search.trial(None, study=None, uid=None, params={"lr.value": "0.02"}, best=0.83,
                          history=(0.7, 0.8, 0.83), test=0.8)
    reference = search.trial(0, tags={t.SAME_AS: source})
    md = search.report(tmp_path)
    assert [c.strip("*") for c in table_rows(md)[0]] == [
        "0", "0.8300", "0.02", "complete", "3", reference]


def test_the_caption_counts_the_trials_and_names_the_study_and_data(search, tmp_path):
    search.trial(0, uid="uid-9", params={"lr.value": "0.1"}, best=0.6, history=(0.6,),
                 tags={t.DATA_FINGERPRINT: "fp123"})
    search.trial(1, uid="uid-9", state="pruned", best=0.2, history=(0.2,))
    search.trial(2, uid="uid-9", state="pruned", best=0.1, history=(0.1,))
    search.trial(3, uid="uid-9", status="FAILED")
    md = search.report(tmp_path)
    assert md.startswith("# Search: s\n\n")
    assert (f"Search `s` (study id `uid-9`) (MLflow experiment `{search.name}`) on synthetic "
            "(generated) (fingerprint `fp123`), up to 5 epochs per trial: 4 trials, 1 complete, "
            "2 pruned, 1 failed; bold: the best; in brackets: the best val_accuracy a pruned "
            "trial reached before it was stopped.") in md


@pytest.mark.parametrize("root, title", [("/data/cifar", "cifar10 /data/cifar"),
                                         ("None", "cifar10")])
def test_a_run_from_before_data_title_is_named_by_its_data_and_folder(search, tmp_path, root,
                                                                       title):
    search.trial(0, params={"data.title": None, "data.root": root}, tags={"data": "cifar10"},
                 best=0.5, history=(0.5,))
    assert f"MLflow experiment `{search.name}`) on {title} (fingerprint `?`)" in search.report(
        tmp_path)


def test_only_a_best_val_accuracy_search_shows_a_pruned_trials_progress(search, tmp_path):
    # the bracketed number is the best val_accuracy reached: a value of that metric only
    search.trial(0, params={"lr.value": "0.1"}, best=0.5, history=(0.5,), test=0.4)
    search.trial(1, state="pruned", params={"lr.value": "0.2"}, best=0.6, history=(0.6,))
    md = trials_report(search.client, search.name, "s", ["lr.value"], "test_accuracy", tmp_path)
    assert [row[1].strip("*") for row in table_rows(md)] == ["0.4000", ""]
    md = search.report(tmp_path)
    assert [row[1].strip("*") for row in table_rows(md)] == ["0.5000", "(0.6000)"]


def test_the_note_of_what_was_left_out_is_under_the_table(search, tmp_path):
    search.trial(0, uid="uid-old", best=0.5, history=(0.5,))
    search.trial(0, uid="uid-new", best=0.6, history=(0.6,))
    md = search.report(tmp_path)
    assert md.rstrip().endswith("Not mixed in: 1 trial runs of other studies in this "
                                "experiment (s uid-old).")
    assert md.index("| Trial") < md.index("Not mixed in")


# --- the files ---------------------------------------------------------------------------------

def test_the_markdown_csv_and_latex_files_are_written_from_the_same_rows(search, tmp_path):
    ids = [search.trial(0, params={"lr.value": "0.1"}, best=0.6, history=(0.6,)),
           search.trial(1, params={"lr.value": "0.2_x"}, best=0.8, history=(0.7, 0.8))]
    out = tmp_path / "reports" / "search"  # made where it is missing
    md = search.report(out)
    assert sorted(p.name for p in out.iterdir()) == ["table.csv", "table.md", "table.tex"]
    assert (out / "table.md").read_text() == md
    rows = list(csv.DictReader(io.StringIO((out / "table.csv").read_text())))
    assert rows == [
        {"Trial": "0", METRIC: "0.6000", "lr.value": "0.1", "State": "complete",
         "Epochs run": "1", "Run": ids[0]},
        {"Trial": "1", METRIC: "0.8000", "lr.value": "0.2_x", "State": "complete",
         "Epochs run": "2", "Run": ids[1]},
    ]
    tex = (out / "table.tex").read_text()
    # the same cells, escaped, the best row bold, the caption's code as \texttt
    assert f"0 & 0.6000 & 0.1 & complete & 1 & {ids[0]} \\\\" in tex
    assert ("\\textbf{1} & \\textbf{0.8000} & \\textbf{0.2\\_x} & \\textbf{complete} & "
            f"\\textbf{{2}} & \\textbf{{{ids[1]}}} \\\\") in tex
    assert "\\caption{Search \\texttt{s} (study id \\texttt{uid-1})" in tex
