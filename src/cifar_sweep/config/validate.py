"""Checks on a composed config (types and keys, then ranges): one clear line per problem, before
any run exists."""

from __future__ import annotations

import json
import re

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from cifar_sweep.config.schema import PRECISIONS, check_types
from cifar_sweep.errors import UserInputError
from cifar_sweep.train.runtime import resolve_device

DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")


def _number(cfg: DictConfig, key: str):
    value = cfg
    for part in key.split("."):
        value = value[part]
    return value


def check_config(cfg: DictConfig, tree: dict | None = None,
                 sources: set[str] | None = None) -> None:
    """Raise UserInputError naming the first bad value. A planner checking many jobs passes
    `tree` (the config resolved to plain values, see schema.check_types) and `sources` (the data
    sources already checked, as JSON: each is instantiated and checked once, not once a job)."""
    if "root" in cfg.data.keys() and OmegaConf.is_missing(cfg.data, "root"):
        raise UserInputError(f"data.root is missing: data={cfg.data.name} needs the folder to read, "
                             f"e.g. data.root=/path/to/cifar10-jpeg")
    check_types(cfg, tree)  # types and keys first: the ranges below assume them
    def require(key: str, ok, allowed: str) -> None:
        value = _number(cfg, key)
        try:
            fine = ok(value)
        except TypeError:
            fine = False
        if not fine:
            raise UserInputError(f"{key}={value} is invalid: {allowed}")

    is_int = lambda v: isinstance(v, int) and not isinstance(v, bool)
    is_num = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
    require("lr.value", lambda v: is_num(v) and v > 0, "must be a number > 0")
    require("trainer.epochs", lambda v: is_int(v) and v >= 1, "must be an integer >= 1")
    require("trainer.batch_size", lambda v: is_int(v) and v >= 1, "must be an integer >= 1")
    require("trainer.eval_batch_size", lambda v: is_int(v) and v >= 1, "must be an integer >= 1")
    require("trainer.val_fraction", lambda v: is_num(v) and 0 < v < 1,
            "must be a number strictly between 0 and 1")
    require("trainer.seed", is_int, "must be an integer")
    require("trainer.num_threads", lambda v: v is None or (is_int(v) and v >= 1),
            "must be null (automatic) or an integer >= 1")
    require("trainer.early_stop.patience", lambda v: v is None or (is_int(v) and v >= 1),
            "must be null (off) or an integer >= 1 (epochs without improvement)")
    require("trainer.early_stop.min_delta", lambda v: is_num(v) and 0 <= v < 1,
            "must be a number >= 0 and < 1 (validation accuracy, 0-1)")
    require("trainer.precision", lambda v: v in PRECISIONS, f"allowed: {', '.join(PRECISIONS)}")
    require("trainer.device", lambda v: bool(DEVICE_PATTERN.match(str(v))),
            "allowed: auto, cpu, cuda, cuda:N, mps")
    resolve_device(str(cfg.trainer.device))
    source = (json.dumps(tree["data"]["source"], sort_keys=True, default=str)
              if sources is not None and tree is not None else None)
    if sources is None or source is None or source not in sources:
        instantiate(cfg.data.source).check()
        if sources is not None and source is not None:
            sources.add(source)
