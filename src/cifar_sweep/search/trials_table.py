"""A hyperparameter search's table, from its trials' MLflow runs: one study only (its runs carry
the study's name and id), every trial's value, parameters, state and epochs run. Reading only."""

from __future__ import annotations

from pathlib import Path

from mlflow.tracking import MlflowClient

from cifar_sweep.errors import UserInputError
from cifar_sweep.report import writers
from cifar_sweep.report.rows import subset_words
from cifar_sweep.tracking import tags as t
from cifar_sweep.tracking.paging import all_runs


def _short_number(value: str) -> str:
    """`0.0006906543748811757` -> `0.0006907`: a sampled value, to four significant digits."""
    try:
        number = float(value)
    except ValueError:
        return value
    return value if number.is_integer() and "." not in value else f"{number:.4g}"


def _data_of(run) -> dict[str, str]:
    params, tags = run.data.params, run.data.tags
    title = params.get("data.title") or " ".join(
        x for x in (tags.get("data", "?"), params.get("data.root", "")) if x and x != "None")
    return {"data": title + subset_words(params.get),
            "data_fingerprint": tags.get(t.DATA_FINGERPRINT, "?")}


def trial_runs(client: MlflowClient, experiment: str, name: str):
    """The newest run of each trial of the study `name`: of its newest incarnation where a study
    of that name was made again (its storage deleted), by the id tagged on its runs. Older runs
    without a study tag count only where no tagged run exists. Returns (trial -> run, notes)."""
    exp = client.get_experiment_by_name(experiment)
    runs = all_runs(client, [exp.experiment_id], f"tags.`{t.TRIAL}` != ''",
                    order_by=["attributes.start_time DESC"]) if exp else []
    tagged = [r for r in runs if r.data.tags.get(t.HPO_STUDY) == name]
    notes = []
    if tagged:
        uid = tagged[0].data.tags.get(t.HPO_STUDY_UID, "")
        chosen = [r for r in tagged if r.data.tags.get(t.HPO_STUDY_UID, "") == uid]
        others = len(runs) - len(chosen)
        if others:
            studies = sorted({f"{r.data.tags.get(t.HPO_STUDY, '(untagged)')} "
                              f"{r.data.tags.get(t.HPO_STUDY_UID, '')}".strip()
                              for r in runs if r not in chosen})
            notes.append(f"Not mixed in: {others} trial runs of other studies in this experiment "
                         f"({'; '.join(studies)}).")
        runs = chosen
    elif any(t.HPO_STUDY in r.data.tags for r in runs):
        held = sorted({r.data.tags[t.HPO_STUDY] for r in runs if t.HPO_STUDY in r.data.tags})
        notes.append(f"it holds the studies {', '.join(held)}: choose one with "
                     "hydra.sweeper.study_name=<name>")
        runs = []
    newest: dict = {}
    for run in runs:
        newest.setdefault(int(run.data.tags[t.TRIAL]), run)
    return newest, notes


def trials_report(client: MlflowClient, experiment: str, name: str, keys: list[str],
                  metric: str, out: Path) -> str:
    newest, notes = trial_runs(client, experiment, name)
    if not newest:
        raise UserInputError(f"search {name}: no trial of it in experiment '{experiment}'; "
                             + (notes[0] if notes else
                                "run `python src/train.py -m hpo=<preset>` first"))
    state = {"FINISHED": "complete", "FAILED": "failed", "RUNNING": "running"}
    rows, values, sources = [], {}, {}
    for number, run in sorted(newest.items()):
        source = client.get_run(run.data.tags[t.SAME_AS]) if t.SAME_AS in run.data.tags else run
        sources[number] = source
        status = ("pruned" if run.data.tags.get(t.TRIAL_STATE) == "pruned"
                  else state.get(run.info.status, run.info.status.lower()))
        value = source.data.metrics.get(metric) if status == "complete" else None
        values[number] = value
        history = client.get_metric_history(source.info.run_id, "val_accuracy")
        shown = "" if value is None else f"{value:.4f}"
        if status == "pruned" and history and metric == "best_val_accuracy":
            shown = f"({max(m.value for m in history):.4f})"  # how far it got before it stopped
        # a key is a config value (a param) or a config group's option (a tag: `lr=cosine`)
        chosen = [source.data.params.get(k, source.data.tags.get(k, "")) for k in keys]
        rows.append([str(number), shown, *[_short_number(v) for v in chosen], status,
                     str(len(history)), run.info.run_id])
    done = {n: v for n, v in values.items() if v is not None}
    best = max(done, key=lambda n: done[n]) if done else None
    bold = [[int(r[0]) == best] * len(r) for r in rows]
    header = ["Trial", metric, *keys, "State", "Epochs run", "Run"]
    first = sources[min(sources)]
    data = _data_of(first)
    uid = first.data.tags.get(t.HPO_STUDY_UID)
    caption = (f"Search `{name}`{f' (study id `{uid}`)' if uid else ''} (MLflow experiment "
               f"`{experiment}`) on {data['data']} (fingerprint "
               f"`{data['data_fingerprint']}`), up to {first.data.params.get('trainer.epochs', '?')}"
               f" epochs per trial: {len(rows)} trials, "
               f"{sum(r[-3] == 'complete' for r in rows)} complete, "
               f"{sum(r[-3] == 'pruned' for r in rows)} pruned, "
               f"{sum(r[-3] == 'failed' for r in rows)} failed; bold: the best; in brackets: the "
               f"best {metric.removeprefix('best_')} a pruned trial reached before it was stopped.")
    if best is not None and "test_accuracy" in sources[best].data.metrics:
        caption += (f" The best trial's test accuracy: "
                    f"{sources[best].data.metrics['test_accuracy'] * 100:.2f}% (reported, never "
                    f"used to choose).")
    out.mkdir(parents=True, exist_ok=True)
    md = f"# Search: {name}\n\n" + writers.markdown(header, rows, bold, caption)
    if notes:
        md += "\n" + "\n\n".join(notes) + "\n"
    (out / "table.md").write_text(md)
    (out / "table.csv").write_text(writers.csv_text([dict(zip(header, r)) for r in rows]))
    (out / "table.tex").write_text(writers.latex(header, rows, bold, caption))
    return md
