"""The config's types: a dataclass per section and per `_target_` of each group's options, so that
a wrong type (`optimizer.momentum=abc`) or an unknown key (`+model.widht=2`) is one line before
any run exists, not a traceback from inside torch and a FAILED run.

OmegaConf does the checking: the composed section is merged into the structured (typed) config,
which converts what it can (`"0.9"` -> 0.9) and refuses the rest. A `_target_` not listed here
(a model of the user's own) is built as it is.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from typing import Any, cast

from omegaconf import DictConfig, MissingMandatoryValue, OmegaConf
from omegaconf.errors import ConfigKeyError, InterpolationResolutionError, ValidationError

from cifar_sweep.errors import UserInputError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # trainer.precision's values (validate.py checks)


@dataclass
class EarlyStopping:
    patience: int | None = None  # null: off
    min_delta: float = 0.0


@dataclass
class Trainer:
    epochs: int = 30
    batch_size: int = 64
    eval_batch_size: int = 250
    val_fraction: float = 0.2
    seed: int = 0
    device: str = "auto"
    num_threads: int | None = None
    precision: str = "auto"
    compile: bool = False
    jobs_per_gpu: int = 1
    rerun: bool = False
    reuse_other_code: bool = False
    # a tuned study's trial (commands/tuned.py): validation only, the test set never evaluated;
    # absent from conf/ (so from every other run's config hash), set as ++trainer.skip_test=true
    skip_test: bool = False
    early_stop: EarlyStopping = field(default_factory=EarlyStopping)


@dataclass
class Tracking:
    uri: str = "mlruns"
    experiment: str = "cifar-sweep"
    figures: bool = True
    system_metrics: bool = True
    log_model: bool = True
    predictions_probabilities: bool = True


@dataclass
class Checkpoint:
    dir: str = "checkpoints"
    keep: bool = False


@dataclass
class Tune:
    """`study.tune`: each arm of a study searched with the same budget before its seeds
    (commands/tuned.py). The keys below `arm` are written by the command, for the table."""
    space: Any = None          # key -> {type: float|int|categorical, low, high, log, choices}
    trials: int = 20           # per arm
    epochs: int | None = None  # a trial's epochs; null: the study's trainer.epochs
    pruner: Any = None         # as hpo's hydra.sweeper.pruner; null: median
    seed: int = 1000           # the trials' trainer.seed and the sampler's seed: not a study seed
    storage: str | None = None  # the Optuna storage; null: sqlite:///hpo/tuned.db
    arm: str | None = None     # the arm a trial or seed run belongs to
    search: str | None = None  # its arm's search (the Optuna study's name)
    tuned: str | None = None   # the values a seed run was trained with: `key=value ...`
    best_trial: int | None = None
    space_text: str | None = None  # the space as the table's caption says it
    edges: str | None = None   # the line(s) saying a best value lies at an edge of its range


@dataclass
class Study:
    name: str | None = None
    baseline: str | None = None
    paper: Any = None
    seeds: str | None = None  # "auto": the study was run with an adaptive seed budget
    tune: Tune | None = None  # each arm tuned on validation first (docs/tuned.md)


@dataclass
class Data:
    name: str = ""
    title: str = ""
    root: str | None = None
    download: bool = True
    image_size: int = 32
    skip_corrupt: bool = False
    cache_dir: str | None = None
    split_seed: int = 0
    subset: float | None = None       # training images: a count, or a fraction below 1
    test_subset: float | None = None  # test images, likewise; null: the whole test set
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    source: Any = None


@dataclass
class Target:
    _target_: str = ""
    _partial_: bool = False


@dataclass
class Dropout(Target):
    dropout: float = 0.5


@dataclass
class SGD(Target):
    momentum: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False
    dampening: float = 0.0


@dataclass
class Adam(Target):
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    amsgrad: bool = False


@dataclass
class RMSprop(Target):
    momentum: float = 0.0
    weight_decay: float = 0.0
    alpha: float = 0.99
    eps: float = 1e-8
    centered: bool = False


@dataclass
class Adagrad(Target):
    weight_decay: float = 0.0
    lr_decay: float = 0.0
    eps: float = 1e-10


@dataclass
class Step(Target):
    milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])
    gamma: float = 0.1


@dataclass
class Cosine(Target):
    warmup_epochs: float = 0.0


@dataclass
class OneCycle(Target):
    pct_start: float = 0.25
    div_factor: float = 25.0
    final_div_factor: float = 1000.0


@dataclass
class Lr:
    value: float = 0.005
    schedule: Any = None


@dataclass
class Loss(Target):
    label_smoothing: float = 0.0
    class_weighted: bool = False


@dataclass
class Augment(Target):
    hflip: bool = True
    rotate_degrees: float = 10.0
    translate_px: int = 0


@dataclass
class Cifar10(Target):
    root: str = "data"
    download: bool = True


@dataclass
class ImageFolder(Target):
    root: str = ""
    image_size: int = 32
    skip_corrupt: bool = False


@dataclass
class Synthetic(Target):
    num_train: int = 2000
    num_test: int = 500
    num_classes: int = 10
    noise: float = 40.0
    seed: int = 0
    image_size: int = 32


SECTIONS = {"trainer": Trainer, "tracking": Tracking, "checkpoint": Checkpoint, "study": Study,
            "data": Data, "lr": Lr}
TARGETS = {
    "cifar_sweep.models.OriginNet": Target, "cifar_sweep.models.ModifiedNet": Dropout,
    "cifar_sweep.models.ModifiedNetDS": Dropout, "cifar_sweep.models.resnet18_cifar": Target,
    "cifar_sweep.models.mobilenet_v2": Target,
    "torch.optim.SGD": SGD, "torch.optim.Adam": Adam, "torch.optim.RMSprop": RMSprop,
    "torch.optim.Adagrad": Adagrad,
    "cifar_sweep.schedules.constant": Target, "cifar_sweep.schedules.step": Step,
    "cifar_sweep.schedules.cosine": Cosine, "cifar_sweep.schedules.onecycle": OneCycle,
    "cifar_sweep.losses.cross_entropy": Loss,
    "cifar_sweep.batches.Augment": Augment,
    "cifar_sweep.data.Cifar10Source": Cifar10, "cifar_sweep.data.Cifar100Source": Cifar10,
    "cifar_sweep.data.ImageFolderSource": ImageFolder,
    "cifar_sweep.data.SyntheticSource": Synthetic,
}
# where a `_target_` node sits: the group options, the schedule and the data source
TARGET_NODES = ("model", "optimizer", "loss", "augment", "lr.schedule", "data.source")


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
                "int | None": "an integer or null"}.get(kind, kind)
        return f"{path}.{key}={value} is invalid: must be {kind}"
    return None


def check_types(cfg: DictConfig, tree: dict | None = None) -> None:
    """Every section and every known `_target_` node against its dataclass. `tree`: the whole
    config already resolved to plain values (`OmegaConf.to_container(cfg, resolve=True)`), so
    that a sweep's planner does not resolve each section a second time (about 4 ms a job)."""
    for section, schema in SECTIONS.items():
        if section in cfg:
            _check(section, _plain(cfg, section) if tree is None else tree[section], schema)
    for path in TARGET_NODES:
        node = OmegaConf.select(cfg, path)
        if isinstance(node, DictConfig) and node.get("_target_") in TARGETS:
            plain = _plain(cfg, path) if tree is None else _walk(tree, path)
            _check(path, plain, TARGETS[node._target_])


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
