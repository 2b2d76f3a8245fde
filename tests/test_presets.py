"""cifar_sweep.report.presets: which preset studies exist (ours in conf/ablation/ and a user's
folder's), how a preset is composed from the report's overrides, and the `TableSpec` and the
experiment -> study map read from it. Each preset's expected values are read from its yaml file
directly, not through Hydra, so a composition that loses or mixes them up shows."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

from cifar_sweep.config.config_dirs import config_dir_args
from cifar_sweep.report import presets
from conftest import ROOT

# a study of the user's own, as docs/own-model.md writes one (no paper: the report has no numbers)
WIDTH = """\
# @package _global_
study:
  name: width
  baseline: trainer.batch_size=64
tracking:
  experiment: ablation-width
hydra:
  sweeper:
    params:
      trainer.batch_size: 32,64
"""


def searchpath(*folders: Path) -> str:
    """The override `--config-dir` becomes, as the commands that read presets make it."""
    args = [a for folder in folders for a in ("--config-dir", str(folder))]
    rest, [override] = config_dir_args(args)
    assert rest == []
    return override


@pytest.fixture(scope="module")
def user_conf(tmp_path_factory) -> Path:
    """A user's config folder with a study of its own, width."""
    conf = tmp_path_factory.mktemp("myproject") / "conf"
    (conf / "ablation").mkdir(parents=True)
    (conf / "ablation" / "width.yaml").write_text(WIDTH)
    return conf


def folder_with(tmp_path: Path, *names: str) -> Path:
    """Another user folder, holding studies of these names."""
    conf = tmp_path / "other"
    (conf / "ablation").mkdir(parents=True)
    for name in names:
        (conf / "ablation" / f"{name}.yaml").write_text(WIDTH.replace("width", name))
    return conf


def yaml_of(name: str) -> DictConfig:
    return OmegaConf.load(ROOT / "conf" / "ablation" / f"{name}.yaml")


# --- which presets exist -------------------------------------------------------------------------

def test_the_presets_are_read_from_this_checkouts_conf_folder():
    # conf/ is found from a source file's place, which moved with the subpackages: the lists
    # must be this checkout's files, in order
    assert presets.STUDIES == sorted(p.stem for p in (ROOT / "conf" / "ablation").glob("*.yaml"))
    assert presets.SEARCHES == sorted(p.stem for p in (ROOT / "conf" / "hpo").glob("*.yaml"))
    assert {"lr", "optimizer", "arch"} <= set(presets.STUDIES) and "modifiednet" in presets.SEARCHES


def test_studies_without_a_users_folder_are_ours_only():
    # an override that is not a search path names no folder
    assert presets.studies() == presets.STUDIES
    assert presets.studies(["trainer.epochs=1", "ablation=lr"]) == presets.STUDIES


def test_studies_add_the_users_own_in_order(user_conf):
    assert presets.studies([searchpath(user_conf)]) == sorted({*presets.STUDIES, "width"})


def test_a_users_study_named_as_ours_is_listed_once(tmp_path):
    names = presets.studies([searchpath(folder_with(tmp_path, "lr"))])
    assert names == presets.STUDIES  # one `lr`: Hydra composes one preset of a name


def test_studies_read_every_folder_of_the_search_path(user_conf, tmp_path):
    # one override naming both folders, as two --config-dir make it
    names = presets.studies([searchpath(user_conf, folder_with(tmp_path, "depth"))])
    assert names == sorted({*presets.STUDIES, "width", "depth"})


# --- composing a preset ----------------------------------------------------------------------------

def test_a_preset_is_composed_with_the_reports_overrides_but_not_its_hydra_settings():
    # a sweep's own hydra.* settings passed on from its command line are not the preset's
    cfg = presets.compose_preset("ablation", "lr", ["tracking.experiment=elsewhere",
                                                    "hydra.sweeper.params.model=origin_net"])
    assert cfg.tracking.experiment == "elsewhere"
    assert list(cfg.hydra.sweeper.params) == list(yaml_of("lr").hydra.sweeper.params)


def test_a_search_keeps_its_own_hydra_settings():
    # hydra.sweeper.* is a search's identity (its study name, its trials), so it is kept
    cfg = presets.compose_preset("hpo", "modifiednet", ["hydra.sweeper.n_trials=5"])
    assert cfg.hydra.sweeper.n_trials == 5
    assert cfg.tracking.experiment == "hpo-modifiednet"


def test_a_users_preset_composes_through_the_search_path_override(user_conf):
    # the search path is a hydra.* override too, yet the one that must be kept
    cfg = presets.compose_preset("ablation", "width", [searchpath(user_conf)])
    assert cfg.tracking.experiment == "ablation-width"


# --- the TableSpec of a preset ---------------------------------------------------------------------

def test_our_study_carries_the_presets_experiment_baseline_paper_and_axes():
    s = presets.study("lr", [])
    lr = yaml_of("lr")
    assert (s.name, s.experiment, s.baseline) == ("lr", lr.tracking.experiment, lr.study.baseline)
    # a plain dict (the report writes and compares it), equal to the yaml's numbers
    assert type(s.paper) is dict and s.paper == OmegaConf.to_container(lr.study.paper)
    assert s.axes == list(lr.hydra.sweeper.params)
    assert (s.sweep, s.where, s.kind) == (None, {}, "Ablation")
    assert s.hint == "; run `make ablation-lr` first"


def test_a_study_takes_the_callers_baseline_sweep_and_keys_over_the_presets():
    s = presets.study("arch", [], baseline="model=resnet18", sweep="abc123",
                      where={"trainer.seed": "0"})
    assert (s.baseline, s.sweep, s.where) == ("model=resnet18", "abc123", {"trainer.seed": "0"})
    assert s.axes == ["model"]


def test_a_users_study_has_no_paper_and_its_hint_names_the_config_folder(user_conf):
    s = presets.study("width", [searchpath(user_conf)])
    assert (s.experiment, s.baseline, s.axes) == ("ablation-width", "trainer.batch_size=64",
                                                  ["trainer.batch_size"])
    assert s.paper is None
    assert s.hint == "; run `make ablation-width` first (with CONFIG_DIR=<your config folder>)"


# --- experiment -> study ---------------------------------------------------------------------------

def test_each_experiment_maps_to_the_preset_that_logs_there(user_conf):
    mapping = presets.by_experiment([searchpath(user_conf)])
    # ours read straight from their yaml files
    expected = {str(yaml_of(n).tracking.experiment): n for n in presets.STUDIES}
    assert len(expected) == len(presets.STUDIES)  # else the map below could not tell them apart
    assert mapping == {**expected, "ablation-width": "width"}
