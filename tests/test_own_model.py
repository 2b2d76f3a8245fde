"""A researcher's own model and study, as docs/own-model.md tells it: the page's files copied into
a scratch folder and its commands run as written (on generated data, 1 epoch); the model's code
in the code version (an edit retrains, naming the part); only the arguments its constructor
takes; a model or `_target_` that cannot work is one line before any run."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from cifar_sweep.errors import UserInputError
from cifar_sweep.train import model_build
from conftest import FAST, ROOT

PAGE = ROOT / "docs" / "own-model.md"
SMALL = ["data.source.num_train=400", "data.source.num_test=100"]  # quicker still than FAST
# "`myproject/<path>`:" then a fenced block: a file of the example
FILE_BLOCK = re.compile(r"^`(myproject/[^`]+)`[^\n]*:\n\n```\w*\n(.*?)^```", re.M | re.S)
COMMAND_BLOCK = re.compile(r"^```bash\n(.*?)^```", re.M | re.S)


def example_files() -> dict[str, str]:
    files = dict(FILE_BLOCK.findall(PAGE.read_text()))
    assert {"myproject/mynet.py", "myproject/conf/model/mynet.yaml",
            "myproject/conf/ablation/width.yaml"} <= set(files), files
    return files


def example_commands() -> list[list[str]]:
    """The page's command lines, in order: `export VAR=value` and `python src/...` lines."""
    lines = []
    for block in COMMAND_BLOCK.findall(PAGE.read_text()):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if words:
                lines.append(words)
    return lines


class Follower:
    """Runs the page's commands in a scratch folder as its reader would in a checkout, with
    $HOME pointing at the folder that holds myproject/."""

    def __init__(self, project, home):
        self.project, self.home, self.env = project, home, {}

    def expand(self, word: str) -> str:
        return word.replace("$HOME", str(self.home))

    def run(self, words: list[str], extra: list[str] = (), env: dict | None = None):
        if words[0] == "export":
            key, _, value = words[1].partition("=")
            self.env[key] = self.expand(value)
            return None
        assert words[0] == "python" and words[1].startswith("src/"), words
        args = [self.expand(w) for w in words[2:]]
        if words[1] == "src/train.py":  # generated data, one epoch: FAST, before the overrides
            flags, overrides, after_flag = [], [], False
            for a in args:
                (flags if a.startswith("-") or after_flag else overrides).append(a)
                after_flag = a == "--config-dir"
            args = flags + FAST + SMALL + overrides
        # the checkout's src/ on the path too, as the installed package is there
        environment = {**self.env, "PYTHONPATH": f"{self.env.get('PYTHONPATH', '')}:{ROOT / 'src'}",
                       **(env or {})}
        return self.project.run(*args, *extra, script=ROOT / words[1], env=environment)


