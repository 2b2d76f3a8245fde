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
from cifar_sweep import code_version
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
    edit(folder, "training.py", "def fit(", "# a comment above\n\n\ndef fit(")
    assert parts_of(folder) == original
