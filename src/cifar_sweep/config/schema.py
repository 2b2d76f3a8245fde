"""The config's types: a dataclass per section, and one read from the signature of each
`_target_` we build, so that a wrong type (`optimizer.momentum=abc`) or an unknown key
(`+model.widht=2`) is one line before any run exists, not a traceback from inside torch and a
FAILED run.

Each default is written once, in conf/'s YAML: the section dataclasses below hold the keys and
their types only (every field MISSING), and a `_target_`'s keys and types are its constructor's
(`inspect.signature`), so that a new option of a group (`_target_: torch.optim.NAdam` in a
user's `optimizer/nadam.yaml`) is checked with no change here. Nothing here is composed into a
job's config, so no config hash depends on it.

OmegaConf does the checking: the composed section is merged into the structured (typed) config,
which converts what it can (`"0.9"` -> 0.9) and refuses the rest. A `_target_` outside the
packages whose signatures we read (a model of the user's own) is built as it is.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import functools
import inspect
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any, cast

from omegaconf import MISSING, DictConfig, MissingMandatoryValue, OmegaConf
from omegaconf.errors import ConfigKeyError, InterpolationResolutionError, ValidationError

from cifar_sweep.errors import UserInputError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # trainer.precision's values (validate.py checks)


# The sections' keys and types. Every field is MISSING: the defaults are conf/config.yaml's and
# its options' (a section's key that conf/ leaves out, `trainer.skip_test`, `study.paper`, has
# none at all: it is absent from the composed config, so from every config hash, until set).

@dataclass
class EarlyStopping:
    patience: int | None = MISSING  # null: off
    min_delta: float = MISSING


@dataclass
class Trainer:
    epochs: int = MISSING
    batch_size: int = MISSING
    eval_batch_size: int = MISSING
    val_fraction: float = MISSING
    seed: int = MISSING
    device: str = MISSING
    num_threads: int | None = MISSING
    precision: str = MISSING
    compile: bool = MISSING
    jobs_per_gpu: int = MISSING
    rerun: bool = MISSING
    reuse_other_code: bool = MISSING
    # a tuned study's trial (commands/tuned.py): validation only, the test set never evaluated;
    # absent from conf/ (so from every other run's config hash), set as ++trainer.skip_test=true
    skip_test: bool = MISSING
    early_stop: EarlyStopping = field(default_factory=EarlyStopping)


@dataclass
class Tracking:
    uri: str = MISSING
    experiment: str = MISSING
    figures: bool = MISSING
    system_metrics: bool = MISSING
    log_model: bool = MISSING
    predictions_probabilities: bool = MISSING


@dataclass
class Checkpoint:
    dir: str = MISSING
    keep: bool = MISSING


@dataclass
class Tune:
    """`study.tune`: each arm of a study searched with the same budget before its seeds
    (commands/tuned.py, which holds the defaults of the keys a preset leaves out). The keys
    below `arm` are written by the command, for the table."""
    space: Any = MISSING          # key -> {type: float|int|categorical, low, high, log, choices}
    trials: int = MISSING         # per arm
    epochs: int | None = MISSING  # a trial's epochs; null: the study's trainer.epochs
    pruner: Any = MISSING         # as hpo's hydra.sweeper.pruner; null: median
    seed: int = MISSING           # the trials' trainer.seed and the sampler's: not a study seed
    storage: str | None = MISSING  # the Optuna storage; null: sqlite:///hpo/tuned.db
    arm: str | None = MISSING     # the arm a trial or seed run belongs to
    search: str | None = MISSING  # its arm's search (the Optuna study's name)
    tuned: str | None = MISSING   # the values a seed run was trained with: `key=value ...`
    best_trial: int | None = MISSING
    space_text: str | None = MISSING  # the space as the table's caption says it
    edges: str | None = MISSING   # the line(s) saying a best value lies at an edge of its range


@dataclass
class Study:
    name: str | None = MISSING
    baseline: str | None = MISSING
    paper: Any = MISSING
    seeds: str | None = MISSING  # "auto": the study was run with an adaptive seed budget
    tune: Tune | None = MISSING  # each arm tuned on validation first (docs/tuned.md)


@dataclass
class Data:
    name: str = MISSING
    title: str = MISSING
    root: str | None = MISSING
    download: bool = MISSING
    image_size: int = MISSING
    skip_corrupt: bool = MISSING
    cache_dir: str | None = MISSING
    split_seed: int = MISSING
    subset: float | None = MISSING       # training images: a count, or a fraction below 1
    test_subset: float | None = MISSING  # test images, likewise; null: the whole test set
    mean: list[float] = MISSING
    std: list[float] = MISSING
    source: Any = MISSING  # a `_target_` node: checked by its signature (TARGET_NODES)


@dataclass
class Lr:
    value: float = MISSING
    schedule: Any = MISSING  # a `_target_` node: checked by its signature (TARGET_NODES)


@dataclass
class Target:
    """What every `_target_` node may hold besides its constructor's arguments."""
    _target_: str = MISSING
    _partial_: bool = MISSING