@pytest.fixture
def followed(project, tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    for name, text in example_files().items():
        (home / name).parent.mkdir(parents=True, exist_ok=True)
        (home / name).write_text(text)
    return Follower(project, home)


@pytest.mark.slow  # five commands, four of them trainings: `make test-full` runs it
def test_the_own_model_page_followed_as_written(followed, project):
    commands = example_commands()
    assert [c[1] for c in commands if c[0] == "python"] == [
        "src/train.py", "src/train.py", "src/report.py", "src/train.py", "src/report.py"]
    outputs = []
    for words in commands:
        proc = followed.run(words)
        if proc is not None:
            assert proc.returncode == 0, f"{' '.join(words)}\n{proc.stdout}\n{proc.stderr}"
            outputs.append(proc.stdout + proc.stderr)
    single, sweep, report, study, study_report = outputs
    runs = {r.info.run_id: r for r in project.runs()}
    mine = [r for r in runs.values() if r.data.params.get("model._target_") == "mynet.MyNet"]
    assert mine and all(r.info.status == "FINISHED" for r in mine)
    # the sweep's table and the report's: one row per width, 16 the baseline in the study
    # (the terminal's table, or the report's markdown: `| 16 (baseline) | ...`)
    for text in (sweep, report):
        assert re.search(r"^\|? *model\.width\s", text, re.M), text
        assert re.search(r"^\|? *8\s", text, re.M) and re.search(r"^\|? *16\s", text, re.M), text
    assert re.search(r"^\|? *16\b.*\(baseline\)", study_report, re.M), study_report
    assert (project.sweep_report("width") / "table.md").is_file()
    # the user's code has a hash of its own, not the empty string's
    assert {r.data.tags["code.model"] for r in mine} - {"e3b0c44298fc"} == {
        r.data.tags["code.model"] for r in mine}


@pytest.mark.slow  # over a minute on the 2-core CPU: make test-full (a default test covers its core)
def test_an_edit_of_the_users_model_trains_again_naming_the_part(followed, project):
    single = next(c for c in example_commands() if c[0] == "python" and "-m" not in c)
    followed.run(["export", "PYTHONPATH=$HOME/myproject"])
    first = followed.run(single)
    assert first.returncode == 0, first.stderr
    model_file = followed.home / "myproject" / "mynet.py"
    text = model_file.read_text()
    model_file.write_text(text.replace("nn.ReLU(), nn.MaxPool2d(2)", "nn.GELU(), nn.MaxPool2d(2)", 1))
    again = followed.run(single)
    assert again.returncode == 0, again.stderr
    assert "other code made it (changed: model): training again" in again.stdout + again.stderr
    runs = [r for r in project.runs() if r.info.status == "FINISHED"]
    assert len(runs) == 2 and len({r.data.tags["config_hash"] for r in runs}) == 1
    assert len({r.data.tags["code.model"] for r in runs}) == 2
    assert runs[0].data.tags["code.training"] == runs[1].data.tags["code.training"]


def one_error_line(proc) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    return lines[0]


def test_a_model_that_cannot_be_imported_is_one_line_and_no_run(followed, project):
    single = next(c for c in example_commands() if c[0] == "python" and "-m" not in c)
    proc = followed.run(single)  # without the page's `export PYTHONPATH=...`
    assert one_error_line(proc).startswith(
        "error: model._target_=mynet.MyNet cannot be imported (ModuleNotFoundError: "), proc.stderr
    assert project.runs() == []


def test_a_sweep_of_a_model_with_the_wrong_output_is_one_line_and_no_run(followed, project):
    sweep = next(c for c in example_commands() if c[0] == "python" and "model.width=8,16" in c)
    followed.run(["export", "PYTHONPATH=$HOME/myproject"])
    model_file = followed.home / "myproject" / "mynet.py"
    model_file.write_text(model_file.read_text().replace(
        "nn.Linear(2 * width, num_classes)", "nn.Linear(2 * width, 7)"))
    line = one_error_line(followed.run(sweep))
    assert line == ("error: model mynet.MyNet gives (2, 7) for a batch of 2 images of 3x32x32; "
                    "data=synthetic has 10 classes, so (2, 10) is needed: take num_classes in the "
                    "constructor and end with that many outputs"), line
    assert project.runs() == []


def test_make_runs_and_tables_a_study_of_the_users_folder(followed):
    conf = followed.home / "myproject" / "conf"
    proc = subprocess.run(["make", "-n", "ablation-width", f"CONFIG_DIR={conf}", "PYTHON=python"],
                          cwd=ROOT, capture_output=True, text=True, check=True)
    assert f"python src/train.py --config-dir {conf} -m ablation=width" in proc.stdout
    assert f"python src/report.py --config-dir {conf} ablation=width" in proc.stdout


# --- what the constructor gets ------------------------------------------------------------------

class TakesWidth:
    def __init__(self, num_classes: int, width: int = 4):
        self.num_classes, self.width = num_classes, width


class TakesAnything:
    def __init__(self, num_classes: int, **kwargs):
        self.kwargs = kwargs


class NoClasses:
    def __init__(self, width: int = 4):
        pass


def node(target: type, **keys):
    return OmegaConf.create({"_target_": f"{__name__}.{target.__name__}", **keys})


def test_only_the_arguments_a_constructor_takes_are_passed(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "tests"))
    assert model_build.arguments(node(TakesWidth, width=8, dropout=0.5)) == (
        {"_target_": f"{__name__}.TakesWidth", "width": 8}, ["dropout"])
    assert model_build.arguments(node(TakesAnything, dropout=0.5))[1] == []
    with pytest.raises(UserInputError, match=r"takes no num_classes argument \(it takes: width\)"):
        model_build.arguments(node(NoClasses))
    # our own models take every key their configs hold: nothing is cut from them
    for option in sorted((ROOT / "conf" / "model").glob("*.yaml")):
        assert model_build.arguments(OmegaConf.load(option))[1] == [], option


def test_a_job_config_keeps_every_key(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "tests"))
    cfg = OmegaConf.create({"model": node(TakesWidth, width=8, dropout=0.5), "x": 1})
    built = model_build.for_build(cfg)
    assert "dropout" not in built.model and built.model.width == 8
    assert cfg.model.dropout == 0.5  # the job's config (and so its hashes) untouched


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
