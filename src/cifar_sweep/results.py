"""The store's runs as pandas DataFrames: the one path from MLflow to every number of a table, and
the public API for a notebook.

    from cifar_sweep import results
    frame = results.runs("ablation-lr")          # one row per run (tracking_uri="mlruns")
    frame[frame.status == "FINISHED"].groupby("lr.value").test_accuracy.agg(["mean", "std"])

A row holds the run's ids and status, the sweeps that hold it (directly, or through a reference
run standing for it: a study's shared baseline), its seed, setting hash and code version, every
config key (as logged: strings) and every final metric. Reading writes nothing to the store.
"""

from __future__ import annotations

import pandas as pd
from mlflow.tracking import MlflowClient

from cifar_sweep.plan.identity import SEED_KEY
from cifar_sweep.tracking import bulk_runs
from cifar_sweep.tracking import tags as t
from cifar_sweep.tracking.experiments import open_store
from cifar_sweep.tracking.paging import all_runs
from cifar_sweep.tracking.store import sqlite_file

# columns made from tags: (column, tag)
TAG_COLUMNS = [
    ("role", t.ROLE), ("setting_hash", t.SETTING_HASH), ("config_hash", t.CONFIG_HASH),
    ("code_version", t.CODE_VERSION), ("torch_version", t.TORCH_VERSION),
    ("precision", t.PRECISION), ("data_fingerprint", t.DATA_FINGERPRINT),
    ("overrides", t.JOB_OVERRIDES), ("job_num", t.JOB_NUM), ("trial", t.TRIAL),
    ("hpo_study", t.HPO_STUDY), ("hpo_study_uid", t.HPO_STUDY_UID), ("device", t.DEVICE),
    ("git_commit", t.GIT_COMMIT), ("stop_reason", t.STOP_REASON), ("predictions", t.PREDICTIONS),
]
BASE_COLUMNS = ["run_id", "run_name", "experiment_id", "status", "start_time", "sweeps", "seed",
                *[c for c, _ in TAG_COLUMNS]]
CODE_COLUMNS = t.CODE_PART  # code.model, code.training, ...: one hash per part (tags)


def _row(run, sweeps: list[str], code_keys: list[str]) -> dict:
    tags, params = run.data.tags, run.data.params
    row = {"run_id": run.info.run_id, "run_name": run.info.run_name,
           "experiment_id": run.info.experiment_id, "status": run.info.status,
           "start_time": pd.Timestamp(run.info.start_time, unit="ms"),
           "sweeps": " ".join(sweeps), "seed": params.get(SEED_KEY)}
    row.update({column: tags.get(tag) for column, tag in TAG_COLUMNS})
    row.update({k: tags[k] for k in code_keys if k in tags})
    row.update(params)
    row.update(run.data.metrics)
    return row


def _frame(rows: list[dict], config_keys: set[str], metric_keys: set[str],
           code_keys: list[str] | None = None) -> pd.DataFrame:
    if code_keys is None:
        code_keys = sorted({k for r in rows for k in r if k.startswith(CODE_COLUMNS)})
    frame = pd.DataFrame(rows, columns=list(dict.fromkeys(
        BASE_COLUMNS + code_keys + sorted(config_keys) + sorted(metric_keys))))
    frame.attrs["config_keys"] = sorted(config_keys)
    frame.attrs["metric_keys"] = sorted(metric_keys)
    return frame


