"""table.tex as a paper prints it: compiled by pdflatex in a minimal two-column article for every
preset study and for a 13-setting sweep, with no overfull box; its caption two sentences, its
default columns, the others in table_more.tex, the notes beside it; `report.columns=`."""

from __future__ import annotations

import random
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from cifar_sweep.errors import UserInputError
from cifar_sweep.report import paper_table
from cifar_sweep.report.presets import STUDIES, compose_preset, study
from cifar_sweep.report.rows import records
from cifar_sweep.report.selection import choose
from cifar_sweep.report.studies import Table, TableSpec
from cifar_sweep.results import _frame

PDFLATEX = shutil.which("pdflatex")
needs_pdflatex = pytest.mark.skipif(
    PDFLATEX is None, reason="no pdflatex (Debian: apt-get install texlive-latex-base "
    "texlive-latex-recommended; .ci/run installs them)")

# what a paper's preamble has: the packages the tables may assume (issue 41)
DOCUMENT = r"""\documentclass[twocolumn]{article}
\usepackage[T1]{fontenc}
\usepackage{booktabs}
\usepackage{graphicx}
\usepackage{amsmath}
\begin{document}
Text before the table.
\input{table}
%s
\end{document}
"""


def made_table(key: str, values: list[str], baseline: str, seeds: int, spec: TableSpec) -> Table:
    """A table of hand-made runs of one sweep over `key` (no store): every metric of a real run,
    drawn at random, seeds 0..seeds-1."""
    rng = random.Random(1)
    start = pd.Timestamp("2026-01-01")
    runs = []
    for job, value in enumerate(values):
        level = rng.uniform(0.3, 0.8)
        for seed in range(seeds):
            runs.append({
                "run_id": f"{value}-{seed}", "status": "FINISHED", "sweeps": "A", "seed": str(seed),
                "start_time": start + pd.Timedelta(seconds=len(runs)), "role": "job",
                "setting_hash": f"s-{value}", "code_version": "c1", "git_commit": "0" * 40,
                "code.model": "m1", "data_fingerprint": "fp", "precision": "fp32", "device": "cpu",
                "job_num": str(job), "overrides": f"{key}={value} trainer.seed={seed}",
                key: value, "trainer.seed": str(seed), "tracking.uri": "mlruns",
                "trainer.epochs": "300",
                "test_accuracy": level + rng.gauss(0, 0.01),
                "test_precision_weighted": level + rng.gauss(0, 0.01),
                "test_recall_weighted": level + rng.gauss(0, 0.01),
                "test_f1_weighted": level + rng.gauss(0, 0.01),
                "parameters": 11689512.0, "model_size_fp32_mb": 44.592,
                "peak_memory_mb": 12345.0, "train_seconds": 123456.0 + rng.uniform(0, 99)})
    jobs = _frame(runs, {key, "trainer.seed", "tracking.uri", "trainer.epochs"},
                  {k for k in runs[0] if k.startswith(("test_", "param", "model_", "peak",
                                                       "train_"))})
    sweeps = pd.DataFrame([{"run_id": "A", "start_time": start, "varying": f"{key} trainer.seed"}])
    selection = choose(jobs, sweeps, baseline=f"{key}={baseline}", axes=[key])
    table = Table(spec, jobs, selection, records(jobs, selection, spec.paper),
                  {"data": "CIFAR-10 (JPEG copy)", "data_fingerprint": "cifar10-0123456789abcdef"})
    return table


def preset_table(name: str, seeds: int = 3) -> Table:
    spec = study(name, [])
    [key] = spec.axes
    base = spec.baseline.split("=", 1)[1] if spec.baseline else "b"
    params = compose_preset("ablation", name, []).hydra.sweeper.get("params") or {}
    values = (str(params[key]).split(",") if key in params  # a tuned study: its arms elsewhere
              else list(next(iter(spec.paper["columns"].values()))) if spec.paper else ["a", "c"])
    values += [base] * (base not in values)
    return made_table(key, values, base, seeds, spec)


def sweep_of(settings: int, seeds: int = 3) -> Table:
    values = [f"{0.0001 * 2 ** i:.6g}" for i in range(settings)]
    return made_table("lr.value", values, values[0], seeds,
                      TableSpec("cifar-sweep", "cifar-sweep", kind="Sweep"))


