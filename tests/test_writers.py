"""report/writers.py: Markdown, LaTeX and CSV written from the same cells, the bold flags, the
captions, LaTeX's escaping of each special character the module knows, and `plural`.

(test_report.py checks `_tex` on one caption-like string; here each character alone, through
`latex` as a table's cells and caption reach it.)
"""

from __future__ import annotations

import csv
import io

import pytest

from cifar_sweep.report.writers import csv_text, latex, markdown, plural

HEADER = ["Setting", "Accuracy", "Δ accuracy"]
ROWS = [["sgd", "61.20 ± 0.40", ""], ["adam", "63.10 ± 0.30", "+1.90"]]
BOLD = [[False, False, False], [False, True, True]]


def tex_body(tex: str) -> list[str]:
    """The tabular's lines between the header's rule and the closing rule (booktabs')."""
    lines = tex.splitlines()
    return lines[lines.index("\\midrule") + 1:lines.index("\\bottomrule")]


# --- Markdown ----------------------------------------------------------------------------------

def test_markdown_aligns_the_first_column_left_and_the_rest_right():
    md = markdown(HEADER, ROWS)
    assert md.splitlines() == [
        "| Setting | Accuracy | Δ accuracy |",
        "|---|---:|---:|",
        "| sgd | 61.20 ± 0.40 |  |",
        "| adam | 63.10 ± 0.30 | +1.90 |",
    ]
    assert md.endswith("|\n")


def test_markdown_bolds_the_flagged_cells_only():
    md = markdown(HEADER, ROWS, BOLD)
    assert md.splitlines()[2:] == ["| sgd | 61.20 ± 0.40 |  |",
                                   "| adam | **63.10 ± 0.30** | **+1.90** |"]


def test_an_empty_cell_is_never_bold():
    # `****` would render as a stray rule in some viewers: an empty cell stays empty
    md = markdown(HEADER, ROWS, [[True, True, True], [False, False, False]])
    assert md.splitlines()[2] == "| **sgd** | **61.20 ± 0.40** |  |"


def test_markdown_puts_the_caption_above_the_table_with_a_blank_line():
    md = markdown(HEADER, ROWS, caption="Table 1: `lr` sweep.")
    assert md.startswith("Table 1: `lr` sweep.\n\n| Setting |")
    # no caption: the table is the first line
    assert markdown(HEADER, ROWS).startswith("| Setting |")


# --- LaTeX -------------------------------------------------------------------------------------

def test_latex_is_a_booktabs_table_with_one_left_and_right_columns():
    tex = latex(HEADER, ROWS)
    lines = tex.splitlines()
    assert lines[:4] == ["\\begin{table}[t]", "\\centering", "\\begin{tabular}{@{}lrr@{}}",
                         "\\toprule"]
    assert lines[4:6] == ["Setting & Accuracy & $\\Delta$ accuracy \\\\", "\\midrule"]
    assert lines[-3:] == ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    assert tex.endswith("\\end{table}\n")
    assert "\\caption" not in tex and "\\hline" not in tex  # no caption given: none written


def test_latex_header_lines_size_spacing_and_a_wide_table():
    tex = latex([["Accuracy", "p"], ["(%)", "(Holm)"]], [["1.00", "-0.5"]], size="small",
                tabcolsep=4, wide=True, label="tab:x")
    lines = tex.splitlines()
    assert lines[:4] == ["\\begin{table*}[t]", "\\centering", "\\small",
                         "\\setlength{\\tabcolsep}{4pt}"]
    assert "\\label{tab:x}" in lines and lines[-1] == "\\end{table*}"
    head = lines[lines.index("\\toprule") + 1:lines.index("\\midrule")]
    assert head == ["Accuracy & p \\\\", "(\\%) & (Holm) \\\\"]
    assert tex_body(tex) == ["1.00 & $-$0.5 \\\\"]  # a number's minus: math, not a hyphen


def test_latex_rows_are_the_same_cells_as_markdown():
    tex = latex(HEADER, ROWS)
    assert tex_body(tex) == ["sgd & 61.20 $\\pm$ 0.40 &  \\\\",
                             "adam & 63.10 $\\pm$ 0.30 & +1.90 \\\\"]
    # the Markdown holds the same cells in the same order
    md_rows = [line.strip("| ").split(" | ") for line in markdown(HEADER, ROWS).splitlines()[2:]]
    assert [r[:2] for r in md_rows] == [r[:2] for r in ROWS]