SECTIONS = {"trainer": Trainer, "tracking": Tracking, "checkpoint": Checkpoint, "study": Study,
            "data": Data, "lr": Lr}
# where a `_target_` node sits: the group options, the schedule and the data source
TARGET_NODES = ("model", "optimizer", "loss", "augment", "lr.schedule", "data.source")
# the packages whose `_target_`s are held to their signature: ours, and torch's optimizers (so
# a new optimizer is one YAML file). A user's own `_target_` is built as it is: a model of
# theirs keeps the keys of the option it overrides (`model._target_=mynet.MyNet` keeps
# modified_net's `dropout`), which train/model_build.py leaves out rather than refuses.
CHECKED_PACKAGES = ("cifar_sweep.", "torch.optim.")
# What train/loop.py's `build` hands each node itself, so that its YAML does not set it: (how
# many leading positional arguments, which keyword arguments). The model gets `num_classes` (the
# data decides it); an optimizer its parameters, and `lr` from our lr section (`lr.value`, the
# base rate of every schedule); a schedule the optimizer, epochs and steps per epoch; the loss
# the training labels and the class count.
GIVEN_AT_BUILD = {"model": (0, ("num_classes",)), "optimizer": (1, ("lr",)),
                  "lr.schedule": (3, ()), "loss": (2, ())}


def target_schema(path: str, target: str) -> type | None:
    """The dataclass of the keys and types a `_target_` node at `path` takes, read from the
    signature of what it names; None where it is not held to one (not ours or torch's optimizers,
    not importable: building it says why, or taking any keyword: `**kwargs`)."""
    if not target.startswith(CHECKED_PACKAGES):
        return None
    return _target_schema(path, target)


@functools.cache
def _target_schema(path: str, target: str) -> type | None:
    from cifar_sweep.hydra_private import locate

    try:
        made = locate(target)
        try:
            signature = inspect.signature(made, eval_str=True)
        except Exception:  # an annotation its module cannot evaluate: read as text (anything)
            signature = inspect.signature(made)
    except Exception:  # ImportError, AttributeError, TypeError or ValueError (a builtin)
        return None
    positional, keywords = GIVEN_AT_BUILD.get(path, (0, ()))
    fields: list[tuple[str, Any, Any]] = []
    for place, p in enumerate(signature.parameters.values()):
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            return None
        if place < positional or p.name in keywords or p.kind in (
                inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.POSITIONAL_ONLY):
            continue
        fields.append((p.name, _yaml_type(p), field(default=MISSING)))
    return dataclasses.make_dataclass(target.rsplit(".", 1)[-1], fields, bases=(Target,))


def target_fields(path: str, target: str) -> list[str] | None:
    """The settings a `_target_` node at `path` may hold (its constructor's arguments, as
    `target_schema`), in the signature's order; None where it is not held to a schema."""
    schema = target_schema(path, target)
    return None if schema is None else [f.name for f in dataclasses.fields(schema)
                                        if not f.name.startswith("_")]


SIMPLE = (bool, int, float, str)


def _yaml_type(p: inspect.Parameter) -> Any:
    """What OmegaConf checks a YAML value for this parameter against: its annotation, else the
    type of its default, else anything."""
    if p.annotation is not inspect.Parameter.empty:
        return _from_annotation(p.annotation)
    if isinstance(p.default, (bool, str, float)):
        return type(p.default)
    if isinstance(p.default, int):  # an untyped `momentum=0` takes 0.9: the default's type is
        return float                # too narrow to refuse a number with
    return Any


def _from_annotation(kind: Any) -> Any:
    """An annotation as OmegaConf can check it; where it cannot, or the annotation is looser than
    YAML, anything. Torch's own types in a union (`lr: float | Tensor`) cannot come from YAML and
    are left out; a tuple (`betas: tuple[float, float]`) is a list in YAML."""
    if kind in SIMPLE or kind is Any:
        return kind
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        kept = [a for a in args if a is not type(None)
                and not str(getattr(a, "__module__", "")).startswith("torch")]
        inner = _from_annotation(kept[0]) if len(kept) == 1 else Any
        return inner | None if type(None) in args and inner is not Any else inner
    if origin in (tuple, list, collections.abc.Sequence):
        items = {_from_annotation(a) for a in args if a is not Ellipsis}
        item = items.pop() if len(items) == 1 else Any
        return list[item] if item in SIMPLE else list[Any]  # type: ignore[valid-type]
    return Any


