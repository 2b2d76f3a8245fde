"""One writer for every table: Markdown, LaTeX and CSV from the same cells, with a caption."""

from __future__ import annotations

import csv
import io
import re
from typing import cast


def plural(count: int, word: str) -> str:
    """`1 run`, `2 runs`, `1 epoch`."""
    return f"{count} {word}{'' if count == 1 else 's'}"


def markdown(header: list[str], rows: list[list[str]], bold: list[list[bool]] | None = None,
             caption: str = "") -> str:
    """Right-aligned columns but the first; `bold[i][j]` marks cell j of row i."""
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for i, row in enumerate(rows):
        cells = [f"**{c}**" if bold and bold[i][j] and c else c for j, c in enumerate(row)]
        lines.append("| " + " | ".join(cells) + " |")
    return (f"{caption}\n\n" if caption else "") + "\n".join(lines) + "\n"


_TEX = {"\\": "\\textbackslash{}", "_": "\\_", "%": "\\%", "&": "\\&", "#": "\\#",
        "$": "\\$", "{": "\\{", "}": "\\}", "~": "\\textasciitilde{}", "^": "\\^{}",
        "±": "$\\pm$", "Δ": "$\\Delta$", "≈": "$\\approx$", "<": "$<$", ">": "$>$",
        "≥": "$\\geq$", "≤": "$\\leq$", "×": "$\\times$", "†": "\\textsuperscript{\\dag}"}


_TEX_TABLE = str.maketrans(_TEX)


def _tex(text: str) -> str:
    """Plain text as LaTeX: its special characters escaped, one pass (so that an escape is
    never escaped again); `code` in Markdown's backticks becomes \\texttt{code}; a number's
    minus sign a math minus (`-3.00` is $-$3.00, not a hyphen)."""
    parts = re.split(r"`([^`]*)`", text)
    return "".join(f"\\texttt{{{p.translate(_TEX_TABLE)}}}" if i % 2
                   else NUMBER_MINUS.sub("$-$", p.replace("**", "").translate(_TEX_TABLE))
                   for i, p in enumerate(parts))


NUMBER_MINUS = re.compile(r"(?<![\w.])-(?=\d)")  # a number's minus sign, not a hyphen


def latex(header: list[str] | list[list[str]], rows: list[list[str]],
          bold: list[list[bool]] | None = None, caption: str = "", *, size: str = "",
          tabcolsep: float | None = None, wide: bool = False, label: str = "") -> str:
    """A booktabs table (`\\toprule`, `\\midrule`, `\\bottomrule`): the first column left, the
    rest right, no space outside them. `header`: one line of titles, or several lines (a title over its unit);
    `size`: a font size command for the table (`small`); `tabcolsep`: the space between
    columns, in pt; `wide`: `table*`, across both columns of a two-column paper."""
    lines: list[list[str]] = (cast(list[list[str]], header)
                              if header and isinstance(header[0], list)
                              else [cast(list[str], header)])
    float_env = "table*" if wide else "table"
    out = [f"\\begin{{{float_env}}}[t]", "\\centering"]
    if size:
        out.append(f"\\{size}")
    if tabcolsep is not None:
        out.append(f"\\setlength{{\\tabcolsep}}{{{tabcolsep:g}pt}}")
    if caption:
        out.append(f"\\caption{{{_tex(caption)}}}")
    if label:
        out.append(f"\\label{{{label}}}")
    # no space outside the first and last columns (booktabs' advice): the rules end at the text
    out += ["\\begin{tabular}{@{}l" + "r" * (len(lines[0]) - 1) + "@{}}", "\\toprule"]
    out += [" & ".join(_tex(h) for h in line) + " \\\\" for line in lines]
    out.append("\\midrule")
    for i, row in enumerate(rows):
        cells = [f"\\textbf{{{_tex(c)}}}" if bold and bold[i][j] and c else _tex(c)
                 for j, c in enumerate(row)]
        out.append(" & ".join(cells) + " \\\\")
    out += ["\\bottomrule", "\\end{tabular}", f"\\end{{{float_env}}}"]
    return "\n".join(out) + "\n"


def csv_text(records: list[dict]) -> str:
    """One line per record, with its raw numbers (what a caption says goes into columns here)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(records[0]))
    writer.writeheader()
    writer.writerows(records)
    return buffer.getvalue()
