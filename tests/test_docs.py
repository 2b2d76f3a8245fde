"""The README and docs/ hold no dead ends: every relative link reaches a file (and a `#anchor` a
heading of it, by GitHub's slug rules), and every `make <target>` they show exists in the
Makefile (an `ablation-<study>` for each study in conf/ablation/)."""

from __future__ import annotations

import re
import subprocess
import unicodedata
from pathlib import Path

import pytest

from conftest import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+[\"'(][^)]*)?\)")
REFERENCE_LINK = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s.*)?$")
HTML_ANCHOR = re.compile(r"<a\s[^>]*(?:name|id)=[\"']([^\"']+)[\"']", re.I)
HTML_LINK = re.compile(r"<(?:a|img)\s[^>]*(?:href|src)=[\"']([^\"']+)[\"']", re.I)
EXTERNAL = re.compile(r"^([a-z][a-z0-9+.-]*:|//)", re.I)  # http:, https:, mailto:, ...
CODE_SPAN = re.compile(r"(`+)(.+?)(?<!`)\1(?!`)")
# `make` as a command: at the start of a code span, or of a line of a code block (after a `$ `
# prompt) or after a shell separator there
MAKE_IN_SPAN = re.compile(r"^(?:\$\s+)?make((?:\s+[^\s;&|)`]+)*)")
MAKE_IN_BLOCK = re.compile(r"(?:^|[;&|(]\s*|\$\s+)make((?:\s+[^\s;&|)`]+)*)")


def prose_and_code(text: str) -> tuple[list[tuple[int, str, str]], list[tuple[int, str, bool]]]:
    """The lines outside fenced code blocks (each with its code spans blanked out, and as it is),
    and the code: each fenced line (True) and each code span (False), with their line numbers."""
    prose, code = [], []
    fence = None
    for number, line in enumerate(text.splitlines(), 1):
        opened = FENCE.match(line)
        if fence is None and opened:
            fence = opened.group(1)[0] * len(opened.group(1))
        elif fence is not None:
            if line.strip().startswith(fence) and not line.strip().strip(fence[0]):
                fence = None
            else:
                code.append((number, line, True))
        else:
            code.extend((number, m.group(2).strip(), False) for m in CODE_SPAN.finditer(line))
            prose.append((number, CODE_SPAN.sub(lambda m: " " * len(m.group(0)), line), line))
    return prose, code


def heading_text(raw: str) -> str:
    """A heading as GitHub renders it to text: code spans as they are, without their marks; outside
    them links and images by their text, no emphasis marks, no inline HTML."""
    parts = []
    for i, part in enumerate(re.split(r"(`+.+?`+)", raw)):
        if i % 2:  # a code span
            parts.append(part.strip("`").strip())
            continue
        text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", part)
        text = re.sub(r"!?\[([^\]]*)\]\[[^\]]*\]", r"\1", text)
        text = re.sub(r"<[^>]+>", "", text)
        text = re.sub(r"(\*{1,3})(\S(?:.*?\S)?)\1", r"\2", text)
        text = re.sub(r"(?<!\w)(_{1,3})(\S(?:.*?\S)?)\1(?!\w)", r"\2", text)
        parts.append(text)
    return "".join(parts).strip()


def slug(text: str) -> str:
    """GitHub's anchor for a heading's text (github-slugger): lower case; letters, digits,
    marks, `_`, `-` and spaces kept, every other character dropped; each space a `-`."""
    kept = "".join(c for c in text.lower()
                   if c in " -_" or unicodedata.category(c)[0] in "LNM")
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The `#anchor`s a file has: one per heading (a repeated one gets -1, -2, ...), and HTML ids."""
    prose, _ = prose_and_code(path.read_text())
    found: set[str] = set()
    seen: dict[str, int] = {}
    previous = ""
    for _, _, line in prose:
        match = re.match(r"^ {0,3}(#{1,6})\s+(.*?)(?:\s+#+)?\s*$", line)
        text = match.group(2) if match else None
        if not match and previous.strip() and re.match(r"^ {0,3}(=+|-+)\s*$", line) \
                and not re.match(r"^ {0,3}([-*+]\s|#|>|\|)", previous):
            text = previous.strip()  # a setext heading: its text, underlined by === or ---
        if text is not None:
            base = slug(heading_text(text))
            anchor = base if base not in seen else f"{base}-{seen[base]}"
            seen[base] = seen.get(base, 0) + 1
            found.add(anchor)
        found.update(HTML_ANCHOR.findall(line))
        previous = line
    return found


def links(path: Path) -> list[tuple[int, str]]:
    prose, _ = prose_and_code(path.read_text())
    out = []
    for number, line, _ in prose:
        for pattern in (INLINE_LINK, REFERENCE_LINK, HTML_LINK):
            out.extend((number, target) for target in pattern.findall(line))
    return out


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    """Each relative link of `path` that reaches no file, folder or heading, as `line: target (why)`."""
    broken = []
    for number, target in links(path):
        if not target or EXTERNAL.match(target):
            continue
        file_part, _, anchor = target.partition("#")
        file_part = file_part.split("?")[0]
        where = (root / file_part.lstrip("/")) if file_part.startswith("/") \
            else (path.parent / file_part)
        where = where.resolve() if file_part else path
        if not where.exists():
            broken.append(f"{path.name}:{number}: {target} (no such file)")
        elif anchor and where.suffix == ".md" and anchor.lower() not in anchors(where):
            broken.append(f"{path.name}:{number}: {target} (no heading #{anchor} in {where.name})")
    return broken


def make_targets(makefile_dir: Path = ROOT) -> set[str]:
    """Every target make knows in this Makefile, pattern-made ones (ablation-<study>) included,
    from make's own database: `make -p` reads the Makefile without running a recipe."""
    db = subprocess.run(["make", "-pRrq", "-C", str(makefile_dir), "-f", "Makefile", "__no_such__"],
                        capture_output=True, text=True).stdout
    targets, not_target = set(), False
    for line in db.splitlines():
        if line.startswith("# Not a target"):
            not_target = True
            continue
        match = re.match(r"^([^\s#:=][^:=]*?):(?!=)", line)
        if match and not not_target:
            targets.update(match.group(1).split())
        if not line.strip():
            not_target = False
    return {t for t in targets if not t.startswith((".", "/", "$")) and "%" not in t}


