"""A model from its config, ours or the user's: only the arguments its constructor accepts, and
a forward pass on one batch of the data before any run, so that a model that cannot take the
data's image size, channels or class count is one line, not a traceback and a FAILED run.

Why filter the arguments: a config group option inherits keys from the option it overrides
(`model._target_=mynet.MyNet` keeps modified_net's `dropout`), and a user's constructor need not
take `num_classes` under that name. Our models take every key their configs hold, so for them
nothing changes, nor does any hash: the job's config keeps every key, only what is passed to
the constructor is cut (`for_build`), and `train.loop.build`, part of every run's code version,
is not touched.
"""

from __future__ import annotations

import copy
import functools
import inspect
import logging
from typing import cast

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from cifar_sweep.errors import UserInputError

log = logging.getLogger("cifar_sweep")

OWN_MODEL_DOC = "docs/own-model.md"
HYDRA_KEYS = ("_target_", "_partial_", "_args_", "_recursive_", "_convert_")


def _reason(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [""])[0]
    return text[:200] or type(exc).__name__


def _locate(target: str):
    from cifar_sweep.hydra_private import locate as hydra_locate

    try:
        return hydra_locate(target)
    except Exception as exc:  # ImportError, AttributeError, or whatever the module raises
        cause = exc.__cause__ or exc
        raise UserInputError(
            f"model._target_={target} cannot be imported ({type(cause).__name__}: "
            f"{_reason(cause)}); the folder holding its module must be on PYTHONPATH, or its "
            f"package installed ({OWN_MODEL_DOC})") from None


def _accepted(target: str) -> set[str] | None:
    """The keyword arguments `target`'s constructor takes; None where it takes any (**kwargs)
    or its signature cannot be read (a builtin)."""
    try:
        params = inspect.signature(_locate(target)).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params
            if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}


def arguments(model_cfg: DictConfig) -> tuple[dict, list[str]]:
    """(the config's keys the constructor takes, those it does not take and so does not get).
    It must take `num_classes`: the data decides it (train.loop.build passes it)."""
    node = cast(dict, OmegaConf.to_container(model_cfg, resolve=True))
    target = str(node.get("_target_", ""))
    accepted = _accepted(target)
    if accepted is None:
        return node, []
    if "num_classes" not in accepted:
        raise UserInputError(
            f"model {target} takes no num_classes argument (it takes: "
            f"{', '.join(sorted(accepted)) or 'nothing'}); the data decides the number of "
            f"classes: add num_classes to its constructor ({OWN_MODEL_DOC})")
    kept = {k: v for k, v in node.items() if k in HYDRA_KEYS or k in accepted}
    return kept, [k for k in node if k not in kept]


def for_build(cfg: DictConfig) -> DictConfig:
    """`cfg` with its model node cut to what the constructor takes, for `train.loop.build`; the
    job's own config (and so its hashes and logged params) keeps every key."""
    kept, dropped = arguments(cfg.model)
    if not dropped:
        return cfg
    out = copy.deepcopy(cfg)
    with open_dict(out):
        out.model = OmegaConf.create(kept)
    return out


def build_model(model_cfg: DictConfig, num_classes: int) -> nn.Module:
    """The model with the config's arguments that its constructor takes."""
    kept, _ = arguments(model_cfg)
    return instantiate(OmegaConf.create(kept), num_classes=num_classes)


def check_job(cfg: DictConfig, dataset) -> None:
    """`check_model` for a job's model on its decoded dataset."""
    check_model(cfg.model, str(cfg.data.name), tuple(dataset.train.images.shape[1:]),
                len(dataset.classes))


def check_model(model_cfg: DictConfig, data_name: str, image_shape: tuple[int, ...],
                num_classes: int) -> None:
    """One line (UserInputError) where the model cannot be built, cannot take a batch of
    `image_shape` images, or gives other than `num_classes` outputs per image. Once per model
    config and data shape in a process: a sweep's jobs share the check."""
    _check(OmegaConf.to_yaml(model_cfg, resolve=True), data_name, tuple(image_shape), num_classes)


@functools.lru_cache
def _check(model_yaml: str, data_name: str, image_shape: tuple[int, ...], num_classes: int) -> None:
    model_cfg = cast(DictConfig, OmegaConf.create(model_yaml))  # a model's mapping, as given
    target = str(model_cfg.get("_target_"))
    kwargs, dropped = arguments(model_cfg)
    if dropped:
        log.warning("model %s takes no %s: not passed to it (it takes: %s)", target,
                    ", ".join(dropped), ", ".join(sorted(_accepted(target) or ())) or "nothing")
    shown = " ".join(f"{k}={v}" for k, v in kwargs.items() if k not in HYDRA_KEYS)
    try:
        model = instantiate(OmegaConf.create(kwargs), num_classes=num_classes)
    except Exception as exc:
        cause = exc.__cause__ or exc  # Hydra wraps the constructor's error
        raise UserInputError(f"model {target} cannot be built with {shown or 'no arguments'} "
                             f"num_classes={num_classes}: "
                             f"{type(cause).__name__}: {_reason(cause)}") from None
    shape = "x".join(str(n) for n in image_shape)
    # two images (BatchNorm in train mode refuses one), in eval mode: no statistics change, and
    # this model is thrown away anyway; the CPU, so that no GPU is touched before its job
    batch = torch.zeros(2, *image_shape)
    with torch.no_grad():
        try:
            out = model.eval()(batch)
        except Exception as exc:
            raise UserInputError(
                f"model {target} cannot take data={data_name}'s images of {shape} (channels x "
                f"height x width): {type(exc).__name__}: {_reason(exc)}; choose a model that "
                f"takes that size, or another data.image_size") from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, num_classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UserInputError(
            f"model {target} gives {got} for a batch of 2 images of {shape}; data={data_name} "
            f"has {num_classes} classes, so (2, {num_classes}) is needed: take num_classes in "
            f"the constructor and end with that many outputs")
