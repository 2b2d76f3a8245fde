"""A real run and a real sweep, read back through MLflow's client."""

import json
from pathlib import Path

import pytest
from PIL import Image

EPOCH_METRICS = ["train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "epoch_seconds"]
RUN_METRICS = ["test_accuracy", "test_precision_weighted", "test_recall_weighted",
               "test_f1_weighted", "test_precision_macro", "test_recall_macro", "test_f1_macro",
               "parameters", "model_size_fp32_mb", "peak_memory_mb", "train_seconds",
               "total_seconds", "train_images_per_second", "best_epoch", "best_val_accuracy"]
ARTIFACTS = ["config.yaml", "confusion_matrix.png", "curves.png", "correct.png", "wrong.png",
             "best_weights.pt", "evaluation.json"]


def test_one_epoch_run_logs_everything(project):
    proc = project.train("model=origin_net", "data.cache_dir=cache", check=True)
    [run] = project.runs()
    assert run.info.status == "FINISHED"
    m, p, t = run.data.metrics, run.data.params, run.data.tags
    for key in EPOCH_METRICS + RUN_METRICS:
        assert key in m, key
    assert 0 <= m["test_accuracy"] <= 1 and 0 <= m["test_f1_weighted"] <= 1
    assert m["parameters"] == 48_252
    assert abs(m["model_size_fp32_mb"] - 48_252 * 4 / 1e6) < 1e-9  # OriginNet has no buffers
    assert m["peak_memory_mb"] > 50 and t["peak_memory"] == "process_rss" and m["train_images_per_second"] > 0
    assert 0 < m["train_seconds"] < m["total_seconds"]
    for cls in range(10):
        assert 0 <= m[f"test_accuracy_class{cls}"] <= 1
    history = project.client.get_metric_history(run.info.run_id, "val_accuracy")
    assert [h.step for h in history] == [1]
    # the resolved config, flattened
    assert p["trainer.batch_size"] == "64" and p["lr.value"] == "0.005"
    assert p["optimizer._target_"] == "torch.optim.SGD" and p["optimizer.momentum"] == "0.9"
    # the choice of each config group, the commit, the data and the device
    assert (t["model"], t["optimizer"], t["lr"], t["loss"], t["data"]) == (
        "origin_net", "sgd", "constant", "cross_entropy", "synthetic")
    assert len(t["git_commit"]) >= 7 and t["device"] == "cpu"
    assert t["data_fingerprint"].startswith("synthetic-")
    names = {a.path for a in project.client.list_artifacts(run.info.run_id)}
    assert set(ARTIFACTS) <= names
    local = Path(project.client.download_artifacts(run.info.run_id, "", str(project.workdir / "dl")))
    for png in ["confusion_matrix.png", "curves.png", "correct.png", "wrong.png"]:
        with Image.open(local / png) as image:
            assert image.size[0] > 100
    evaluation = json.loads((local / "evaluation.json").read_text())
    assert sum(map(sum, evaluation["confusion"])) == 500  # every test image, once
    # the store is inside mlruns/, nothing else at its top level (but SQLite's lock and WAL
    # files beside the database); single runs log to outputs/
    assert sorted(p.name for p in project.store.iterdir()
                  if not p.name.startswith("mlflow.db")) == ["artifacts"]
    assert (project.store / "mlflow.db").is_file()
    assert list((project.workdir / "outputs").rglob("train.log"))  # Hydra's: needs the command
    assert "epoch 1/1" in proc.stdout


@pytest.mark.slow  # in `make test-full`: the default suite stays under about 12 minutes
def test_cache_is_read_on_the_second_run_and_learning_happens(project):
    # two jobs in this process, each as a new process runs it (no in-process copy of the data)
    project.job("data.cache_dir=cache", check=True)
    assert list((project.workdir / "cache").glob("synthetic-*.pt"))
    project.job("data.cache_dir=cache", "trainer.epochs=4", "trainer.seed=1", check=True)
    first, second = sorted(project.runs(), key=lambda r: r.info.start_time)
    assert first.data.tags["data_cache"] == "decoded"
    assert second.data.tags["data_cache"] == "disk"
    assert first.data.tags["data_fingerprint"] == second.data.tags["data_fingerprint"]
    # chance is 0.10 on ten balanced classes
    assert second.data.metrics["test_accuracy"] > 0.5
    assert second.data.metrics["best_val_accuracy"] > 0.5


@pytest.mark.slow  # in `make test-full`: the default suite stays under about 12 minutes
def test_two_job_sweep_makes_one_parent_and_two_children(project):
    proc = project.train("-m", "optimizer=sgd,adam", check=True)
    runs = project.runs()
    parents = [r for r in runs if r.data.tags.get("cifar_sweep.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("cifar_sweep.role") == "job"]
    assert len(parents) == 1 and len(children) == 2
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert "optimizer=sgd,adam" in parent.data.tags["sweep.overrides"]
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert sorted(c.data.tags["optimizer"] for c in children) == ["adam", "sgd"]
    assert all(c.info.status == "FINISHED" for c in children)
    assert len(list((project.workdir / "multirun").glob("*/*/0"))) == 1
    assert not (project.workdir / "outputs").exists()
    assert proc.returncode == 0
