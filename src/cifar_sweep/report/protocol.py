"""Whether a table's runs trained at the report's protocol, for its caption: conf/'s defaults are
the report's (ModifiedNet, batch 64, SGD 0.005 with momentum 0.9, a constant rate, cross-entropy,
flip + rotation up to 10 degrees, the 80/20 split: conf/config.yaml), so the protocol is read
from them here, never written twice.

A table is at the protocol when the settings its runs share (the selection's fixed settings)
agree with conf's defaults on every protocol key they hold (the keys a study varies, such as
`lr.value` in the lr study, are not fixed, so they are its own), and hold the keys the report's
studies never vary: the batch size, the split and the augmentation."""

from __future__ import annotations

from functools import cache

# the config groups and trainer keys that make the report's protocol
GROUPS = ("model", "optimizer", "lr", "loss", "augment")
TRAINER = ("trainer.batch_size", "trainer.val_fraction")
# what none of the report's studies varies: a table must show them to claim the protocol
ALWAYS = ("trainer.batch_size", "trainer.val_fraction", "augment._target_")


@cache
def report_protocol() -> dict[str, str]:
    """conf's defaults on the protocol keys, as a run logs them (params: strings)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from cifar_sweep.config.config_dirs import CONF
    from cifar_sweep.tracking.runs import flatten

    if GlobalHydra.instance().is_initialized():  # inside src/train.py (a sweep's table at its
        cfg = compose("config")                   # end): Hydra composes from its conf/ already
    else:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("config")
    flat = flatten(OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]
    return {k: v for k, v in flat.items()
            if k in TRAINER or k.split(".", 1)[0] in GROUPS}


def at_report_protocol(fixed: dict[str, str]) -> bool:
    """Whether the runs' shared settings `fixed` (key -> value) are the report's protocol."""
    protocol = report_protocol()
    return (all(k in fixed for k in ALWAYS)
            and all(str(fixed[k]) == v for k, v in protocol.items() if k in fixed))
