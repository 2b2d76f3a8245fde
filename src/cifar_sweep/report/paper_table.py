"""A study's LaTeX tables as a paper prints them: `table.tex` holds the columns a paper shows
(by default the setting, test accuracy mean ± std, Δ with its interval, p (Holm) and the
report's number where there is one) and fits a two-column paper's `\\columnwidth` (else it says
`table*`); `table_more.tex` holds every other column of the Markdown table. `report.columns=`
(src/report.py's argument, never part of a run's identity) chooses table.tex's columns by name.

Only booktabs is needed (graphicx where a second table is wider than a page). Whether a table
fits is estimated from the widths of Computer Modern's glyphs (pdflatex's measure of them,
rounded up); `tests/test_paper_tables.py` compiles every preset's table to hold the estimate
true.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cifar_sweep.report import writers

# the name of each column of `cells.cells`' header, for `report.columns=`; a column another
# module adds gets its title's slug (`Early stop` -> early_stop)
NAMES = {"Accuracy (%)": "accuracy", "Precision": "precision", "Recall": "recall", "F1": "f1",
         "Parameters": "parameters", "Memory (MB)": "memory", "Peak memory (MB)": "peak_memory",
         "Train time (min)": "time", "Δ accuracy [95% CI]": "delta", "p (test)": "p_test",
         "p (Holm)": "p_holm", "Seeds for 80% power": "power", "Epochs": "epochs",
         "Seeds": "seeds", "Test noise (±95%)": "test_noise", "Δ bootstrap [95%]": "delta_boot"}
DEFAULT = ("accuracy", "delta", "p_holm", "report")
REPORT = "report"  # the report's number: its accuracy, else its F1, else its first column
REPORT_PREFERENCE = ("accuracy", "f1")

# a title over its unit: two header lines keep a column as narrow as its numbers
HEADER_LINES = {"Accuracy (%)": ["Accuracy", "(%)"], "Δ accuracy [95% CI]": ["Δ (points)", "[95% CI]"],
                "p (Holm)": ["Holm", "p"], "p (test)": ["p", "(test)"],
                "Memory (MB)": ["Memory", "(MB)"], "Peak memory (MB)": ["Peak mem.", "(MB)"],
                "Train time (min)": ["Time", "(min)"], "Seeds for 80% power": ["Seeds for", "80% power"],
                "Test noise (±95%)": ["Test noise", "(±95%)"], "Δ bootstrap [95%]": ["Δ bootstrap", "[95%]"]}
REF = "TABLEREF"  # where a caption refers to the first table: \ref{<its label>}

# pdflatex's widths of Computer Modern at \small (9 pt), in pt, the larger of OT1's and T1's,
# rounded up to 0.05 (measured glyph by glyph); a number's minus sign is math's (MINUS_PT)
GLYPH_PT = {**dict.fromkeys("0123456789a$*/\\^{}\"go", 4.65), **dict.fromkeys("bdhnpu", 5.15),
            **dict.fromkeys("ce", 4.15), **dict.fromkeys("fj", 2.85),
            **dict.fromkeys("il!',.:;[]", 2.6), **dict.fromkeys("kqvxy", 4.9), "m": 7.75,
            "r": 3.65, "s": 3.65, "t": 3.6, "w": 6.7, "z": 4.15,
            **dict.fromkeys("AHNUVXY", 6.95), "B": 6.6, "C": 6.7, "D": 7.1, "E": 6.3, "F": 6.05,
            "G": 7.3, "I": 3.35, "J": 4.8, "K": 7.2, "L": 5.8, "M": 8.5, **dict.fromkeys("OQ", 7.2),
            "P": 6.3, "R": 6.85, "S": 5.15, "T": 6.7, "W": 9.55, "Z": 5.7,
            **dict.fromkeys("#%Δ", 7.75), **dict.fromkeys("&+<=>@_±≈≥≤×", 7.2), "(": 3.6,
            ")": 3.6, "-": 3.1, "?": 4.4, "|": 9.25, "~": 5.7, " ": 3.1, "†": 3.8}
MINUS_PT, OTHER_PT = 7.2, 8.0
BOLD = 1.17  # Computer Modern's bold against its roman, measured 1.13-1.16
SPACE_AFTER = {**dict.fromkeys(".:?!", 1.75), **dict.fromkeys(",;", 0.9)}
COLUMN_PT, PAGE_PT = 229.5, 469.0  # a two-column article's \columnwidth and \textwidth (10 pt)
# (font size, its scale against \small, space between columns in pt), tried in this order
# (\footnotesize's 8 pt design is wider than 8/9 of \small's 9 pt: pdflatex measured 0.919)
FITS = [("small", 1.0, 4.0), ("footnotesize", 0.925, 3.0)]


@dataclass
class Column:
    name: str
    lines: list[str]   # the header's lines
    index: int         # its place in the cells' rows


def name_of(title: str, source: str | None) -> str:
    """A column's name for `report.columns=`: `accuracy`, `delta`, `report_accuracy`."""
    if source and title.startswith(f"{source}: "):
        return f"{REPORT}_{name_of(title.removeprefix(f'{source}: '), None)}"
    return NAMES.get(title) or re.sub(r"[^a-z0-9]+", "_", title.lower()).strip("_") or "column"


