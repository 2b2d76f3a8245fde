"""Every job's config of a sweep, without a full Hydra composition per job.

Hydra composes a job in two steps: the defaults list (the config groups chosen: `model=...`,
`ablation=...`) and then the plain value overrides (`lr.value=0.01`) applied to the composed
config (`ConfigLoaderImpl._apply_overrides_to_config`: hydra_private.py). Here the first step
runs once per distinct choice of groups (most sweeps: once), and the second in memory, with
Hydra's own function. A
leaf changed to a plain value is changed in place and put back after (a copy of the config costs
more than the rest of a job's checks); anything else (adding or deleting keys, dict or list
values) works on a copy. tests/test_sweep_ahead.py checks the result against Hydra's composition.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from omegaconf import DictConfig, OmegaConf, open_dict

from cifar_sweep.hydra_private import apply_overrides


class JobConfigs:
    """`compose(group_overrides)`: Hydra's composition of the config with these group choices
    (and the sweep's own hydra overrides), with its `hydra` node (the groups' choices)."""

    def __init__(self, compose: Callable[[list[str]], DictConfig], config_loader) -> None:
        self._compose = compose
        self._repository = config_loader.repository
        self._parser = OverridesParser.create(config_loader=config_loader)
        self._bases: dict[tuple[str, ...], tuple[DictConfig, dict[str, str]]] = {}
        self._lines: dict[str, tuple[str, Override]] = {}

    def _split(self, overrides: list[str]) -> tuple[list[str], list[Override]]:
        """(group choices, value overrides of the job's config) as Hydra's defaults list splits
        them; `hydra.*` values concern the launcher, not the job's config."""
        groups, values = [], []
        for line in overrides:
            kind, override = self._parsed(line)
            if kind == "group":
                groups.append(line)  # the override's input_line
            elif kind == "value":
                values.append(override)
        return groups, values

    def _parsed(self, line: str) -> tuple[str, Override]:
        """("group" | "value" | "hydra", the parsed override), parsed once per distinct line: a
        sweep's jobs share most of their overrides, and Hydra's grammar parses one in about
        0.4 ms (of 1,000 jobs' 11 overrides each, 8 s under cProfile before)."""
        if line not in self._lines:
            override = self._parser.parse_overrides([line])[0]
            key = override.key_or_group
            if isinstance(override.value(), dict) or not self._repository.group_exists(key):
                kind = "hydra" if key.startswith("hydra.") else "value"
            else:
                kind = "group"
            if isinstance(override.value(), (dict, list)):  # a value the config may hold: fresh
                return kind, override
            self._lines[line] = (kind, override)
        return self._lines[line]

    def _base(self, groups: list[str]) -> tuple[DictConfig, dict[str, str]]:
        key = tuple(groups)
        if key not in self._bases:
            composed = self._compose(groups)
            choices = {k: str(v) for k, v in composed.hydra.runtime.choices.items()}
            with open_dict(composed):
                del composed["hydra"]
            self._bases[key] = (composed, choices)
        return self._bases[key]

    @contextmanager
    def applied(self, overrides: list[str]) -> Iterator[tuple[DictConfig, dict[str, str]]]:
        """(the job's config, as the job gets it, without `hydra`; the groups' choices). The
        config is valid inside the `with` only: it may be the shared base, changed in place."""
        groups, values = self._split(overrides)
        base, choices = self._base(groups)
        saved = _in_place(base, values)
        if saved is None:  # not a plain leaf change: on a copy
            cfg = copy.deepcopy(base)
            apply_overrides(values, cfg)
            yield cfg, choices
            return
        try:
            apply_overrides(values, base)
            yield base, choices
        finally:
            for parent, leaf, raw in reversed(saved):
                parent[leaf] = raw


def _in_place(cfg: DictConfig, values: list[Override]):
    """[(parent node, key, raw value)] to put back after changing these leaves in place, or None
    where an override is not a plain value for an existing leaf (then the job needs a copy)."""
    saved = []
    for override in values:
        if override.is_delete() or override.is_add() or override.is_force_add():
            return None
        if isinstance(override.value(), (dict, list)):
            return None
        parent_key, _, leaf = override.key_or_group.rpartition(".")
        parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
        if not isinstance(parent, DictConfig) or leaf not in parent:
            return None
        node = parent._get_node(leaf)
        if node is None or isinstance(node, DictConfig) or OmegaConf.is_list(node):
            return None
        saved.append((parent, leaf, node._value()))  # raw: an interpolation stays one
    return saved
