"""Which code changes change a run's identity: the package copied, edited, and hashed again."""

import json
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

PARTS = """
import json, sys
from hydra import compose, initialize_config_dir
from cifar_sweep.plan import code_version
out = {}
with initialize_config_dir(config_dir=sys.argv[1], version_base="1.3"):
    for model in ("modified_net", "origin_net"):
        cfg = compose("config", overrides=[f"model={model}", "data=synthetic"])
        out[model] = code_version.parts(cfg)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    return parts_of(copy(tmp_path_factory.mktemp("original")))


def copy(folder):
    shutil.copytree(ROOT / "src", folder / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    return folder


def parts_of(folder):
    proc = subprocess.run([sys.executable, "-c", PARTS, str(ROOT / "conf")], capture_output=True,
                          text=True, env={"PYTHONPATH": str(folder / "src"), "PATH": "/usr/bin:/bin"},
                          check=True)
    return json.loads(proc.stdout)


def edit(folder, module, old, new):
    path = folder / "src" / "cifar_sweep" / module
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def changed(before, after):
    return {model: sorted(k for k in after[model] if after[model][k] != before[model][k])
            for model in before}


def test_a_new_model_option_changes_no_existing_run(original, tmp_path):
    folder = copy(tmp_path)
    edit(folder, "models.py", "def parameter_count(", "class NewNet(nn.Module):\n    pass\n\n\n"
         "def parameter_count(")
    assert changed(original, parts_of(folder)) == {"modified_net": [], "origin_net": []}


def test_modifiednet_code_changes_modifiednet_runs_only(original, tmp_path):
    folder = copy(tmp_path)
    edit(folder, "models.py", "nn.Linear(100, 64), nn.ReLU(), nn.Dropout(dropout),",
         "nn.Linear(100, 64), nn.GELU(), nn.Dropout(dropout),")  # in the helper it calls
    assert changed(original, parts_of(folder)) == {"modified_net": ["model"], "origin_net": []}


def test_augmentation_code_changes_every_run_using_it(original, tmp_path):
    folder = copy(tmp_path)
    edit(folder, "batches.py", "flip = (torch.rand(n, **opts) < 0.5)",
         "flip = (torch.rand(n, **opts) < 0.4)")
    assert changed(original, parts_of(folder)) == {"modified_net": ["augment"],
                                                    "origin_net": ["augment"]}


def test_comments_docstrings_and_formatting_change_nothing(original, tmp_path):
    folder = copy(tmp_path)
    edit(folder, "models.py", '"""The report\'s baseline, 48,252 parameters for 10 classes."""',
         '"""Another docstring."""  # and a comment')
    edit(folder, "models.py", "        return self.classifier(self.features(x))",
         "        # why: a comment\n        return self.classifier(\n            self.features(x)\n        )")
    edit(folder, "train/loop.py", "def fit(", "# a comment above\n\n\ndef fit(")
    assert parts_of(folder) == original


# The code parts of each choice, computed before the package was split into subpackages (c22d081),
# with every external version read as "X" so that the literals hold whatever torch is installed.
# A move of a module changes none of them: definitions are hashed by name, not by place.
BASELINE_PARTS = {
    "model": "bc950545eceb",
    "loss": "b8ae3a097475",
    "schedule": "23fdfede665d",
    "optimizer": "2135da0e8b57",
    "augment": "3deb71e2e8b0",
    "data": "06e67007bc06",
    # changed once, by issue 40 (early stopping): fit takes the stopping rule (EarlyStop) and
    # Progress keeps its count for the checkpoint; was 4e0d257e292b (c22d081 to 6d457d9)
    "training": "ae973beb5735",
    "evaluation": "1cca69c040a0",
    "torch": "2135da0e8b57"
}
CHOICE_PARTS = {
    'model=origin_net': {'model': '6354a850c643'},
    'model=modified_net': {},
    'model=modified_net_ds': {'model': '119799a62c42'},
    'model=resnet18': {'model': 'b67d0f9c39d8'},
    'model=mobilenet_v2': {'model': '510fd448d6c9'},
    'loss=label_smoothing': {},
    'loss=weighted_cross_entropy': {},
    'lr=cosine': {'schedule': '7098aa55aee9'},
    'lr=onecycle': {'schedule': 'abb279e3d0dd'},
    'lr=step': {'schedule': 'c63a3e9a118e'},
    'optimizer=adam': {},
    'augment=none': {},
    'augment=report': {},
    'data=synthetic': {'data': '02f847d91343'},
    'data=cifar100': {'data': 'ff997e824b8e'},
    'data=image_folder': {'data': '006dff5c0ed5'},
}


@pytest.mark.parametrize("choice", sorted(CHOICE_PARTS))
def test_code_parts_are_unchanged(choice, monkeypatch):
    """The literals above, recomputed: a refactoring that moves the package's modules must not
    turn every finished run into an old code version."""
    from hydra import compose, initialize_config_dir

    from cifar_sweep.plan import code_version
    monkeypatch.setattr(code_version, "_version", lambda package: "X")
    code_version.part_hash.cache_clear()
    try:
        overrides = [choice] + (["data.root=/tmp/images"] if choice == "data=image_folder" else [])
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            parts = code_version.parts(compose("config", overrides=overrides))
    finally:
        code_version.part_hash.cache_clear()
    assert parts == {**BASELINE_PARTS, **CHOICE_PARTS[choice]}