def _lines(title: str, source: str | None) -> list[str]:
    if source and title.startswith(f"{source}: "):  # the caption names the source
        metric = title.removeprefix(f"{source}: ")
        return ["Report", "(%)" if metric == "Accuracy (%)" else HEADER_LINES.get(metric, [metric])[0]]
    return HEADER_LINES.get(title, [title])


def columns_of(header: list[str], source: str | None) -> list[Column]:
    return [Column(name_of(t, source), _lines(t, source), i) for i, t in enumerate(header)]


def choose(columns: list[Column], wanted: tuple[str, ...]) -> tuple[list[Column], list[Column]]:
    """(table.tex's columns, the rest): the setting first, then the chosen ones in the table's
    order; `report` stands for the report's accuracy (else F1, else its first column) with our
    column of the same metric. Raises ValueError naming an unknown name and the known ones."""
    body = columns[1:]
    names = {c.name for c in body}
    reported = [c.name.removeprefix(f"{REPORT}_") for c in body if c.name.startswith(f"{REPORT}_")]
    chosen = set(wanted) - {REPORT}
    if REPORT in wanted and reported:
        metric = next((m for m in REPORT_PREFERENCE if m in reported), reported[0])
        chosen |= {f"{REPORT}_{metric}", metric}
    unknown = [w for w in wanted if w not in names and w != REPORT]
    if unknown:
        raise ValueError(f"report.columns: {', '.join(unknown)} is not a column of this table; "
                         f"allowed: {', '.join([*(c.name for c in body), REPORT])}")
    main = [columns[0]] + [c for c in body if c.name in chosen]
    # Δ's bootstrap interval is table.tex's Δ interval where there is one: not twice
    twice = {"delta_boot"} if "delta" in chosen else set()
    return main, [columns[0]] + [c for c in body if c.name not in chosen | twice]


def text_width(text: str, scale: float = 1.0) -> float:
    """The width of a cell at \\small, in pt (times `scale` for a smaller font), rounded up."""
    text = text.replace("**", "")
    minus = sum(1 for _ in writers.NUMBER_MINUS.finditer(text))
    width = sum(GLYPH_PT.get(ch, OTHER_PT) for ch in text)
    # TeX widens a space after punctuation (its space factor): `3: 0-2`, `0.12, 0.34`
    width += sum(SPACE_AFTER.get(a, 0.0) for a, b in zip(text, text[1:]) if b == " ")
    return (width + minus * (MINUS_PT - GLYPH_PT["-"])) * scale


def layout(columns: list[Column], rows: list[list[str]],
           bold: list[list[bool]] | None = None) -> tuple[str, float, bool] | None:
    """(font size, space between columns, wide) of the first fit: a column at \\small, then
    \\footnotesize, then the page's width (`table*`); None: wider than a page even so. A bold
    cell is BOLD times as wide."""
    def widest(c: Column, scale: float) -> float:
        cells = [text_width(row[c.index], scale) * (BOLD if bold and bold[i][c.index] else 1)
                 for i, row in enumerate(rows)]
        return max([*(text_width(t, scale) for t in c.lines), *cells])

    for wide, limit in ((False, COLUMN_PT), (True, PAGE_PT)):
        for size, scale, sep in FITS:
            # no space outside the first and last columns: @{}l...r@{}
            total = 2 * sep * (len(columns) - 1) + sum(widest(c, scale) for c in columns)
            if total <= limit:
                return size, sep, wide
    return None


def tex(columns: list[Column], rows: list[list[str]], bold: list[list[bool]], caption: str,
        label: str, ref: str = "") -> str:
    """A booktabs table of these columns but those empty in every row, at the first size that
    fits (`layout`); a table wider than a page is scaled down to it (graphicx's \\resizebox).
    The differences to the baseline in brackets (`0.61 (+0.02)`) stay in the Markdown: here
    they would double a column's width. `ref`: the label REF in the caption refers to."""
    rows = [[_BRACKETED.sub("", cell) for cell in row] for row in rows]
    columns = [c for i, c in enumerate(columns) if i == 0 or any(row[c.index] for row in rows)]
    depth = max(len(c.lines) for c in columns)
    header = [[c.lines[i] if i < len(c.lines) else "" for c in columns] for i in range(depth)]
    picked = [[row[c.index] for c in columns] for row in rows]
    flags = [[flag[c.index] for c in columns] for flag in bold]
    fit = layout(columns, rows, bold)
    if fit is None:
        text = writers.latex(header, picked, flags, caption, size="footnotesize", tabcolsep=3,
                             wide=True, label=label)
        text = (text.replace("\\begin{tabular}", "\\resizebox{\\textwidth}{!}{%\n\\begin{tabular}")
                .replace("\\end{tabular}", "\\end{tabular}}"))
    else:
        size, sep, wide = fit
        text = writers.latex(header, picked, flags, caption, size=size, tabcolsep=sep, wide=wide,
                             label=label)
    return text.replace(REF, f"Table~\\ref{{{ref}}}") if ref else text


_BRACKETED = re.compile(r" \([+-][\d,.]+\)$")
