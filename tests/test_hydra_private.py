"""hydra_private.py: Hydra's private API is used in that module only, and only with the Hydra
releases it was tested with, so that an upgrade fails here, loudly, and not in a sweep."""

from __future__ import annotations

import re
import tomllib

import hydra

from cifar_sweep import hydra_private
from conftest import ROOT


def test_the_installed_hydra_is_a_release_the_private_uses_were_tested_with():
    release = ".".join(hydra.__version__.split(".")[:2])
    assert release in hydra_private.TESTED, (
        f"hydra-core {hydra.__version__}: src/cifar_sweep/hydra_private.py was tested with "
        f"{hydra_private.TESTED} only; check each private use against this release, then add it")


def test_pyproject_allows_only_the_tested_releases():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (spec,) = [d for d in deps if d.startswith("hydra-core")]
    low, high = re.fullmatch(r"hydra-core>=(\d+\.\d+),<(\d+\.\d+)", spec).groups()
    major, minor = map(int, low.split("."))
    assert high == f"{major}.{minor + 1}" and low in hydra_private.TESTED, spec


def test_no_other_module_imports_hydras_private_api():
    users = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "src").rglob("*.py")
                   if "hydra._internal" in p.read_text() and p.name != "hydra_private.py")
    assert users == []


def test_each_private_use_is_what_its_callers_expect():
    # the sweeper hook, the overrides function and the locator, as the callers use them
    assert callable(hydra_private.BasicSweeper.sweep)
    assert callable(hydra_private.BasicSweeper.split_arguments)
    assert hydra_private.locate("cifar_sweep.models.OriginNet").__name__ == "OriginNet"
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"lr": {"value": 0.005}})
    overrides = OverridesParser.create().parse_overrides(["lr.value=0.01"])
    hydra_private.apply_overrides(overrides, cfg)
    assert cfg.lr.value == 0.01
