"""One writer for every table: Markdown, LaTeX and CSV from the same cells, with a caption."""

from __future__ import annotations

import csv
import io
import re


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
    never escaped again); `code` in Markdown's backticks becomes \\texttt{code}."""
    parts = re.split(r"`([^`]*)`", text)
    return "".join(f"\\texttt{{{p.translate(_TEX_TABLE)}}}" if i % 2
                   else p.replace("**", "").translate(_TEX_TABLE) for i, p in enumerate(parts))


def latex(header: list[str], rows: list[list[str]], bold: list[list[bool]] | None = None,
          caption: str = "") -> str:
    out = ["\\begin{table}[t]", "\\centering"]
    if caption:
        out.append(f"\\caption{{{_tex(caption)}}}")
    out += ["\\begin{tabular}{l" + "r" * (len(header) - 1) + "}", "\\hline",
            " & ".join(_tex(h) for h in header) + " \\\\", "\\hline"]
    for i, row in enumerate(rows):
        cells = [f"\\textbf{{{_tex(c)}}}" if bold and bold[i][j] and c else _tex(c)
                 for j, c in enumerate(row)]
        out.append(" & ".join(cells) + " \\\\")
    out += ["\\hline", "\\end{tabular}", "\\end{table}"]
    return "\n".join(out) + "\n"


def csv_text(records: list[dict]) -> str:
    """One line per record, with its raw numbers (what a caption says goes into columns here)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(records[0]))
    writer.writeheader()
    writer.writerows(records)
    return buffer.getvalue()
