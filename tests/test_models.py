import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from cifar_sweep.models import parameter_count
from conftest import ROOT


def build(name: str) -> torch.nn.Module:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"model={name}"])
    return instantiate(cfg.model, num_classes=10)


@pytest.mark.parametrize("name, expected", [
    ("origin_net", 48_252),
    ("modified_net", 35_730),
    ("modified_net_ds", 33_464),
])
def test_parameter_counts(name, expected):
    assert parameter_count(build(name)) == expected


@pytest.mark.parametrize("name", ["origin_net", "modified_net", "modified_net_ds", "resnet18",
                                  "mobilenet_v2"])
def test_output_shape(name):
    model = build(name).eval()
    with torch.no_grad():
        assert model(torch.randn(3, 3, 32, 32)).shape == (3, 10)


def test_modified_net_ds_is_depthwise_separable():
    convs = [m for m in build("modified_net_ds").modules() if isinstance(m, torch.nn.Conv2d)]
    depthwise = [c for c in convs if c.groups == c.in_channels and c.kernel_size == (3, 3)]
    pointwise = [c for c in convs if c.kernel_size == (1, 1)]
    assert len(depthwise) == 3 and len(pointwise) == 3
