"""A study's best setting in MLflow's Model Registry: the setting with the best mean validation
accuracy (the test set chooses nothing), its best-on-validation run's model, tagged with the
study, the setting and the setting's test accuracy mean ± std over seeds."""

from __future__ import annotations

import logging
import math

import mlflow
from mlflow.entities import Run
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode
from mlflow.tracking import MlflowClient

from cifar_sweep.errors import UserInputError
from cifar_sweep.tracking.lineage import MODEL_PATH
from cifar_sweep.tracking.tags import DATA_FINGERPRINT

log = logging.getLogger(__name__)

CHOSEN_BY = "best_val_accuracy"


def best_of_study(client: MlflowClient, study) -> tuple[Run, dict[str, str]]:
    """(the run to register, its tags): the study's rows as its table holds them (`studies`); of
    the row with the best mean validation accuracy, its run with the best validation accuracy."""
    from cifar_sweep.report.studies import build_table

    table = build_table(client, study)
    scored = [(rec.stats[CHOSEN_BY][0], rec) for rec in table.records
              if not math.isnan(rec.stats[CHOSEN_BY][0])]
    if not scored:
        raise UserInputError(f"study {study.name}: no finished run with {CHOSEN_BY}")
    _, best = max(scored, key=lambda pair: pair[0])
    members = table.frame[table.frame.run_id.isin(best.run_ids)]
    run_id = members.sort_values(CHOSEN_BY, ascending=False).run_id.iloc[0]
    run = client.get_run(run_id)
    mean, std = best.stats["test_accuracy"]
    val_mean, val_std = best.stats[CHOSEN_BY]
    tags = {"study": study.name, "setting": best.setting or best.label,
            "test_accuracy": f"{mean * 100:.2f} ± {std * 100:.2f}",
            "val_accuracy": f"{val_mean * 100:.2f} ± {val_std * 100:.2f}",
            "runs": str(len(best.run_ids)), "chosen_by": f"mean {CHOSEN_BY} over seeds",
            "run_test_accuracy": f"{run.data.metrics.get('test_accuracy', float('nan')):.4f}",
            "data_fingerprint": run.data.tags.get(DATA_FINGERPRINT, "?")}
    return run, tags


def register_best(client: MlflowClient, model_name: str, run, tags: dict[str, str]) -> ModelVersion:
    """Register `run`'s MLflow model as a version of `model_name` with `tags` (the same run
    again: its existing version, tags updated)."""
    run_id = run.info.run_id
    models = client.search_logged_models(
        [run.info.experiment_id], filter_string=f"source_run_id = '{run_id}' AND name = '{MODEL_PATH}'",
        order_by=[{"field_name": "creation_time", "ascending": False}], max_results=1)
    if not models:
        raise UserInputError(
            f"run {run_id} ({run.info.run_name}) has no MLflow model (logged before models were, "
            f"or with tracking.log_model=false); train its config again with trainer.rerun=true")
    try:
        client.create_registered_model(model_name, description="cifar-sweep: a study's best "
                                       "setting; tags: study, setting, test accuracy mean ± std")
    except MlflowException as exc:
        if exc.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise
    existing = client.search_model_versions(f"name = '{model_name}' and run_id = '{run_id}'")
    if existing:
        version = existing[0]
        for key, value in tags.items():
            client.set_model_version_tag(model_name, version.version, key, value)
        return client.get_model_version(model_name, version.version)
    model_id = models[0].model_id
    # MLflow's SQL registry looks the logged model up through the global tracking URI
    mlflow.set_tracking_uri(client.tracking_uri)
    return client.create_model_version(model_name, source=f"models:/{model_id}", run_id=run_id,
                                       tags=tags, model_id=model_id)
