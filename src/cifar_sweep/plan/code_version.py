"""The version of the code that decides a run's result: a hash per part, from the definitions
themselves, not from files or commits.

A part (the model, the loss, the schedule, the optimizer, the augmentation, the data decoding,
the training loop, the evaluation) is named by its entry point: the `_target_` its config group
builds, or the functions every run calls. Its hash covers that definition and every definition of
this package it refers to, followed through imports (the model class, then the helpers it calls,
then theirs), as syntax trees without docstrings: a comment, a docstring or a reformatting
changes nothing; a new model class changes no other model's hash; moving a function to another
module changes nothing. A `_target_` outside the package (a user's model) is read the same way,
through its own package's definitions, wherever that package lives. Other code counts by version
where it computes results: torch and torchvision. Where the line is drawn is written in
docs/reproducing.md ("How a table chooses its runs").
"""

from __future__ import annotations

import ast
import hashlib
import importlib.machinery
import importlib.util
import sys
from functools import cache
from importlib import metadata
from typing import Any

from omegaconf import DictConfig

PACKAGE = "cifar_sweep"
# external packages whose version can change a result (the rest: plumbing, such as hydra)
COMPUTING = ("torch", "torchvision")
# what every run executes whatever its config: the training loop and the test metrics
LOOP = ("cifar_sweep.train.loop.build", "cifar_sweep.train.loop.fit", "cifar_sweep.train.loop.evaluate")
EVALUATION = ("cifar_sweep.train.metrics.classification_report",)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "?"


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


def _spec(dotted: str):
    """The module spec of `dotted`, or None where it names no module, found without running any
    module's code: reading a definition must not import it (cifar_sweep.train.metrics pulls in
    torchmetrics, torchvision's models and torch._dynamo: 5-7 s for a process that trains
    nothing, a sweep's parent planning its jobs)."""
    if dotted in sys.modules:
        return getattr(sys.modules[dotted], "__spec__", None)
    head, _, _ = dotted.rpartition(".")
    if not head:
        try:
            return importlib.util.find_spec(dotted)  # a top-level name: found, not run
        except (ImportError, ValueError):
            return None
    parent = _spec(head)
    if parent is None or parent.submodule_search_locations is None:
        return None
    return importlib.machinery.PathFinder.find_spec(dotted, list(parent.submodule_search_locations))


@cache
def _module_table(module_name: str) -> dict[str, tuple[str, Any]]:
    """A module's top-level names: name -> ("def", syntax tree) for what it defines, or
    ("import", "module.name") for what it imports (`lazy_module("x")` is an import of x)."""
    spec = _spec(module_name)
    origin = getattr(spec, "origin", None)
    if not origin or not origin.endswith(".py"):  # no source here: its names count as unknown
        return {}
    try:
        with open(origin, "rb") as source:
            tree = ast.parse(importlib.util.decode_source(source.read()))
            _strip_docstrings(tree)
    except OSError:
        return {}
    package = module_name if spec.submodule_search_locations is not None \
        else module_name.rpartition(".")[0]
    table: dict[str, tuple[str, Any]] = {}  # ("def", ast.AST) or ("import", dotted name)
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            table[node.name] = ("def", node)
        elif (lazy := _lazy_import(node)) is not None:
            table[lazy[0]] = ("import", lazy[1])
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        table[name.id] = ("def", node)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                table[alias.asname or alias.name.split(".")[0]] = (
                    "import", alias.name if alias.asname else alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([node.module] if node.module else []))
            for alias in node.names:
                table[alias.asname or alias.name] = ("import", f"{base}.{alias.name}")
    return table


def _lazy_import(node: ast.AST) -> tuple[str, str] | None:
    """`name = lazy_module("x")` (models.py): an import of x, deferred: (name, "x"), else None."""
    if (isinstance(node, ast.Assign) and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name) and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Name) and node.value.func.id == "lazy_module"
            and len(node.value.args) == 1 and isinstance(node.value.args[0], ast.Constant)
            and isinstance(node.value.args[0].value, str)):
        return node.targets[0].id, node.value.args[0].value
    return None


