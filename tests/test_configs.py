"""Every option of every config group, and every preset, composes, passes the value checks and
builds its parts: a broken option fails here in seconds, not in a user's sweep."""

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from cifar_sweep.config.validate import check_config
from cifar_sweep.errors import UserInputError
from conftest import ROOT

CONF = ROOT / "conf"
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name != "hydra")
OPTIONS = [(g, o.stem) for g in GROUPS for o in sorted((CONF / g).glob("*.yaml"))]
LAUNCHERS = sorted(p.stem for p in (CONF / "hydra" / "launcher").glob("*.yaml"))


def test_every_group_is_listed_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    for group in GROUPS:
        assert f"| `{group}` |" in readme, group


@pytest.mark.parametrize("group, option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes_checks_and_builds(group, option, tmp_path):
    prefix = "+" if group == "preset_optimizer" else ""  # not in the defaults list: added
    overrides = [f"{prefix}{group}={option}", "data=synthetic", "trainer.epochs=1"]
    if group == "data" and option != "synthetic":
        (tmp_path / "train" / "a").mkdir(parents=True)
        (tmp_path / "test" / "a").mkdir(parents=True)
        overrides = [f"data={option}", f"data.root={tmp_path}"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    if group != "data":
        check_config(cfg)
    model = instantiate(cfg.model, num_classes=10)
    optimizer = instantiate(cfg.optimizer)(model.parameters(), lr=cfg.lr.value)
    instantiate(cfg.lr.schedule)(optimizer, cfg.trainer.epochs, 10)
    instantiate(cfg.loss)(torch.arange(10), 10)
    augment = instantiate(cfg.augment)
    images = torch.rand(4, 3, 32, 32)
    assert augment(images, torch.Generator().manual_seed(0)).shape == images.shape
    instantiate(cfg.data.source)
    with torch.no_grad():
        assert model.eval()(images).shape == (4, 10)


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_launcher_composes(launcher):
    if launcher == "ray_tasks":  # it extends the plugin's own config
        pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason="the [ray] extra")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_


@pytest.mark.parametrize("override, message", [
    ("trainer.epochs=ten", "trainer.epochs=ten is invalid: must be an integer"),
    ("trainer.epochs=2.5", "trainer.epochs=2.5 is invalid: must be an integer"),
    ("trainer.compile=maybe", "trainer.compile=maybe is invalid: must be true or false"),
    ("trainer.num_threads=x", "trainer.num_threads=x is invalid: must be an integer or null"),
    ("lr.value=abc", "lr.value=abc is invalid: must be a number"),
    ("data.source.num_train=1.5", "data.source.num_train=1.5 is invalid: must be an integer"),
    ("+tracking.colour=red", "tracking.colour is not a setting here; allowed: uri, experiment, figures"),
    ("+optimizer.betas=[0.9,0.99]", "optimizer.betas is not a setting here; allowed: momentum"),
])
def test_schema_names_the_bad_key_and_what_it_must_be(override, message):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["data=synthetic", override])
    with pytest.raises(UserInputError) as caught:
        check_config(cfg)
    assert str(caught.value).startswith(message), str(caught.value)
