"""config/schema.py on its own: the dataclass per section and the one read from each `_target_`'s
signature, the one line that `_problem` writes for a wrong type or an unknown key, what
`check_types` holds to a schema (our sections, our `_target_`s and torch's optimizers, a new
option in a user's folder included) and what it leaves alone (a user's own `_target_`).

test_validate.py and test_configs.py go through `check_config` (the ranges and the builds); here
the schema's own functions are called directly, so that a failure points at the schema.
"""

from __future__ import annotations

import copy
from dataclasses import MISSING as MISSING_FACTORY
from dataclasses import fields
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from cifar_sweep.config import schema
from cifar_sweep.config.schema import SECTIONS, TARGET_NODES, check_types, target_schema
from cifar_sweep.errors import UserInputError
from conftest import ROOT

CONF = ROOT / "conf"
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name != "hydra")
OPTIONS = [(g, o.stem) for g in GROUPS for o in sorted((CONF / g).glob("*.yaml"))]
OURS = ("cifar_sweep.", "torch.optim.")  # the prefixes of the `_target_`s this project ships
# the schemas read from the signatures, for the cases below
SGD = target_schema("optimizer", "torch.optim.SGD")
ADAM = target_schema("optimizer", "torch.optim.Adam")
AUGMENT = target_schema("augment", "cifar_sweep.batches.Augment")
MODIFIED_NET = target_schema("model", "cifar_sweep.models.ModifiedNet")  # dropout
ORIGIN_NET = target_schema("model", "cifar_sweep.models.OriginNet")  # no settings of its own
STEP = target_schema("lr.schedule", "cifar_sweep.schedules.step")