def test_latex_bolds_the_flagged_non_empty_cells_with_textbf():
    tex = latex(HEADER, ROWS, [[True, False, True], [False, True, True]])
    assert tex_body(tex) == ["\\textbf{sgd} & 61.20 $\\pm$ 0.40 &  \\\\",
                             "adam & \\textbf{63.10 $\\pm$ 0.30} & \\textbf{+1.90} \\\\"]


def test_latex_caption_is_escaped_and_its_code_is_texttt():
    tex = latex(HEADER, ROWS, caption="Sweep `cifar_sweep` of lr_value: 12.5% of runs & more")
    assert tex.splitlines()[2] == ("\\caption{Sweep \\texttt{cifar\\_sweep} of lr\\_value: "
                                   "12.5\\% of runs \\& more}")
    # the caption comes before the tabular, inside the table
    assert tex.index("\\caption{") < tex.index("\\begin{tabular}")


def test_latex_drops_markdowns_bold_markers_from_cells():
    # a cell bold in Markdown's own syntax is not printed with its asterisks
    tex = latex(["A", "B"], [["**best**", "x*y"]])
    assert tex_body(tex) == ["best & x*y \\\\"]


@pytest.mark.parametrize("char, escaped", [
    ("%", "\\%"), ("_", "\\_"), ("&", "\\&"), ("#", "\\#"), ("$", "\\$"),
    ("{", "\\{"), ("}", "\\}"), ("\\", "\\textbackslash{}"), ("~", "\\textasciitilde{}"),
    ("^", "\\^{}"), ("±", "$\\pm$"), ("Δ", "$\\Delta$"), ("≈", "$\\approx$"), ("<", "$<$"),
    (">", "$>$"), ("≥", "$\\geq$"), ("≤", "$\\leq$"), ("×", "$\\times$"),
    ("†", "\\textsuperscript{\\dag}"),
])
def test_latex_escapes_each_special_character_in_cells_header_and_caption(char, escaped):
    tex = latex([f"h{char}", "v"], [[f"a{char}b", f"1{char}"]], caption=f"c{char}d")
    assert f"\\caption{{c{escaped}d}}" in tex
    assert f"h{escaped} & v \\\\" in tex
    assert tex_body(tex) == [f"a{escaped}b & 1{escaped} \\\\"]


def test_latex_escapes_inside_code_too():
    # `texttt` is no verbatim: an underscore in a name must still be escaped
    tex = latex(["A"], [["`lr.value_0.05%`"]])
    assert tex_body(tex) == ["\\texttt{lr.value\\_0.05\\%} \\\\"]


def test_latex_escape_is_one_pass():
    # the escapes' own backslashes and braces are never escaped again
    tex = latex(["A"], [["{50%}"]])
    assert tex_body(tex) == ["\\{50\\%\\} \\\\"]


# --- CSV ---------------------------------------------------------------------------------------

def test_csv_has_a_header_from_the_first_record_and_a_line_per_record():
    records = [{"setting": "sgd", "test_accuracy_mean": 0.612, "runs": 3},
               {"setting": "adam", "test_accuracy_mean": 0.631, "runs": 2}]
    text = csv_text(records)
    assert text.splitlines() == ["setting,test_accuracy_mean,runs", "sgd,0.612,3",
                                 "adam,0.631,2"]


def test_csv_quotes_what_would_break_a_line_and_reads_back_the_same():
    # a setting's overrides hold commas (`optimizer=sgd,adam`), a note may hold quotes
    records = [{"setting": "optimizer=sgd,adam", "note": 'the "best"', "Δ": "±0.3"},
               {"setting": "lr=0.1", "note": "", "Δ": ""}]
    rows = list(csv.DictReader(io.StringIO(csv_text(records))))
    assert rows == records
    assert csv_text(records).splitlines()[1] == '"optimizer=sgd,adam","the ""best""",±0.3'


def test_csv_refuses_a_record_with_a_key_the_first_lacks():
    # the columns are the first record's: a stray key is an error, not a silently lost number
    with pytest.raises(ValueError):
        csv_text([{"a": 1}, {"a": 2, "b": 3}])


# --- plural ------------------------------------------------------------------------------------

@pytest.mark.parametrize("count, word, text", [
    (0, "run", "0 runs"), (1, "run", "1 run"), (2, "seed", "2 seeds"), (1, "epoch", "1 epoch"),
    (12, "epoch", "12 epochs"),
])
def test_plural_adds_an_s_to_every_count_but_one(count, word, text):
    assert plural(count, word) == text