def named_make_targets(path: Path) -> list[tuple[int, str]]:
    """The targets of every `make ...` command shown in code: its words that are no VAR=value and
    no option."""
    _, code = prose_and_code(path.read_text())
    out = []
    for number, snippet, fenced in code:
        # a placeholder is one word, though it has spaces: DATA=<JPEG copy>
        snippet = re.sub(r"<[^<>]*>", lambda m: m.group(0).replace(" ", "_"), snippet.strip())
        for match in (MAKE_IN_BLOCK if fenced else MAKE_IN_SPAN).finditer(snippet):
            words = match.group(1).split()
            out.extend((number, w) for w in words if "=" not in w and not w.startswith("-"))
    return out


def unknown_make_targets(path: Path, known: set[str]) -> list[str]:
    unknown = []
    for number, name in named_make_targets(path):
        # a placeholder such as ablation-<study> stands for any name make knows
        pattern = re.compile("".join(".+" if part.startswith("<") else re.escape(part)
                                     for part in re.split(r"(<[^>]*>)", name)) + "$")
        if not any(pattern.match(target) for target in known):
            unknown.append(f"{path.name}:{number}: make {name}")
    return unknown


# --- the checker on the project's documents ------------------------------------------------------

@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(path):
    assert broken_links(path) == []


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_make_target_named_exists(path):
    assert unknown_make_targets(path, make_targets()) == []


# --- the checker itself --------------------------------------------------------------------------

@pytest.mark.parametrize("heading, anchor", [
    ("Results are tied to the code that made them", "results-are-tied-to-the-code-that-made-them"),
    ("What's new? (2024)", "whats-new-2024"),
    ("`config_hash` and `setting_hash`", "config_hash-and-setting_hash"),
    ("C++ & Python", "c--python"),
    ("**Bold** and _emphasis_ in [a link](https://example.org)", "bold-and-emphasis-in-a-link"),
    ("Über `make ablation-<study>`", "über-make-ablation-study"),
    ("Sweeps on a CPU: run side by side", "sweeps-on-a-cpu-run-side-by-side"),
    ("Config groups (`conf/`)", "config-groups-conf"),
])
def test_slug_follows_github(heading, anchor):
    assert slug(heading_text(heading)) == anchor


def test_the_checker_finds_dead_links_and_missing_headings(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "guide.md").write_text(
        "# Guide\n\n## Set up\n\n## Set up\n\nOther\n-----\n\n### The `make` targets\n\n```\n# not a heading\n```\n")
    readme = tmp_path / "README.md"
    readme.write_text(
        "# Project\n\n"
        "[ok](docs/guide.md) [ok](docs/guide.md#set-up) [ok](docs/guide.md#set-up-1) [ok](#project)\n"
        "[ok](docs/guide.md#other) [ok](docs/) [ok](https://example.org/missing.md)\n"
        "[ok](docs/guide.md#the-make-targets) [gone](docs/guide.md#not-a-heading)\n"
        "[gone](docs/missing.md) [gone](docs/guide.md#set-up-2) [gone](#nowhere)\n"
        "`[not a link](code.md)`\n\n```\n[not a link](fenced.md)\n```\n"
        "[ref]: docs/also-missing.md\n"
    )
    assert broken_links(readme, tmp_path) == [
        "README.md:5: docs/guide.md#not-a-heading (no heading #not-a-heading in guide.md)",
        "README.md:6: docs/missing.md (no such file)",
        "README.md:6: docs/guide.md#set-up-2 (no heading #set-up-2 in guide.md)",
        "README.md:6: #nowhere (no heading #nowhere in README.md)",
        "README.md:12: docs/also-missing.md (no such file)",
    ]


def test_the_checker_finds_unknown_make_targets(tmp_path):
    (tmp_path / "Makefile").write_text(
        "STUDIES = lr arch\n"
        "help:  ## list\n\t@true\n"
        "$(addprefix ablation-,$(STUDIES)): ablation-%:\n\t@true\n"
    )
    doc = tmp_path / "README.md"
    doc.write_text(
        "Run `make help`, then `make ablation-lr EPOCHS=3` or `make ablation-<study>`;\n"
        "`make -j2 ablation-arch` and `make ablation-size`. Make sure to `cook; make tea`.\n"
        "```bash\n$ make SEEDS=auto ablation-lr DATA=<a copy>\nmake help && make install\n```\n"
    )
    known = make_targets(tmp_path)
    assert {"help", "ablation-lr", "ablation-arch"} <= known
    assert unknown_make_targets(doc, known) == [
        "README.md:2: make ablation-size", "README.md:5: make install"]