@pytest.fixture(scope="module")
def base():
    """The default config (synthetic data), composed once: a compose costs ~80 ms, so the cases
    below edit copies of it as an override would (`key=value`, `+key=value`)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=["data=synthetic"])


@pytest.fixture(scope="module")
def options(tmp_path_factory):
    """Every option of every group in conf/, each composed with hydra.compose (once)."""
    root = tmp_path_factory.mktemp("images")  # image_folder has no default root
    out = {}
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for group, option in OPTIONS:
            prefix = "+" if group == "preset_optimizer" else ""  # not in the defaults: added
            extra = [f"data.root={root}"] if group == "data" and option != "synthetic" else []
            out[group, option] = compose("config", overrides=[f"{prefix}{group}={option}", *extra])
    return out


def edited(cfg, **updates):
    """A copy of `cfg` with `updates` (dotted key -> value, `__` for `.`) set, new keys added."""
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        for key, value in updates.items():
            OmegaConf.update(cfg, key.replace("__", "."), value, force_add=True)
    return cfg


def composed(base, *overrides: str):
    """`base` with command-line style overrides applied."""
    return edited(base, **{o.lstrip("+").split("=", 1)[0].replace(".", "__"): o.split("=", 1)[1]
                           for o in overrides})


def refusal(cfg, tree=None) -> str:
    with pytest.raises(UserInputError) as caught:
        check_types(cfg, tree)
    return str(caught.value)


# --- _problem: the one line --------------------------------------------------------------------

@pytest.mark.parametrize("path, node, kind, line", [
    ("optimizer", {"momentum": "abc"}, SGD,
     "optimizer.momentum=abc is invalid: must be a number"),
    ("trainer", {"epochs": "ten"}, schema.Trainer,
     "trainer.epochs=ten is invalid: must be an integer"),
    ("trainer", {"compile": "maybe"}, schema.Trainer,
     "trainer.compile=maybe is invalid: must be true or false"),
    ("trainer", {"num_threads": "x"}, schema.Trainer,
     "trainer.num_threads=x is invalid: must be an integer or null"),
    ("augment", {"translate_px": 1.5}, AUGMENT,
     "augment.translate_px=1.5 is invalid: must be an integer"),
])
def test_a_wrong_type_is_one_line_with_key_value_and_kind(path, node, kind, line):
    assert schema._problem(path, node, kind) == line


def test_a_wrong_type_in_a_list_names_the_key_and_its_value():
    # the kinds without a plain name (a list) are still named, with the key and the value given
    line = schema._problem("optimizer", {"betas": "abc"}, ADAM)
    assert line.startswith("optimizer.betas=abc is invalid: must be ") and "float" in line
    assert "\n" not in line


@pytest.mark.parametrize("path, node, kind, line", [
    ("model", {"widht": 2}, MODIFIED_NET, "model.widht is not a setting here; allowed: dropout"),
    # a model with no settings of its own: `none`, not an empty list
    ("model", {"width": 2}, ORIGIN_NET, "model.width is not a setting here; allowed: none"),
    ("lr.schedule", {"gama": 0.5}, STEP,
     "lr.schedule.gama is not a setting here; allowed: milestones, gamma"),
    ("checkpoint", {"kep": True}, schema.Checkpoint,
     "checkpoint.kep is not a setting here; allowed: dir, keep"),
])
def test_an_unknown_key_is_one_line_with_what_is_allowed(path, node, kind, line):
    # `_target_` and `_partial_` are every node's, not settings to offer
    assert schema._problem(path, node, kind) == line


def test_what_converts_is_no_problem():
    # OmegaConf converts a string that is a number, and an int where a float is asked for
    assert schema._problem("optimizer", {"momentum": "0.9", "weight_decay": 1}, SGD) is None
    assert schema._problem("trainer", {"num_threads": None, "compile": "true"},
                           schema.Trainer) is None


def test_a_refusal_is_remembered_and_raised_again():
    # `_check` caches each distinct node's verdict: the second look must refuse it too
    node = {"_target_": "torch.optim.SGD", "momentum": "abc-cached"}
    for _ in range(2):
        with pytest.raises(UserInputError, match="optimizer.momentum=abc-cached is invalid"):
            schema._check("optimizer", node, SGD)
    # and the verdict is per path: the same node elsewhere names its own path
    with pytest.raises(UserInputError, match=r"^other\.momentum=abc-cached is invalid"):
        schema._check("other", node, SGD)


# --- check_types: which nodes are held to which schema -----------------------------------------

@pytest.mark.parametrize("override, line", [
    ("optimizer.momentum=abc", "optimizer.momentum=abc is invalid: must be a number"),
    ("+model.widht=2", "model.widht is not a setting here; allowed: dropout"),
    ("+loss.smoothing=0.1", "loss.smoothing is not a setting here; allowed: label_smoothing, "
                            "class_weighted"),
    ("lr.value=fast", "lr.value=fast is invalid: must be a number"),
    ("+study.nme=x", "study.nme is not a setting here; allowed: name, baseline, paper, seeds, tune"),
    ("+checkpoint.kep=true", "checkpoint.kep is not a setting here; allowed: dir, keep"),
    ("data.split_seed=x", "data.split_seed=x is invalid: must be an integer"),
])
def test_each_section_and_target_node_is_checked(base, override, line):
    assert refusal(composed(base, override)) == line


@pytest.mark.parametrize("option, line", [
    ("step", "lr.schedule.gama is not a setting here; allowed: milestones, gamma"),
    ("cosine", "lr.schedule.gama is not a setting here; allowed: warmup_epochs"),
    ("onecycle", "lr.schedule.gama is not a setting here; allowed: pct_start, div_factor, "
                 "final_div_factor"),
])
def test_the_schedule_nested_in_lr_is_checked_by_its_target(options, option, line):
    # lr is a section (Lr) and lr.schedule a `_target_` node inside it, with its own schema
    assert refusal(composed(options["lr", option], "+lr.schedule.gama=0.5")) == line


def test_the_data_source_nested_in_data_is_checked_by_its_target(base):
    assert refusal(composed(base, "data.source.noise=loud")) == (
        "data.source.noise=loud is invalid: must be a number")


def test_an_interpolated_value_is_checked_as_it_resolves(base):
    # the node is resolved before the check: the line shows the value the run would get
    assert refusal(composed(base, "trainer.epochs=${tracking.experiment}")) == (
        "trainer.epochs=cifar-sweep is invalid: must be an integer")


def test_the_resolved_tree_given_is_what_is_checked(base):
    # the planner passes the config already resolved: check_types reads that, not cfg again
    cfg = base
    tree = OmegaConf.to_container(cfg, resolve=True)
    check_types(cfg, tree)
    tree["trainer"]["epochs"] = "from-the-tree"  # a section
    tree["optimizer"]["momentum"] = "from-the-tree"  # a `_target_` node
    tree["data"]["source"]["num_test"] = 1.5  # a `_target_` node nested in a section
    assert refusal(cfg, tree) == "trainer.epochs=from-the-tree is invalid: must be an integer"
    tree["trainer"]["epochs"] = 3
    assert refusal(cfg, tree) == "optimizer.momentum=from-the-tree is invalid: must be a number"
    tree["optimizer"]["momentum"] = 0.9
    assert refusal(cfg, tree) == "data.source.num_test=1.5 is invalid: must be an integer"


@pytest.mark.parametrize("node, override", [
    ("model", "model._target_=mypkg.MyNet"),
    ("optimizer", "optimizer._target_=mypkg.MyOptimizer"),
    ("lr.schedule", "lr.schedule._target_=mypkg.my_schedule"),
    ("loss", "loss._target_=mypkg.focal"),
    ("augment", "augment._target_=mypkg.MyAugment"),
    ("data.source", "data.source._target_=mypkg.MySource"),
])
def test_a_users_own_target_is_not_held_to_our_schema(base, node, override):
    # a key our classes would refuse: the user's class takes what it takes
    check_types(composed(base, override, f"+{node}.widht=2"))
    # the same key under our own `_target_` is refused: the exemption is the target alone
    with pytest.raises(UserInputError, match=rf"^{node}\.widht is not a setting here"):
        check_types(composed(base, f"+{node}.widht=2"))


def test_a_users_own_target_still_has_its_sections_checked(base):
    # only the `_target_` node is left alone; the trainer beside it is still ours
    cfg = composed(base, "model._target_=mypkg.MyNet", "trainer.epochs=ten")
    assert refusal(cfg) == "trainer.epochs=ten is invalid: must be an integer"


# --- every shipped option passes, and is covered by a schema -----------------------------------

@pytest.mark.parametrize("group, option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_passes_the_schema(options, group, option):
    cfg = options[group, option]
    check_types(cfg)
    check_types(cfg, OmegaConf.to_container(cfg, resolve=True))  # the planner's way too


@pytest.mark.parametrize("group, option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_shipped_target_has_a_schema_with_its_keys(options, group, option):
    # a `_target_` of ours without a schema (its signature unread) would skip the checks
    cfg = options[group, option]
    for path in TARGET_NODES:
        node = OmegaConf.select(cfg, path)
        if node is None or "_target_" not in node:
            continue
        target = node._target_
        assert target.startswith(OURS), (path, target)
        typed = target_schema(path, target)
        assert typed is not None, (path, target)
        allowed = {f.name for f in fields(typed)}
        assert set(node) <= allowed, (path, target, set(node) - allowed)


def test_every_section_of_the_config_has_its_keys_in_the_schema(base):
    cfg = base
    for section, kind in SECTIONS.items():
        assert section in cfg, section
        allowed = {f.name for f in fields(kind)}
        assert set(cfg[section]) <= allowed, (section, set(cfg[section]) - allowed)


# --- each default once: conf/ holds the values, the schema the keys and types ------------------

def test_no_section_restates_a_default_of_conf():
    # every leaf field MISSING: a default lives in conf/'s YAML alone (issue 43, item 6)
    def leaves(kind):
        for f in fields(kind):
            if f.default_factory is not MISSING_FACTORY:  # a nested section: its own fields
                yield from leaves(f.default_factory)
            else:
                yield f"{kind.__name__}.{f.name}", f.default
    restated = [(name, value) for kind in [*SECTIONS.values(), schema.Target]
                for name, value in leaves(kind) if value != "???"]
    assert not restated, restated


def test_a_section_key_absent_from_conf_stays_out_of_the_composed_config(base):
    # the schema is never composed: `trainer.skip_test` (a tuned trial's, set with ++) and
    # `study.paper` are not in any other run's config, so not in its hash
    assert "skip_test" not in base.trainer and "paper" not in base.study
    assert "skip_test" in {f.name for f in fields(schema.Trainer)}


@pytest.mark.parametrize("override, line", [
    # given at build time (train/loop.py's build), so not a setting of the YAML
    ("+optimizer.lr=0.1", "optimizer.lr is not a setting here; allowed: momentum, dampening, "),
    ("+optimizer.params=x", "optimizer.params is not a setting here; allowed: momentum, "),
    ("+model.num_classes=3", "model.num_classes is not a setting here; allowed: dropout"),
    ("+lr.schedule.epochs=3", "lr.schedule.epochs is not a setting here; allowed: none"),
    ("+loss.num_classes=3", "loss.num_classes is not a setting here; allowed: label_smoothing, "),
    # torch's keyword-only arguments are settings too; a union with a Tensor is its number
    ("optimizer.weight_decay=heavy", "optimizer.weight_decay=heavy is invalid: must be a number"),
    ("+optimizer.foreach=maybe", "optimizer.foreach=maybe is invalid: must be true, false or null"),
])
def test_what_the_build_gives_is_no_setting_and_torchs_types_are_read(base, override, line):
    assert refusal(composed(base, override)).startswith(line)


def test_torchs_keyword_only_arguments_are_accepted(base):
    check_types(edited(base, optimizer__maximize=True, optimizer__foreach=None))


@pytest.mark.parametrize("annotation, checked", [
    (float, float), ("float | torch.Tensor", float), ("tuple[float | torch.Tensor, float]", list[float]),
    ("tuple[float, ...]", list[float]), ("bool | None", bool | None), ("list[int] | None", list[int] | None),
    ("Iterable[torch.Tensor]", Any), ("tuple[int, str]", list[Any]), ("dict[str, float]", Any),
])
def test_an_annotation_is_read_as_yaml_can_hold_it(annotation, checked):
    import collections.abc

    import torch
    kind = eval(annotation, {"torch": torch, "Iterable": collections.abc.Iterable}) \
        if isinstance(annotation, str) else annotation
    assert schema._from_annotation(kind) == checked


def test_an_untyped_argument_takes_its_defaults_kind():
    import inspect

    def untyped(momentum=0, nesterov=False, name="x", extra=None):
        pass
    kinds = [schema._yaml_type(p) for p in inspect.signature(untyped).parameters.values()]
    assert kinds == [float, bool, str, Any]  # an int default: any number (0 stands for 0.0)


def test_a_new_optimizer_is_one_yaml_file_in_a_users_folder(tmp_path):
    """`optimizer/nadam.yaml` in a user's folder, and no Python: its keys and types are checked
    from torch.optim.NAdam's signature, by check_types (once composed) and by the command line's
    check (before)."""
    from cifar_sweep.config.override_check import problem

    (tmp_path / "optimizer").mkdir()
    (tmp_path / "optimizer" / "nadam.yaml").write_text(
        "_target_: torch.optim.NAdam\n_partial_: true\nmomentum_decay: 0.004\nweight_decay: 0.0\n")
    search = f"hydra.searchpath=[file://{tmp_path}]"
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["data=synthetic", "optimizer=nadam", search])
    check_types(cfg)
    check_types(cfg, OmegaConf.to_container(cfg, resolve=True))
    assert refusal(composed(cfg, "optimizer.momentum_decay=abc")) == (
        "optimizer.momentum_decay=abc is invalid: must be a number")
    assert refusal(composed(cfg, "+optimizer.betas=abc")).startswith(
        "optimizer.betas=abc is invalid: must be list[float]")
    assert refusal(composed(cfg, "+optimizer.momentum=0.9")).startswith(
        "optimizer.momentum is not a setting here; allowed: betas, eps, weight_decay, "
        "momentum_decay, ")
    check_types(edited(cfg, optimizer__betas=[0.9, 0.99], optimizer__weight_decay=1))
    # the command line's check reads the same signature: a misspelt key, an unset one
    folder = ["--config-dir", str(tmp_path)]
    assert problem([*folder, "optimizer=nadam", "optimizer.momentum_decy=0.1"]).startswith(
        "optimizer.momentum_decy: no such setting in optimizer=nadam (did you mean "
        "optimizer.momentum_decay?)")
    assert problem([*folder, "optimizer=nadam", "optimizer.eps=1e-7"]).startswith(
        "optimizer.eps: optimizer=nadam does not set eps; add it with +optimizer.eps=<value>")
    assert problem([*folder, "optimizer=nadam", "+optimizer.eps=1e-7"]) is None