def _check(path: str, node: Any, schema: type) -> None:
    # a sweep checks thousands of jobs whose sections mostly repeat, and a structured merge
    # costs milliseconds: each distinct section is checked once per process
    try:
        key = (path, schema, json.dumps(node, sort_keys=True))
    except (TypeError, ValueError):  # not plain JSON values: not remembered
        key = None
    if key is not None and key in _CHECKED:
        problem = _CHECKED[key]
    else:
        problem = _problem(path, node, schema)
        if key is not None:
            _CHECKED[key] = problem
    if problem is not None:
        raise UserInputError(problem)


_CHECKED: dict[tuple, str | None] = {}


def _problem(path: str, node: Any, schema: type) -> str | None:
    """The one line that says what is wrong with this node, or None."""
    try:
        OmegaConf.merge(OmegaConf.structured(schema), node)
    except ConfigKeyError as exc:
        *sections, _ = str(exc.full_key).split("[")[0].split(".")
        for section in sections:  # a nested section's unknown key: that section's keys
            inner = typing.get_type_hints(schema).get(section)
            if not dataclasses.is_dataclass(inner):
                break
            path, schema = f"{path}.{section}", cast(type, inner)
        allowed = ", ".join(k for k in OmegaConf.structured(schema) if not k.startswith("_"))
        return f"{path}.{exc.key} is not a setting here; allowed: {allowed or 'none'}"
    except ValidationError as exc:
        # down to the innermost section (trainer.early_stop.patience): its own key and type
        *sections, key = str(exc.full_key).split("[")[0].split(".")
        for section in sections:
            inner = typing.get_type_hints(schema).get(section)
            if not dataclasses.is_dataclass(inner):
                key = section
                break
            path, schema = f"{path}.{section}", cast(type, inner)
            node = node.get(section, {}) if isinstance(node, dict) else "?"
        sections_here = {k: h for k, h in typing.get_type_hints(schema).items()
                         if dataclasses.is_dataclass(h)}
        given = node if isinstance(node, dict) else {}
        if not key and (sub := next((k for k in sections_here if k in given
                                     and not isinstance(given[k], dict)), None)):
            # a value where a section belongs (trainer.early_stop=5): OmegaConf names no key
            keys = ", ".join(f.name for f in dataclasses.fields(sections_here[sub]))
            return f"{path}.{sub} is a section, not a value: set its keys ({keys}), e.g. " \
                   f"{path}.{sub}.{dataclasses.fields(sections_here[sub])[0].name}=..."
        value = node.get(key, "?") if isinstance(node, dict) else "?"
        kind = str(typing.get_type_hints(schema).get(key, "another type")).replace("typing.", "")
        kind = {"<class 'int'>": "an integer", "<class 'float'>": "a number",
                "<class 'bool'>": "true or false", "<class 'str'>": "a string",
                "int | None": "an integer or null", "float | None": "a number or null",
                "bool | None": "true, false or null"}.get(kind, kind)
        return f"{path}.{key}={value} is invalid: must be {kind}"
    return None


def check_types(cfg: DictConfig, tree: dict | None = None) -> None:
    """Every section against its dataclass, every `_target_` node against its signature. `tree`:
    the whole config already resolved to plain values (`OmegaConf.to_container(cfg,
    resolve=True)`), so that a sweep's planner does not resolve each section a second time
    (about 4 ms a job)."""
    for section, schema in SECTIONS.items():
        if section in cfg:
            _check(section, _plain(cfg, section) if tree is None else tree[section], schema)
    for path in TARGET_NODES:
        node = OmegaConf.select(cfg, path)
        if not isinstance(node, DictConfig) or not isinstance(node.get("_target_"), str):
            continue
        typed = target_schema(path, node._target_)
        if typed is not None:
            plain = _plain(cfg, path) if tree is None else _walk(tree, path)
            _check(path, plain, typed)


def _walk(tree: dict, path: str):
    for part in path.split("."):
        tree = tree[part]
    return tree


def _plain(cfg: DictConfig, path: str) -> dict:
    """The node as plain values, its interpolations resolved (`???` kept as missing)."""
    node = OmegaConf.select(cfg, path)
    try:
        return cast(dict, OmegaConf.to_container(node, resolve=True, throw_on_missing=False))
    except (MissingMandatoryValue, InterpolationResolutionError):
        return cast(dict, OmegaConf.to_container(node))
