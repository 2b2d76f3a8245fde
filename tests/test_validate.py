"""validate.check_config in-process: every bad value the entrypoint test (test_errors.py) sends
through `src/train.py` in full (`make test-full`), each refused with its one line; here in
milliseconds, so that the default suite checks every range while running the entrypoint for a
few."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from cifar_sweep.config.validate import check_config
from cifar_sweep.errors import UserInputError
from conftest import ROOT

CONF = ROOT / "conf"


@pytest.mark.parametrize("overrides, message", [
    (["lr.value=0"], "lr.value=0 is invalid: must be a number > 0"),
    (["lr.value=-0.1"], "lr.value=-0.1 is invalid: must be a number > 0"),
    (["trainer.epochs=0"], "trainer.epochs=0 is invalid: must be an integer >= 1"),
    (["trainer.batch_size=0"], "trainer.batch_size=0 is invalid: must be an integer >= 1"),
    (["trainer.val_fraction=1.0"], "trainer.val_fraction=1.0 is invalid: must be a number strictly between 0 and 1"),
    (["trainer.val_fraction=0"], "trainer.val_fraction=0 is invalid"),
    (["trainer.device=tpu"], "trainer.device=tpu is invalid: allowed: auto, cpu, cuda, cuda:N, mps"),
    (["data=image_folder"], "data.root is missing"),
    (["optimizer.momentum=abc"], "optimizer.momentum=abc is invalid: must be a number"),
])
def test_a_bad_value_is_refused_with_its_line(overrides, message):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    with pytest.raises(UserInputError) as caught:
        check_config(cfg)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_the_defaults_pass():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        check_config(compose("config"))
