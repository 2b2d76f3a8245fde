"""The preset studies of `conf/ablation/`, and of a user's own config folder (`--config-dir DIR`:
`DIR/ablation/<name>.yaml`), as `TableSpec` values: composed once with Hydra, so that the report, the
adaptive seed budget and a sweep's end read a preset the same way."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from cifar_sweep.config.config_dirs import CONF, SEARCH_PATH, user_dirs
from cifar_sweep.report.studies import TableSpec

STUDIES = sorted(p.stem for p in (CONF / "ablation").glob("*.yaml"))
SEARCHES = sorted(p.stem for p in (CONF / "hpo").glob("*.yaml"))


def studies(overrides: Sequence[str] = ()) -> list[str]:
    """Our presets and those of the user's folders named by a `hydra.searchpath` override."""
    names = set(STUDIES)
    for folder in user_dirs(list(overrides)):
        names.update(p.stem for p in (folder / "ablation").glob("*.yaml"))
    return sorted(names)


def compose_preset(group: str, name: str, overrides: list[str]) -> DictConfig:
    if group != "hpo":  # a search's settings (hydra.sweeper.study_name=...) are its own
        overrides = [o for o in overrides
                     if not o.startswith("hydra.") or o.startswith(SEARCH_PATH)]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=[f"{group}={name}", *overrides],
                       return_hydra_config=True)


def study(name: str, overrides: list[str], baseline: str | None = None, sweep: str | None = None,
          where: dict[str, str] | None = None) -> TableSpec:
    cfg = compose_preset("ablation", name, overrides)
    paper = cfg.study.get("paper")
    axes, baseline = list(cfg.hydra.sweeper.get("params") or {}), baseline or cfg.study.baseline
    if cfg.study.get("tune"):  # its seed runs name their arm as +tuned_<axis>=<arm>
        from cifar_sweep.report.tuning import arm_axes

        axes, baseline = arm_axes(axes, baseline)
    return TableSpec(name=name, experiment=str(cfg.tracking.experiment),
                 baseline=baseline,
                 paper=cast(dict, OmegaConf.to_container(paper)) if paper else None,
                 sweep=sweep, where=where or {},
                 axes=axes,
                 hint=f"; run `make ablation-{name}` first"
                 + ("" if name in STUDIES else " (with CONFIG_DIR=<your config folder>)"))


def by_experiment(overrides: list[str]) -> dict[str, str]:
    """Experiment name -> the preset study that logs there."""
    return {str(compose_preset("ablation", s, overrides).tracking.experiment): s
            for s in studies(overrides)}