def experiment_runs(client: MlflowClient, experiment: str,
                    bulk: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(jobs, sweeps) of one experiment. Jobs: its trained runs of every status, and the finished
    runs its sweeps' reference runs stand for (maybe in other experiments), each once. Sweeps:
    one row per sweep parent (run_id, start_time, status, varying keys, overrides, its first job's
    overrides, jobs). `bulk`: read a local SQLite store's tables directly (`bulk_runs`), else
    through the client."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return _frame([], set(), set()), pd.DataFrame(columns=SWEEP_COLUMNS)
    runs, sweeps = _search(client, exp.experiment_id, bulk)
    holders: dict[str, list[str]] = {}  # run id -> the sweeps that hold it
    jobs: dict = {}
    originals: dict = {}
    for run in runs:
        tags = run.data.tags
        if tags.get(t.ROLE) == t.ROLE_REFERENCE:
            if run.info.status == "FINISHED" and tags.get(t.SAME_AS):
                originals.setdefault(tags[t.SAME_AS], run)
                if tags.get(t.PARENT):
                    holders.setdefault(tags[t.SAME_AS], []).append(tags[t.PARENT])
            continue
        jobs[run.info.run_id] = run
        if tags.get(t.PARENT):
            holders.setdefault(run.info.run_id, []).append(tags[t.PARENT])
    fetched = _runs_by_id(client, [r for r in originals if r not in jobs])
    for run_id, reference in originals.items():
        if run_id not in jobs and run_id in fetched:
            original = fetched[run_id]
            jobs[run_id] = original
            # the reference's place in its sweep: the original's job number is another sweep's
            original.data.tags[t.JOB_NUM] = reference.data.tags.get(t.JOB_NUM, "")
            original.data.tags[t.JOB_OVERRIDES] = reference.data.tags.get(
                t.JOB_OVERRIDES, original.data.tags.get(t.JOB_OVERRIDES, ""))
    # the keys of all runs as unions of their key sets (C loops: key by key in Python this was
    # half a second for 10,000 runs)
    code_keys = sorted(k for k in set().union(*(run.data.tags.keys() for run in jobs.values()))
                       if k.startswith(CODE_COLUMNS))
    rows = [_row(run, holders.get(run_id, []), code_keys) for run_id, run in jobs.items()]
    config_keys = set().union(*(run.data.params.keys() for run in jobs.values()))
    metric_keys = set().union(*(run.data.metrics.keys() for run in jobs.values()))
    return _frame(rows, config_keys, metric_keys, code_keys), _sweeps_frame(sweeps)


def _search(client: MlflowClient, experiment_id: str, bulk: bool) -> tuple[list, list]:
    """(the experiment's runs that have a role and are not sweeps, the sweeps), each newest first,
    as the two searches of the client find them."""
    db = sqlite_file(client.tracking_uri) if bulk else None
    found = bulk_runs.experiment_runs(db, experiment_id) if db is not None else None
    if found is None:
        return (all_runs(client, [experiment_id], f"tags.`{t.ROLE}` != '{t.ROLE_SWEEP}'"),
                all_runs(client, [experiment_id], f"tags.`{t.ROLE}` = '{t.ROLE_SWEEP}'",
                         order_by=["attributes.start_time DESC"]))
    roles = [run.data.tags.get(t.ROLE) for run in found]
    return ([run for run, role in zip(found, roles) if role is not None and role != t.ROLE_SWEEP],
            [run for run, role in zip(found, roles) if role == t.ROLE_SWEEP])


def _runs_by_id(client: MlflowClient, run_ids: list[str], chunk: int = 500) -> dict:
    """The runs of these ids, in any active experiment, a few queries for all (a study's shared
    baseline is another experiment's run): not a get_run per run."""
    if not run_ids:
        return {}
    from cifar_sweep.tracking.lifecycle import active_experiments

    experiments = active_experiments(client)
    out = {}
    for start in range(0, len(run_ids), chunk):
        ids = ", ".join(f"'{r}'" for r in run_ids[start:start + chunk])
        for run in client.search_runs(experiments, f"attributes.run_id IN ({ids})",
                                      max_results=chunk):
            out[run.info.run_id] = run
    for run_id in run_ids:  # in a deleted experiment: get_run still reads it
        if run_id not in out:
            try:
                out[run_id] = client.get_run(run_id)
            except Exception:  # deleted for good: its reference stands alone
                continue
    return out


SWEEP_COLUMNS = ["run_id", "run_name", "start_time", "status", "varying", "overrides", "first_job",
                 "jobs"]


def _sweeps_frame(sweeps) -> pd.DataFrame:
    return pd.DataFrame([{
        "run_id": s.info.run_id, "run_name": s.info.run_name,
        "start_time": pd.Timestamp(s.info.start_time, unit="ms"), "status": s.info.status,
        "varying": s.data.tags.get(t.SWEEP_VARYING, ""),
        "overrides": s.data.tags.get(t.SWEEP_OVERRIDES, ""),
        "first_job": s.data.tags.get(t.SWEEP_FIRST_JOB, ""),
        "jobs": int(s.data.tags.get(t.SWEEP_JOBS, "0") or 0)} for s in sweeps],
        columns=SWEEP_COLUMNS)


def runs(experiment: str, tracking_uri: str = "mlruns") -> pd.DataFrame:
    """Every run of an experiment, one row each (see the module's docstring). `tracking_uri`:
    a store folder, a sqlite:/// URI or a server's http(s):// address."""
    from omegaconf import OmegaConf

    client = open_store(OmegaConf.create({"uri": tracking_uri}))
    return experiment_runs(client, experiment)[0]


def sweeps(experiment: str, tracking_uri: str = "mlruns") -> pd.DataFrame:
    """The sweeps of an experiment, newest first."""
    from omegaconf import OmegaConf

    client = open_store(OmegaConf.create({"uri": tracking_uri}))
    return experiment_runs(client, experiment)[1]


def predictions(run_id: str, tracking_uri: str = "mlruns") -> pd.DataFrame:
    """A run's test predictions, one row per test example in the test set's order: `index` (its
    position in the full test set), `label`, `predicted`, and the class probabilities `p_0` ...
    `p_<C-1>` (the stored float16 values, as float32) unless the run kept none
    (`tracking.predictions_probabilities=false`); `frame.attrs["classes"]` names the classes. A
    reference run (a finished config a later sweep reused) gives its original's. Raises
    LookupError for a run that logged none (made before predictions were kept, or not
    finished). Reads only this run and its artifact."""
    from omegaconf import OmegaConf

    from cifar_sweep.tracking import predictions as kept

    client = open_store(OmegaConf.create({"uri": tracking_uri}))
    columns = kept.read(client, run_id)
    if columns is None:
        raise LookupError(f"run {run_id}: no test predictions logged (a run made before they "
                          "were kept, or one that did not finish)")
    return kept.frame(columns)


def evidence(runs: list[str], baseline: list[str], tracking_uri: str = "mlruns",
             draws: int = 10_000):
    """The per-example evidence (`cifar_sweep.evidence.Evidence`) of one setting's runs against
    a baseline's, each a list of run ids (reference runs followed to their originals), as a
    table computes it: the test set's noise, the seeds' ensemble accuracy and churn of `runs`,
    and the two-level bootstrap interval of Δ, paired over the seeds (`trainer.seed`) the two
    lists share where they share two or more. Raises LookupError naming the runs that logged
    no predictions.

        ev = results.evidence(adam_run_ids, sgd_run_ids, tracking_uri="mlruns")
        ev.delta_boot_low, ev.delta_boot_high, ev.churn"""
    from omegaconf import OmegaConf

    from cifar_sweep import evidence as per_example
    from cifar_sweep.tracking import predictions as kept

    client = open_store(OmegaConf.create({"uri": tracking_uri}))
    seeds: dict[str, str] = {}
    loaded = {}
    for run_id in dict.fromkeys([*runs, *baseline]):
        run = kept.original_run(client, run_id)
        seeds[run_id] = run.data.params.get(SEED_KEY, run_id)
        loaded[run_id] = kept.read(client, run_id, run)
    missing = [r for r, columns in loaded.items() if columns is None]
    if missing:
        raise LookupError(f"no test predictions logged for run(s) {', '.join(missing)}")
    return per_example.compare(
        {seeds[r]: per_example.Predictions.of(loaded[r]) for r in runs},
        {seeds[r]: per_example.Predictions.of(loaded[r]) for r in baseline}, draws=draws)


def compare(frame: pd.DataFrame, by: str, baseline: str, metric: str = "test_accuracy",
            scale: float = 100) -> pd.DataFrame:
    """Each value of the column `by` against the value `baseline`, as a table compares its rows
    (`statistics.judge`: paired over the shared seeds where there are two or more, else
    Welch's; Holm's p; the seeds for 80% power where undecided), one row per value:

        done = runs[runs.status == "FINISHED"]
        results.compare(done, "lr.value", "0.005")

    Each value's finished runs, one per seed (the newest where a seed ran twice); which runs may
    be compared (the same fixed settings) is the caller's choice here, the table's own in a
    table."""
    from dataclasses import asdict

    from cifar_sweep.statistics import judge

    done = frame[frame.status == "FINISHED"].sort_values("start_time", ascending=False)
    by_value = {str(value): dict(zip(group.seed.astype(str), group[metric]))
                for value, group in done.dropna(subset=[metric]).drop_duplicates([by, "seed"])
                .groupby(by, sort=False)}
    if baseline not in by_value:
        raise KeyError(f"{by}={baseline}: no finished run with a {metric}; there are "
                       f"{', '.join(sorted(by_value)) or 'none'}")
    others = [v for v in by_value if v != baseline]
    deltas = judge([by_value[v] for v in others], by_value[baseline], scale)
    return pd.DataFrame([asdict(d) for d in deltas], index=pd.Index(others, name=by))