def compile_tex(tmp_path: Path, table_tex: str, more: str = "") -> str:
    """The table in a two-column article, through pdflatex; returns its log."""
    (tmp_path / "table.tex").write_text(table_tex)
    (tmp_path / "more.tex").write_text(more)
    (tmp_path / "paper.tex").write_text(DOCUMENT % ("\\input{more}" if more else ""))
    proc = subprocess.run([PDFLATEX, "-interaction=nonstopmode", "-halt-on-error", "paper.tex"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    log = (tmp_path / "paper.log").read_text(errors="replace")
    assert proc.returncode == 0, log[-3000:]
    assert (tmp_path / "paper.pdf").stat().st_size > 1000
    return log


TABLES = {**{f"preset {name}": (lambda n=name: preset_table(n)) for name in STUDIES},
          "a 13-setting sweep": lambda: sweep_of(13),
          "a 13-setting sweep, one seed": lambda: sweep_of(13, seeds=1),
          "long setting names (a table*)": lambda: made_table(
              "model", [f"a_rather_long_setting_name_{i}" for i in range(3)],
              "a_rather_long_setting_name_0", 3, TableSpec("wide", "wide", kind="Sweep"))}


@needs_pdflatex
@pytest.mark.parametrize("which", list(TABLES))
def test_table_tex_compiles_in_a_two_column_paper_with_no_overfull_box(tmp_path, which):
    table = TABLES[which]()
    first, more = table.latex()
    log = compile_tex(tmp_path, first, more)
    assert "Overfull \\hbox" not in log, re.findall(r"Overfull \\hbox.*", log)
    assert "\\toprule" in first and "\\midrule" in first and "\\bottomrule" in first
    assert "\\hline" not in first
    if "\\begin{table*}" in first:  # it says so: only where a column cannot hold it
        assert paper_table.layout(paper_table.choose(paper_table.columns_of(
            *_header_and_source(table)), paper_table.DEFAULT)[0], _rows(table)) [2]


def _header_and_source(table: Table):
    from cifar_sweep.report.cells import cells

    header, _, _ = cells(table.records, table.axis_title, table.study.paper, table.at_chance)
    return header, (table.study.paper or {}).get("source")


def _rows(table: Table):
    from cifar_sweep.report.cells import cells

    return cells(table.records, table.axis_title, table.study.paper, table.at_chance)[1]


def test_the_default_columns_are_what_a_paper_prints():
    table = preset_table("lr")
    first, more = table.latex()
    header = first[first.index("\\toprule"):first.index("\\midrule")]
    assert [c.strip() for c in header.splitlines()[1].removesuffix(" \\\\").split("&")] == [
        "lr.value", "Accuracy", "$\\Delta$ (points)", "Holm", "Report"]
    # the other metrics: in table_more.tex, not here
    for title in ("Precision", "Recall", "F1", "Parameters", "Memory", "Time", "Seeds"):
        assert title not in header and title in more
    # a row: mean ± std, Δ with its t interval, Holm's p, the report's number
    rec = next(r for r in table.records if r.label == "0.0001")
    acc, sd = rec.stats["test_accuracy"]
    d = rec.delta
    line = next(line for line in first.splitlines() if line.startswith("0.0001 &"))
    cells = [c.strip() for c in line.removesuffix(" \\\\").split("&")]
    assert cells[1].replace("\\textbf{", "").rstrip("}") == f"{acc * 100:.2f} $\\pm$ {sd * 100:.2f}"
    # to 0.1 points where every interval is a point wide or more
    digits = 1 if all(r.delta.high - r.delta.low >= 1 for r in table.records if r.delta) else 2
    assert digits == 1  # these made-up rows: intervals of several points

    def tex_num(v):
        return f"{v:+.{digits}f}".replace("-", "$-$")
    assert cells[2] == f"{tex_num(d.diff)} [{tex_num(d.low)}, {tex_num(d.high)}]"
    assert cells[3] == ("<0.001".replace("<", "$<$") if d.p_holm < 0.001 else f"{d.p_holm:.3f}")
    assert cells[4] == "65.21"
    base = next(line for line in first.splitlines() if line.startswith("0.005 &"))
    assert "baseline" in base and "(baseline)" not in base


def test_the_caption_is_two_sentences_and_the_rest_are_notes(tmp_path):
    table = preset_table("lr")
    caption = re.search(r"\\caption\{(.*)\}", table.latex()[0]).group(1)
    sentences = [s for s in re.split(r"(?<=\.)\s+(?=[A-Z$\\])", caption) if s]
    assert len(sentences) == 2, sentences
    assert "CIFAR-10 (JPEG copy)" in caption and "300 epochs per run" in caption
    assert "3 seeds per setting (3: 0-2)" in caption and "t interval" in caption
    assert "Holm-adjusted over 4 comparisons" in caption
    assert len(caption.split()) < 80
    table.write(tmp_path, None, figures=False)
    notes = (tmp_path / "notes.md").read_text()
    md = (tmp_path / "table.md").read_text()
    for note in table.caption_notes():  # every note a list item, in both
        assert f"- {note}" in notes and f"- {note}" in md
    assert any("paired t-test" in n for n in table.caption_notes())
    assert "Report: the report's Table VIII" in caption
    assert any("Table VIII:` columns: the report's own numbers" in n
               for n in table.caption_notes())
    assert (tmp_path / "table_more.tex").is_file()


def test_a_bootstrap_interval_is_used_where_the_records_have_one(monkeypatch):
    from cifar_sweep.report import studies

    table = preset_table("lr")
    original = studies.csv_records

    def with_boot(recs, data):
        rows = original(recs, data)
        for row in rows:
            if row["delta_accuracy_points"] == row["delta_accuracy_points"]:
                row["delta_boot_low"] = row["delta_accuracy_points"] - 0.25
                row["delta_boot_high"] = row["delta_accuracy_points"] + 0.5
        return rows

    monkeypatch.setattr(studies, "csv_records", with_boot)
    first, _ = table.latex()
    rec = next(r for r in table.records if r.label == "0.01")
    line = next(line for line in first.splitlines() if line.startswith("0.01 &"))
    low, high = rec.delta.diff - 0.25, rec.delta.diff + 0.5  # narrower than a point: 2 digits
    assert f"[{low:+.2f}, {high:+.2f}]".replace("-", "$-$") in line
    assert "bootstrap interval" in first and "t interval" not in first


def test_report_columns_chooses_the_columns_and_names_the_allowed_ones():
    table = preset_table("lr")
    first, more = table.latex(("accuracy", "f1"))
    header = first[first.index("\\toprule"):first.index("\\midrule")].splitlines()[1]
    assert header.startswith("lr.value & Accuracy & F1 \\\\")
    assert "Precision" in more and "Report" in more
    with pytest.raises(UserInputError, match=r"report.columns: nope is not a column of this "
                       r"table; allowed: accuracy, precision, .*p_holm.*report_accuracy.*"):
        table.latex(("accuracy", "nope"))
    every = tuple(c.name for c in paper_table.columns_of(*_header_and_source(table))[1:])
    assert table.latex(every)[1] == ""  # all chosen: no second table


def test_the_arch_study_shows_the_reports_f1_beside_ours():
    first, more = preset_table("arch").latex()
    header = first[first.index("\\toprule"):first.index("\\midrule")].splitlines()
    assert header[1].split(" & ") == ["model", "Accuracy", "F1", "$\\Delta$ (points)", "Holm",
                                      "Report \\\\"]
    assert header[2].split(" & ")[-1] == "F1 \\\\"  # the report's F1, Table VII's
    assert "Precision" in more and "Recall" in more


@pytest.mark.parametrize("text", ["0.0001 ± 0.0002", "+12.34 [-3.00, +8.70]", "origin_net",
                                  "modified_net_ds (baseline)", "Accuracy", "p (Holm)", "<0.001"])
@needs_pdflatex
def test_the_width_estimate_is_never_below_pdflatexs(tmp_path, text):
    from cifar_sweep.report.writers import _tex

    (tmp_path / "w.tex").write_text("\\documentclass{article}\\begin{document}\\small"
                                    f"\\setbox0\\hbox{{{_tex(text)}}}\\showthe\\wd0"
                                    "\\end{document}")
    proc = subprocess.run([PDFLATEX, "-interaction=nonstopmode", "w.tex"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    measured = float(re.search(r"> ([\d.]+)pt", proc.stdout).group(1))
    assert measured <= paper_table.text_width(text) <= measured * 1.3


def test_mixed_intervals_mark_the_t_ones(monkeypatch):
    from cifar_sweep.report import studies

    table = preset_table("lr")
    original = studies.csv_records

    def boot_on_one(recs, data):  # only 0.01's runs kept their predictions
        rows = original(recs, data)
        for row in rows:
            if row["setting"] == "lr.value=0.01":
                row["delta_boot_low"], row["delta_boot_high"] = -30.0, -20.0
        return rows

    monkeypatch.setattr(studies, "csv_records", boot_on_one)
    first, _ = table.latex()
    lines = {line.split(" & ")[0]: line for line in first.splitlines() if " & " in line}
    assert "[$-$30.0, $-$20.0] &" in lines["0.01"]  # the bootstrap's, unmarked
    assert all("]* &" in lines[r] for r in ("0.0001", "0.0005", "0.001"))  # t intervals, marked
    assert "bootstrap interval over seeds and test images (*: the t interval" in first


def test_a_table_too_wide_for_a_column_is_a_table_star_and_says_so(tmp_path):
    labels = [f"a_rather_long_setting_name_{i}" for i in range(3)]
    table = made_table("model", labels, labels[0], 3, TableSpec("wide", "wide", kind="Sweep"))
    first, _ = table.latex()
    assert first.startswith("\\begin{table*}")
    table.write(tmp_path, None, figures=False)
    assert "table.tex spans both columns of a two-column paper (`table*`)" in (
        tmp_path / "notes.md").read_text()
    narrow = sweep_of(3)
    assert narrow.latex()[0].startswith("\\begin{table}[t]")
