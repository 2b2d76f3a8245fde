"""docs/code-map.md matches the tree: every module of the package is in it, by its path, and every
path it names exists (a move that forgets the map fails here)."""

import re

from conftest import ROOT

PACKAGE = ROOT / "src" / "cifar_sweep"
MAP = (ROOT / "docs" / "code-map.md").read_text()
# `job/endings.py`, `models.py`, `src/train.py`, `src/hydra_plugins/cifar_sweep_slurm/`
NAMED = set(re.findall(r"`((?:src/)?[\w/]+(?:\.py|/))`", MAP))


def test_every_module_is_in_the_map():
    modules = {p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py")
               if p.name != "__init__.py"}
    missing = sorted(m for m in modules if m not in NAMED)
    assert not missing, f"not in docs/code-map.md: {missing}"


def test_every_path_in_the_map_exists():
    gone = sorted(name for name in NAMED
                  if not (ROOT / name).exists() and not (PACKAGE / name).exists())
    assert not gone, f"docs/code-map.md names what is not there: {gone}"


def test_every_subpackage_says_what_it_is_for():
    for init in PACKAGE.glob("*/__init__.py"):
        text = init.read_text()
        assert text.startswith('"""') and len(text.strip().strip('"')) > 20, init
        assert f"**{init.parent.name}/**" in MAP, init.parent.name


def test_a_job_imports_nothing_from_the_sweep_or_the_search():
    """A sweep runs jobs, not the other way: what a job needs from its sweep comes in its
    JobContext (job/context.py), built from Hydra by sweep/job_context.py."""
    import ast

    upward = []
    for path in (PACKAGE / "job").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                     else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            upward += [f"{path.name}: {n}" for n in names
                       if n.startswith(("cifar_sweep.sweep", "cifar_sweep.search"))]
    assert not upward, upward
