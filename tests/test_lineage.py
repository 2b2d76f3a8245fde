"""What MLflow itself shows of a run, read back through MLflow's client as the UI reads it: the
data splits as dataset inputs, the source tags, system metrics, the model (loaded back and
scored on the test set), and a study's best setting in the Model Registry."""

import re
import statistics
import subprocess

import mlflow.pytorch
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from conftest import ROOT, make_ui
from test_ui import CHROMIUM, page

REGISTER = ROOT / "src" / "register_model.py"


def load_test_split():
    from cifar_sweep.data import load_dataset

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["data=synthetic"])
    return load_dataset(instantiate(cfg.data.source), None).test


def accuracy(model, split) -> float:
    with torch.no_grad():
        return (model(split.images).argmax(1) == split.labels).float().mean().item()


@pytest.mark.slow  # over a minute on the 2-core CPU: make test-full (a default test covers its core)
def test_a_run_shows_its_datasets_source_system_metrics_and_model(project):
    project.job("trainer.epochs=3", check=True, env={"MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "1"})
    [run] = project.runs()
    tags = run.data.tags
    # the splits, as the UI's Datasets column lists them: name, digest, context
    fingerprint = tags["data_fingerprint"].rsplit("-", 1)[1]
    inputs = {d.tags[0].value: d.dataset for d in run.inputs.dataset_inputs}
    assert sorted(inputs) == ["test", "train", "validation"]
    assert {d.name for d in inputs.values()} == {"synthetic (generated)"}
    assert inputs["test"].digest == fingerprint[:20]
    assert inputs["train"].digest.startswith(fingerprint[:20] + "-")
    assert len({d.digest for d in inputs.values()}) == 3  # each split its own images
    assert '"images": 1600' in inputs["train"].profile and '"images": 400' in inputs["validation"].profile
    # MLflow's own source tags, beside the project's git_commit
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    assert tags["mlflow.source.git.commit"] == commit and tags["mlflow.source.type"] == "LOCAL"
    assert tags["mlflow.source.name"] == "src/train.py"
    assert tags["git_commit"] == commit + ("-dirty" if tags["git_dirty"] == "true" else "")
    # system metrics, sampled every second here
    history = project.client.get_metric_history(run.info.run_id, "system/cpu_utilization_percentage")
    assert history and "system/system_memory_usage_megabytes" in run.data.metrics
    # the best-on-validation weights as an MLflow model: on the test set, the logged accuracy
    mlflow.set_tracking_uri(project.client.tracking_uri)
    model = mlflow.pytorch.load_model(f"runs:/{run.info.run_id}/model", map_location="cpu")
    assert accuracy(model, load_test_split()) == run.data.metrics["test_accuracy"]


@pytest.mark.slow  # a study of four runs: 32-110 s here (shared machine)
def test_a_studys_best_setting_is_registered_and_loads(project):
    project.train("-m", "ablation=lr", "lr.value=0.005,0.05", "trainer.seed=0,1",
                  "hydra/launcher=basic", "tracking.system_metrics=false", "tracking.figures=false",
                  check=True)
    proc = project.run("ablation=lr", script=REGISTER, check=True)
    client = project.client
    exp = client.get_experiment_by_name("ablation-lr")
    jobs = client.search_runs([exp.experiment_id], "tags.`cifar_sweep.role` = 'job'")
    assert not any(k.startswith("system/") for j in jobs for k in j.data.metrics)  # turned off
    by_lr = {lr: [j for j in jobs if j.data.params["lr.value"] == lr] for lr in ("0.005", "0.05")}
    val = {lr: statistics.fmean(j.data.metrics["best_val_accuracy"] for j in runs)
           for lr, runs in by_lr.items()}
    lr = max(val, key=val.get)  # chosen on validation, never on the test set
    best = max(by_lr[lr], key=lambda j: j.data.metrics["best_val_accuracy"])
    test = [j.data.metrics["test_accuracy"] * 100 for j in by_lr[lr]]

    [version] = client.search_model_versions("name = 'cifar-sweep-lr'")
    assert version.run_id == best.info.run_id
    assert version.tags["study"] == "lr" and version.tags["setting"] == f"lr.value={lr}"
    assert version.tags["test_accuracy"] == f"{statistics.fmean(test):.2f} ± {statistics.stdev(test):.2f}"
    assert f"registered cifar-sweep-lr version {version.version}" in proc.stdout
    mlflow.set_tracking_uri(client.tracking_uri)
    model = mlflow.pytorch.load_model(f"models:/cifar-sweep-lr/{version.version}")
    assert accuracy(model, load_test_split()) == best.data.metrics["test_accuracy"]
    # again: the same version, not a second one
    project.run("ablation=lr", script=REGISTER, check=True)
    assert len(client.search_model_versions("name = 'cifar-sweep-lr'")) == 1


@pytest.mark.slow  # up to a minute on the 2-core CPU: make test-full (a default test covers its core)
def test_register_says_what_is_wrong_in_one_line(project):
    proc = project.run("ablation=nope", script=REGISTER)
    studies = "|".join(sorted(p.stem for p in (ROOT / "conf" / "ablation").glob("*.yaml")))
    assert proc.returncode == 2 and f"allowed: ablation=<{studies}>" in proc.stderr, proc.stderr
    proc = project.run("ablation=loss", script=REGISTER)
    assert proc.returncode == 1 and "error: study loss: no experiment" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow  # a run, `mlflow ui` and headless Chromium: about a minute
@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (Debian: apt-get install chromium)")
def test_the_ui_shows_a_runs_datasets_and_source(project):
    """The run's page in a real browser, as a user opens it from the runs table: its data splits
    (name, context) and its source (the entry point, the commit), from MLflow's own fields."""
    project.job(check=True)
    [run] = project.runs()
    with make_ui(f"STORE={project.store}") as ui:
        dom = page(f"{ui.base}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}")
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))  # the page's text, no markup
    # the overview's fields, e.g. "Source train.py efb8cb0 ... Datasets synthetic (generated)
    # (500c68d943a271567435-ba0268f1) train +2", and the run's logged models
    train = next(d.dataset for d in run.inputs.dataset_inputs if d.tags[0].value == "train")
    assert f"Datasets synthetic (generated) ({train.digest}) train +2" in text, text[:4000]
    assert f"Source train.py {run.data.tags['mlflow.source.git.commit'][:7]}" in text
    assert "Logged models (1)" in text and "model Ready" in text  # its MLflow model