def _is_module(dotted: str) -> bool:
    try:
        return _spec(dotted) is not None
    except (ImportError, ValueError):
        return False


def _names(node: ast.AST) -> set[str]:
    """The names a definition reads, and `alias.attr` for attributes of names; not what it only
    annotates (a type hint computes nothing) or assigns."""
    out = set()
    todo = [node]
    while todo:
        sub = todo.pop()
        if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Load):
            out.add(sub.id)
        elif isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name):
            out.add(f"{sub.value.id}.{sub.attr}")
        for field, child in ast.iter_fields(sub):
            if field in ("annotation", "returns"):
                continue
            children = child if isinstance(child, list) else [child]
            todo.extend(c for c in children if isinstance(c, ast.AST))
    return out


def _closure(target: str) -> list[str]:
    """The definitions `target` (a dotted name) reaches in this package, or in the target's own
    package (a user's model: `mynet.MyNet`, wherever `mynet` lives), each as `name=dump`, and
    the versions of the computing packages it reaches."""
    seen: dict[str, str] = {}
    external: set[str] = set()
    # whose code is read: ours, and the target's own (not torch's: that counts by version)
    followed = {PACKAGE, target.split(".")[0]} - set(COMPUTING)
    todo = [target]
    while todo:
        dotted = todo.pop()
        if dotted in seen:
            continue
        top = dotted.split(".")[0]
        if top not in followed:
            if top in COMPUTING:
                external.add(top)
            continue
        module_name, _, name = dotted.rpartition(".")
        if _is_module(dotted):  # `from cifar_sweep.tracking import runs`: followed through attributes
            seen[dotted] = "module"
            continue
        entry = _module_table(module_name).get(name)
        if entry is None:
            seen[dotted] = "?"
            continue
        kind, value = entry
        if kind == "import":
            seen[dotted] = f"-> {value}"
            todo.append(value)
            continue
        seen[dotted] = ast.dump(value, include_attributes=False)
        table = _module_table(module_name)
        for ref in _names(value):
            head, _, attr = ref.partition(".")
            if head not in table or head == name:
                continue
            kind, where = table[head]
            if kind == "def":
                todo.append(f"{module_name}.{head}")
            elif attr and _is_module(str(where)):
                todo.append(f"{where}.{attr}")
            else:
                todo.append(str(where))
    # definitions by name within their module, so that a move between modules changes nothing
    defs = sorted(f"{k.rpartition('.')[2]}={v}" for k, v in seen.items()
                  if not v.startswith(("-> ", "module")))
    return defs + sorted(f"{p}=={_version(p)}" for p in external)


@cache  # the code cannot change within a process; a sweep asks for every job
def part_hash(*targets: str) -> str:
    text = "\n".join(line for target in targets for line in _closure(target))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _target(node: DictConfig | None) -> str | None:
    return None if node is None else node.get("_target_")


def parts(cfg: DictConfig) -> dict[str, str]:
    """Part name -> hash of the code that decides this config's result."""
    targets = {
        "model": _target(cfg.model),
        "loss": _target(cfg.loss),
        "schedule": _target(cfg.lr.get("schedule")),
        "optimizer": _target(cfg.optimizer),
        "augment": _target(cfg.augment),
        "data": _target(cfg.data.get("source")),
    }
    out = {name: part_hash(target) for name, target in targets.items() if target}
    out["training"] = part_hash(*LOOP)
    out["evaluation"] = part_hash(*EVALUATION)
    out["torch"] = part_hash("torch")  # torch's version: every part runs on it
    return out


def version(code_parts: dict[str, str]) -> str:
    """One hash for all the parts."""
    text = ",".join(f"{k}={v}" for k, v in sorted(code_parts.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def changed(old: dict[str, str], new: dict[str, str]) -> list[str]:
    """The parts whose code differs (all of them where `old` recorded none)."""
    return sorted(k for k in new if old.get(k) != new[k])
