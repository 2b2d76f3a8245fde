"""The study figures say what they show, read from matplotlib's own objects: legends and axes
name the setting that varies (`lr.value`); with one seed no "mean over seeds" and no error bars;
a numeric setting gets accuracy_vs_<setting> (log axis past a 10x span, the baseline ringed, the
report's numbers as a second marker)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from cifar_sweep.report import study_figures
from cifar_sweep.report.study_figures import FigureRow

RATES = ["0.0001", "0.001", "0.005", "0.01"]
ACCURACY = {"0.0001": 0.41, "0.001": 0.55, "0.005": 0.62, "0.01": 0.60}
PAPER = {"0.0001": 0.6521, "0.001": 0.712, "0.005": 0.728, "0.01": 0.7149}


def rows(seeds: int, rates=RATES) -> list[FigureRow]:
    return [FigureRow(r, [f"{r}-{s}" for s in range(seeds)], False,
                      (ACCURACY.get(r, 0.5), 0.02 if seeds > 1 else float("nan")), r == "0.005",
                      i, ("Table VIII", PAPER[r]) if r in PAPER else None)
            for i, r in enumerate(rates, 1)]


@pytest.fixture
def drawn(monkeypatch):
    """Each figure by its file's stem, kept open instead of saved."""
    figures = {}

    def keep(fig, out, stem, pdf=True, dpi=None):
        figures[stem] = fig

    monkeypatch.setattr(study_figures, "_save", keep)
    yield figures
    study_figures.plt.close("all")


def texts(legend) -> list[str]:
    return [t.get_text() for t in legend.get_texts()]


@pytest.mark.parametrize("seeds", [1, 3])
def test_accuracy_against_a_numeric_setting(drawn, tmp_path, seeds):
    study_figures.accuracy_vs(rows(seeds), tmp_path, "lr, synthetic", "lr.value", 0.1)
    fig = drawn["accuracy_vs_lr.value"]
    [ax] = fig.axes
    assert ax.get_xlabel() == "lr.value" and ax.get_ylabel() == "test accuracy"
    assert ax.get_xscale() == "log"  # 0.0001 to 0.01: 100x
    spread = "mean ± 1 std over seeds" if seeds > 1 else "one seed per setting"
    assert texts(ax.get_legend()) == [f"ours, {spread}", "baseline (lr.value=0.005)",
                                      "report (Table VIII)", "chance (10%)"]
    [ours] = ax.containers  # the errorbar: its points at the values, its bars only over seeds
    points = ours.lines[0]
    assert list(points.get_xdata()) == [float(r) for r in RATES]
    assert list(points.get_ydata()) == [ACCURACY[r] for r in RATES]
    assert ours.has_yerr is (seeds > 1)
    base, report = [line for line in ax.lines if line.get_label() in
                    ("baseline (lr.value=0.005)", "report (Table VIII)")]
    assert (list(base.get_xdata()), list(base.get_ydata())) == ([0.005], [0.62])
    assert list(report.get_ydata()) == [PAPER[r] for r in RATES]
    assert [t.get_text() for t in ax.get_xticklabels()] == RATES


def test_a_span_within_ten_times_keeps_a_linear_axis(drawn, tmp_path):
    study_figures.accuracy_vs(rows(1, ["0.001", "0.005", "0.01"]), tmp_path, "t", "lr.value", None)
    assert drawn["accuracy_vs_lr.value"].axes[0].get_xscale() == "linear"


class History:
    """A client's metric histories: each run's validation curve over 3 epochs."""

    def get_metric_history(self, run_id, key):
        rate = run_id.split("-")[0]
        return [SimpleNamespace(step=e, value=ACCURACY[rate] * e / 3) for e in (1, 2, 3)]


@pytest.mark.parametrize("seeds", [1, 3])
def test_curves_and_bars_name_the_setting_and_one_seed_says_so(drawn, tmp_path, seeds):
    study_figures.curves(History(), rows(seeds), tmp_path, "lr", 0.1, setting="lr.value")
    evals = {f"{r}-{s}": {"classes": ["a", "b"], "confusion": [[3, 1], [1, 3]]}
             for r in RATES for s in range(seeds)}
    study_figures.per_class(evals, rows(seeds), tmp_path, "lr", setting="lr.value")
    for stem in ("curves", "per_class_accuracy"):
        fig = drawn[stem]
        [legend] = fig.legends
        assert legend.get_title().get_text() == "lr.value"
        assert texts(legend)[:4] == RATES
        title = fig._suptitle.get_text()
        assert ("mean over seeds" in title) is (seeds > 1), title
        assert ("one seed per setting" in title) is (seeds == 1), title
    # one seed: no error bars on the curves
    bars = [c for ax in drawn["curves"].axes for c in ax.containers]
    assert all(c.has_yerr is (seeds > 1) for c in bars)


def test_the_ranking_names_the_setting_on_its_axis(drawn, tmp_path):
    many = [f"{0.0001 * 2 ** i:.6g}" for i in range(13)]
    study_figures.ranking(rows(1, many), tmp_path, "lr", 0.1, setting="lr.value")
    [ax] = drawn["ranking"].axes
    assert ax.get_xlabel() == "lr.value"
    assert "one seed per setting" in texts(ax.get_legend())


class EarlyStopped:
    """Histories of seeds that stopped at different epochs (early stopping): seed s ran 20 + 5 s
    epochs, its validation accuracy at epoch e is e / 100 + s / 1000."""

    def get_metric_history(self, run_id, key):
        seed = int(run_id.split("-")[-1])
        return [SimpleNamespace(step=e, value=e / 100 + seed / 1000) for e in range(1, 21 + 5 * seed)]


def test_curves_of_early_stopped_seeds_run_to_the_longest_seed(drawn, tmp_path):
    import statistics

    study_figures.curves(EarlyStopped(), rows(3, ["0.005"]), tmp_path, "t", setting="lr.value")
    [line] = drawn["curves"].axes[1].lines
    x, y = list(line.get_xdata()), list(line.get_ydata())
    assert x == list(range(1, 31))  # seeds of 20, 25 and 30 epochs: to epoch 30, not 20
    for epoch in (1, 20, 21, 25, 26, 30):  # the mean over the seeds still training then
        still = [s for s in range(3) if 20 + 5 * s >= epoch]
        assert y[epoch - 1] == pytest.approx(statistics.fmean(epoch / 100 + s / 1000 for s in still))


def test_a_title_wider_than_its_figure_is_broken_into_lines_that_fit(drawn, tmp_path):
    """The published per-class figures lost both ends of their titles (a study name and caption
    wider than the page): a long title wraps to the figure's width, a short one stays one line."""
    long = ("optimizer_tuned, CIFAR-10 (JPEG copy), early-stopped (patience 10) within 100 "
            "epochs, 3 seeds")
    evals = {f"{r}-{s}": {"classes": ["a", "b"], "confusion": [[3, 1], [1, 3]]}
             for r in RATES for s in range(3)}
    for title, lines in ((long, 2), ("lr", 1)):
        study_figures.curves(History(), rows(3), tmp_path, title, 0.1, setting="lr.value")
        study_figures.per_class(evals, rows(3), tmp_path, title, setting="lr.value")
        for stem in ("curves", "per_class_accuracy"):
            fig = drawn[stem]
            text = fig._suptitle
            said = text.get_text()
            assert said.count("\n") + 1 == lines, said
            assert " ".join(said.split()).startswith(f"{title}: ")  # its words, whole:
            assert "early-stopped" in said or lines == 1  # not broken at a hyphen
            assert text.get_window_extent(fig.canvas.get_renderer()).width <= fig.bbox.width
