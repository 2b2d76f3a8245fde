"""Run identity: the hash of everything in a job's config that can change its result, and a job's
`Identity` (its config and setting hashes with the code version that decides it).

Two jobs with one `config_hash` and one code version (`code_version.py`) are the same
experiment: a finished one is not trained again and an interrupted one is continued (see
`lifecycle.py`). The data path is replaced by the data's content fingerprint, so the same images
at another path are the same experiment; `trainer.device` and `trainer.precision` by what the job
resolved them to (cpu/cuda, fp32/bf16/fp16). A *setting* is the same without the seed: the runs of
one setting are one row of a table, a run per seed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import cast

from omegaconf import DictConfig, OmegaConf

from cifar_sweep.plan import code_version
from cifar_sweep.tracking import tags as t

# Settings that cannot change a run's result, left out of its hash. Keep this the one list.
NOT_RESULT_KEYS = (
    "tracking",                 # where the run is logged
    "study",                    # which table it belongs to: the lr, optimizer and loss studies
                                # share their baseline, which then trains once for all three
    "checkpoint",               # where and whether progress is saved
    "optuna_trial",             # which search trial reports it: the same config is the same run
    "data.title",               # how tables name the data
    "data.root",                # replaced by the data fingerprint
    "data.cache_dir",
    "data.download",
    "data.source",              # the source's arguments: the fingerprint covers what they decode
    "data.skip_corrupt",        # what it skipped is in the fingerprint
    "data.subset",              # a subset's fingerprint names it and its images (data/subsets.py)
    "data.test_subset",
    "trainer.device",           # replaced by the device type the job resolved (cpu, cuda, mps)
    "trainer.num_threads",
    "trainer.jobs_per_gpu",
    "trainer.eval_batch_size",  # evaluation freezes BatchNorm: the batch size changes nothing
    "trainer.rerun",
    "trainer.reuse_other_code",
)


# Sections that decide a result only when switched on, left out of the hash while their switch
# is null (off, the default): adding them changed no finished config's hash.
OFF_WHEN_NULL = {"trainer.early_stop": "patience"}


def _drop_switched_off(tree: dict) -> None:
    for section, switch in OFF_WHEN_NULL.items():
        *parents, leaf = section.split(".")
        node: dict | None = tree
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get(leaf), dict) \
                and node[leaf].get(switch) is None:
            del node[leaf]


def _drop(tree: dict, dotted: str) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for key in parents:
        child = node.get(key)
        if not isinstance(child, dict):
            return
        node = child
    node.pop(leaf, None)


SEED_KEY = "trainer.seed"  # what tells the runs of one setting apart


def result_config(cfg: DictConfig, data_fingerprint: str, device_type: str,
                  precision: str) -> dict:
    """The resolved config that decides the result, as a plain dict: `precision` is the one the
    job resolved `trainer.precision` to (`auto` is fp32 on one GPU and bf16 on another)."""
    return result_tree(cast(dict, OmegaConf.to_container(cfg, resolve=True)), data_fingerprint,
                       device_type, precision)


def result_tree(tree: dict, data_fingerprint: str, device_type: str, precision: str) -> dict:
    """result_config from the resolved config as a plain dict (changed in place)."""
    for key in NOT_RESULT_KEYS:
        _drop(tree, key)
    _drop_switched_off(tree)
    tree["trainer"]["precision"] = precision
    tree["data_fingerprint"] = data_fingerprint
    tree["device_type"] = device_type
    return tree


def _digest(tree: dict) -> str:
    canonical = json.dumps(tree, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def config_hash(cfg: DictConfig, data_fingerprint: str, device_type: str, precision: str) -> str:
    return _digest(result_config(cfg, data_fingerprint, device_type, precision))


def setting_hash(cfg: DictConfig, data_fingerprint: str, device_type: str, precision: str) -> str:
    """The config hash without the seed: every seed of one setting shares it."""
    tree = result_config(cfg, data_fingerprint, device_type, precision)
    _drop(tree, SEED_KEY)
    return _digest(tree)


def hashes(tree: dict, data_fingerprint: str, device_type: str, precision: str) -> tuple[str, str]:
    """(config hash, setting hash) from the resolved config as a plain dict, resolved once
    (a sweep's jobs planned ahead); `tree` is changed in place."""
    tree = result_tree(tree, data_fingerprint, device_type, precision)
    config = _digest(tree)
    _drop(tree, SEED_KEY)
    return config, _digest(tree)


@dataclass(frozen=True)
class Identity:
    """Which experiment a job is: its config and setting hashes and the code that decides it."""

    config_hash: str
    setting_hash: str
    code: dict[str, str]

    @property
    def code_version(self) -> str:
        return code_version.version(self.code)

    def tags(self) -> dict[str, str]:
        import torch

        return {t.CONFIG_HASH: self.config_hash, t.SETTING_HASH: self.setting_hash,
                t.CODE_VERSION: self.code_version, t.TORCH_VERSION: torch.__version__,
                **{t.CODE_PART + part: value for part, value in self.code.items()}}


def identify(cfg: DictConfig, fingerprint: str, device_type: str, precision: str) -> Identity:
    return Identity(config_hash(cfg, fingerprint, device_type, precision),
                    setting_hash(cfg, fingerprint, device_type, precision),
                    code_version.parts(cfg))


def identify_ahead(cfg: DictConfig, fingerprint: str) -> Identity:
    """The identity a job of this config will have, from outside the job (the plan, the sweep's
    free-space check): its device and precision resolved as the job will, taking no GPU slot."""
    from cifar_sweep.train import runtime

    device = runtime.resolve_device(str(cfg.trainer.device))
    return identify(cfg, fingerprint, device.type,
                    runtime.resolve_precision(str(cfg.trainer.precision), device))
