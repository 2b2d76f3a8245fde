"""A study's table and figures, regenerated from the MLflow store alone (never from memory).

Rows are the settings of a study (the swept keys other than the seed). When a study was run more
than once, each setting takes all finished runs of the newest sweep that contains it.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

from cifar_sweep import plots, tables  # noqa: E402
from cifar_sweep import tracking as t  # noqa: E402
from cifar_sweep.errors import UserInputError  # noqa: E402

SEED_KEYS = {"trainer.seed"}


@dataclass(frozen=True)
class Column:
    title: str
    metric: str
    scale: float
    digits: int
    higher_is_better: bool
    varies_by_seed: bool = True  # else one value, no ± (a model's size does not vary by seed)


COLUMNS = [
    Column("Accuracy (%)", "test_accuracy", 100, 2, True),
    Column("Precision", "test_precision_weighted", 1, 4, True),
    Column("Recall", "test_recall_weighted", 1, 4, True),
    Column("F1", "test_f1_weighted", 1, 4, True),
    Column("Parameters", "parameters", 1, 0, False, varies_by_seed=False),
    Column("Memory (MB)", "model_size_fp32_mb", 1, 3, False, varies_by_seed=False),
    Column("Peak memory (MB)", "peak_memory_mb", 1, 0, False),
    Column("Train time (min)", "train_seconds", 1 / 60, 2, False),
]
ACCURACY = COLUMNS[0]
# runs logged before `peak_memory_mb` existed named it after what it measured
OLDER_NAMES = {"peak_memory_mb": ("peak_rss_mb", "peak_gpu_memory_mb")}


def metric(run, name: str) -> float | None:
    metrics = run.data.metrics
    for key in (name, *OLDER_NAMES.get(name, ())):
        if key in metrics:
            return metrics[key]
    return None


@dataclass
class Row:
    """A setting of the study and the runs (one per seed) behind it."""

    setting: str
    overrides: dict[str, str]
    sweep_id: str
    first_job: int  # the row's first job number in its sweep: rows keep the sweep's order
    runs: list = field(default_factory=list)
    baseline: bool = False

    def values(self, name: str) -> list[float]:
        return [v for v in (metric(r, name) for r in self.runs) if v is not None]


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1); the std is 0 for a single run."""
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _parse(overrides: str) -> dict[str, str]:
    return dict(o.partition("=")[::2] for o in overrides.split() if "=" in o)


def collect(client: MlflowClient, experiment: str, study: str, baseline: str | None):
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise UserInputError(f"study {study}: no experiment '{experiment}' in the store; run "
                             f"`make ablation-{study}` first")
    sweeps = client.search_runs([exp.experiment_id], f"tags.`{t.ROLE}` = '{t.ROLE_SWEEP}'",
                                order_by=["attributes.start_time DESC"], max_results=10000)
    finished = "and attributes.status = 'FINISHED'"
    jobs = client.search_runs([exp.experiment_id], f"tags.`{t.ROLE}` = '{t.ROLE_JOB}' {finished}",
                              max_results=50000)
    # a sweep's job whose config had finished before (maybe in another study: the shared
    # baseline) is a reference run there; the finished run itself provides the numbers
    references = client.search_runs(
        [exp.experiment_id], f"tags.`{t.ROLE}` = '{t.ROLE_REFERENCE}' {finished}", max_results=50000)
    originals = {r.data.tags[t.SAME_AS]: client.get_run(r.data.tags[t.SAME_AS]) for r in references}
    by_parent = defaultdict(list)
    for job in jobs + references:
        by_parent[job.data.tags.get(t.PARENT)].append(job)
    sweeps = [s for s in sweeps if by_parent.get(s.info.run_id)]
    if not sweeps:
        raise UserInputError(f"study {study}: experiment '{experiment}' holds no finished sweep; "
                             f"run `make ablation-{study}` first")
    # only sweeps comparable with the newest: same data and the same epoch budget
    def signature(sweep) -> tuple[str, str]:
        child = by_parent[sweep.info.run_id][0]
        return child.data.tags.get(t.DATA_FINGERPRINT, ""), child.data.params.get("trainer.epochs", "")

    newest = signature(sweeps[0])
    ignored = [s for s in sweeps if signature(s) != newest]
    sweeps = [s for s in sweeps if signature(s) == newest]
    # the row keys: everything any of these sweeps varied, but the seed
    keys = list(dict.fromkeys(k for s in sweeps for k in s.data.tags.get(t.SWEEP_VARYING, "").split()
                              if k not in SEED_KEYS))
    rows: dict[str, Row] = {}
    for sweep in sweeps:  # newest first: the first sweep holding a setting provides its row
        children = sorted(by_parent[sweep.info.run_id], key=lambda r: int(r.data.tags[t.JOB_NUM]))
        for child in children:
            overrides = _parse(child.data.tags[t.JOB_OVERRIDES])
            chosen = {k: overrides.get(k, "") for k in keys}
            setting = " ".join(f"{k}={v}" for k, v in chosen.items()) or "(all)"
            row = rows.setdefault(setting, Row(setting, chosen, sweep.info.run_id,
                                               int(child.data.tags[t.JOB_NUM])))
            if row.sweep_id == sweep.info.run_id:
                row.runs.append(originals.get(child.data.tags.get(t.SAME_AS), child))
    sweep_order = [s.info.run_id for s in sweeps]
    ordered = sorted(rows.values(), key=lambda r: (
        sweep_order.index(r.sweep_id), r.first_job))
    for row in ordered:
        row.baseline = bool(baseline) and baseline in row.setting.split()
    return ordered, sweeps, keys, ignored


def _label(row: Row, keys: list[str]) -> str:
    if len(keys) == 1:  # the value alone reads best: "0.005", "adam"
        return row.overrides[keys[0]] or "(default)"
    return row.setting


@dataclass
class Delta:
    """A row's accuracy minus the baseline's, in points, with Welch's 95% interval and p-value
    over seeds (None where a side has one run: a single seed cannot say)."""

    diff: float
    low: float | None = None
    high: float | None = None
    p: float | None = None

    @property
    def seeds_tell_apart(self) -> bool | None:
        return None if self.p is None else self.p < 0.05


def welch(values: list[float], baseline: list[float], scale: float) -> Delta:
    from scipy import stats

    diff = (statistics.fmean(values) - statistics.fmean(baseline)) * scale
    if len(values) < 2 or len(baseline) < 2:
        return Delta(diff)
    if statistics.pvariance(values) == 0 and statistics.pvariance(baseline) == 0:
        return Delta(diff, diff, diff, 1.0 if diff == 0 else 0.0)
    result = stats.ttest_ind(values, baseline, equal_var=False)
    interval = result.confidence_interval(0.95)
    return Delta(diff, interval.low * scale, interval.high * scale, float(result.pvalue))


@dataclass
class Record:
    """One line of a study's table: a row, its statistics, and the report's own numbers."""

    row: Row
    label: str
    stats: dict[str, tuple[float, float]]  # metric -> (mean, sample std)
    delta: Delta | None                    # accuracy vs the baseline; None on the baseline row
    paper: dict[str, float]                # column title -> the report's value for this row
    epochs: list[str]
    seeds: list[str]


def records(rows: list[Row], keys: list[str], paper: dict | None = None) -> list[Record]:
    titles = {c.metric: c.title for c in COLUMNS}
    paper_columns = {titles[m]: v for m, v in (paper or {}).get("columns", {}).items()}
    base = next((r for r in rows if r.baseline), None)
    out = []
    for row in rows:
        label = _label(row, keys)
        delta = None
        if base is not None and row is not base:
            delta = welch(row.values(ACCURACY.metric), base.values(ACCURACY.metric), ACCURACY.scale)
        out.append(Record(
            row=row, label=label,
            stats={c.metric: mean_std(row.values(c.metric)) for c in COLUMNS},
            delta=delta,
            paper={title: values[label] for title, values in paper_columns.items()
                   if label in values},
            epochs=sorted({r.data.params.get("trainer.epochs", "?") for r in row.runs}),
            seeds=sorted({r.data.params.get("trainer.seed", "?") for r in row.runs}, key=_num)))
    return out


def _num(text: str):
    try:
        return float(text)
    except ValueError:
        return float("inf")


def _signed(value: float, digits: int) -> str:
    return f"{value:+,.{digits}f}"


def cells(recs: list[Record], keys: list[str], paper: dict | None = None):
    """(header, rows of cells, bold flags): ours, the difference to the baseline with its
    interval, and the report's own numbers beside them."""
    titles = {c.metric: c.title for c in COLUMNS}
    paper_titles = [titles[m] for m in (paper or {}).get("columns", {})]
    source = (paper or {}).get("source", "report")
    header = ([keys[0] if len(keys) == 1 else "Setting"] + [c.title for c in COLUMNS]
              + ["Δ accuracy [95% CI]", "p (Welch)"]
              + [f"{source}: {t}" for t in paper_titles] + ["Epochs", "Seeds"])
    base = next((r for r in recs if r.row.baseline), None)
    best_mean = {}
    for c in COLUMNS:
        means = [r.stats[c.metric][0] for r in recs]
        if len(recs) > 1 and len(set(means)) > 1:
            best_mean[c.metric] = max(means) if c.higher_is_better else min(means)
    table, bold = [], []
    for rec in recs:
        line, flags = [rec.label + (" (baseline)" if rec.row.baseline else "")], [False]
        for c in COLUMNS:
            mean, std = rec.stats[c.metric]
            text = f"{mean * c.scale:,.{c.digits}f}"
            if len(rec.row.runs) > 1 and c.varies_by_seed:
                text += f" ± {std * c.scale:,.{c.digits}f}"
            diff = None if base is None else (mean - base.stats[c.metric][0]) * c.scale
            # no "(+0)" where a setting does not change the column (parameters, memory)
            if diff is not None and rec is not base and c is not ACCURACY and \
                    round(diff, c.digits) != 0:
                text += f" ({_signed(diff, c.digits)})"
            line.append(text)
            flags.append(best_mean.get(c.metric) == mean)
        d = rec.delta
        if d is None:
            line += ["", ""]
        else:
            interval = "" if d.low is None else f" [{_signed(d.low, 2)}, {_signed(d.high, 2)}]"
            mark = {True: "", False: "≈ ", None: ""}[d.seeds_tell_apart]
            p = "–" if d.p is None else "<0.001" if d.p < 0.001 else f"{d.p:.3f}"
            line += [f"{mark}{_signed(d.diff, 2)}{interval}", p]
        flags += [False, False]
        line += [_paper_cell(rec.paper.get(t)) for t in paper_titles]
        flags += [False] * len(paper_titles)
        line += [",".join(rec.epochs), str(len(rec.seeds))]
        flags += [False, False]
        table.append(line)
        bold.append(flags)
    return header, table, bold


def _paper_cell(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.2f}" if value > 1 else f"{value:.4f}"


def csv_records(recs: list[Record], data: dict[str, str]) -> list[dict]:
    out = []
    for rec in recs:
        d = rec.delta or Delta(float("nan"))
        out.append({
            "setting": rec.row.setting, "baseline": rec.row.baseline, "runs": len(rec.row.runs),
            "seeds": " ".join(rec.seeds), "epochs": " ".join(rec.epochs), **data,
            **{f"{m}_{stat}": v for m, (mean, sd) in rec.stats.items()
               for stat, v in (("mean", mean), ("std", sd))},
            "delta_accuracy_points": d.diff, "delta_ci95_low": d.low, "delta_ci95_high": d.high,
            "delta_p_welch": d.p,
            **{f"report {t}": v for t, v in rec.paper.items()},
            "sweep_run_id": rec.row.sweep_id,
            "run_ids": " ".join(r.info.run_id for r in rec.row.runs)})
    # every record gets every column, so the CSV has one header for all
    keys = list(dict.fromkeys(k for r in out for k in r))
    return [{k: r.get(k, "") for k in keys} for r in out]


def _histories(client: MlflowClient, row: Row, key: str) -> list[list[float]]:
    return [[m.value for m in sorted(client.get_metric_history(r.info.run_id, key),
                                     key=lambda m: m.step)] for r in row.runs]


def figures(client: MlflowClient, rows: list[Row], keys: list[str], out: Path, study: str) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for row in rows:
        for ax, key in zip(axes, ("val_loss", "val_accuracy")):
            curves = _histories(client, row, key)
            length = min(len(c) for c in curves)
            mean = [statistics.fmean(c[i] for c in curves) for i in range(length)]
            line, = ax.plot(range(1, length + 1), mean, label=_label(row, keys))
            if len(curves) > 1:
                std = [statistics.stdev(c[i] for c in curves) for i in range(length)]
                ax.fill_between(range(1, length + 1), [m - s for m, s in zip(mean, std)],
                                [m + s for m, s in zip(mean, std)], alpha=0.2, color=line.get_color())
    axes[0].set(xlabel="epoch", ylabel="validation loss", title="Validation loss")
    axes[1].set(xlabel="epoch", ylabel="validation accuracy", title="Validation accuracy")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    fig.suptitle(f"Study: {study} (mean over seeds, band = ±1 std)")
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=120)
    plt.close(fig)

    evaluations = []
    with tempfile.TemporaryDirectory() as tmp:
        for row in rows:
            summed, classes = None, None
            for r in row.runs:
                path = client.download_artifacts(r.info.run_id, "evaluation.json", tmp)
                ev = json.loads(Path(path).read_text())
                classes = ev["classes"]
                matrix = ev["confusion"]
                summed = matrix if summed is None else [
                    [a + b for a, b in zip(x, y)] for x, y in zip(summed, matrix)]
            evaluations.append((row, summed, classes))
    n = len(rows)
    fig, axes = plt.subplots(1, n, figsize=(5 * n, 5), squeeze=False)
    for ax, (row, matrix, classes) in zip(axes[0], evaluations):
        plots.draw_confusion(ax, matrix, classes, f"{_label(row, keys)} ({len(row.runs)} runs)")
    fig.tight_layout()
    fig.savefig(out / "confusion.png", dpi=110)
    plt.close(fig)

    classes = evaluations[0][2]
    fig, ax = plt.subplots(figsize=(max(8, len(classes) * 0.9), 4))
    width = 0.8 / n
    for i, row in enumerate(rows):
        means = [statistics.fmean(row.values(f"test_accuracy_{c}")) for c in classes]
        ax.bar([k + i * width for k in range(len(classes))], means, width, label=_label(row, keys))
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(classes))], classes, rotation=30)
    ax.set(ylabel="test accuracy", title=f"Per-class accuracy, study: {study}", ylim=(0, 1))
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "per_class_accuracy.png", dpi=120)
    plt.close(fig)


def data_of(run) -> dict[str, str]:
    """What a run trained on: the data's title (runs before `data.title` existed: its source and
    folder) and its content fingerprint."""
    params, tags = run.data.params, run.data.tags
    title = params.get("data.title") or " ".join(
        x for x in (tags.get("data", "?"), params.get("data.root", "")) if x and x != "None")
    return {"data": title, "data_fingerprint": tags.get(t.DATA_FINGERPRINT, "?")}


def study_report(client: MlflowClient, experiment: str, study: str, baseline: str | None,
                 out: Path, paper: dict | None = None) -> str:
    rows, sweeps, keys, ignored = collect(client, experiment, study, baseline)
    recs = records(rows, keys, paper)
    header, table, bold = cells(recs, keys, paper)
    data = data_of(rows[0].runs[0])  # collect keeps sweeps of one data fingerprint only
    epochs = sorted({e for r in recs for e in r.epochs})
    seeds = sorted({s for r in recs for s in r.seeds}, key=_num)
    budget = (f"{data['data']} (fingerprint `{data['data_fingerprint']}`), "
              f"{'/'.join(epochs)} epochs per run, {len(seeds)} seed(s) ({', '.join(seeds)})")
    caption = (f"Ablation `{study}` on {budget}. Test-set metrics of the best-on-validation "
               "weights; precision, recall and F1 weighted, as the report's Table VII; mean ± "
               "sample std over seeds; bold: the best of each column; in brackets: the "
               "difference to the baseline. Δ accuracy: in points, with the 95% confidence "
               "interval of Welch's t-test over seeds; ≈ marks a difference the seeds cannot "
               "tell apart (p ≥ 0.05).")
    if paper:
        caption += (f" `{paper.get('source', 'report')}:` columns: the report's own numbers "
                    "(one run each, 300 epochs, its own code).")
    out.mkdir(parents=True, exist_ok=True)
    used = sorted({r.sweep_id for r in rows}, key=[s.info.run_id for s in sweeps].index)
    notes = [
        f"MLflow experiment `{experiment}`. Memory is the float32 size of the weights; peak "
        "memory is what the runs' `peak_memory` tag says (the process's peak resident memory on "
        "a CPU, torch's peak allocation on a GPU).",
        f"Runs chosen: for each setting, all finished runs of the newest sweep holding it "
        f"({len(sweeps)} comparable sweep(s) in the store; used: {', '.join(used)}).",
    ]
    if ignored:
        notes.append(f"**Not mixed in:** {len(ignored)} sweep(s) on other data or another epoch "
                     f"budget: {', '.join(s.info.run_id for s in ignored)}.")
    if baseline and not any(r.baseline for r in rows):
        notes.append(f"The baseline `{baseline}` is not among these runs: no differences shown.")
    runs = ["| Setting | Sweep | Runs |", "|---|---|---|"] + [
        f"| {r.setting} | {r.sweep_id} | {' '.join(x.info.run_id for x in r.runs)} |" for r in rows]
    md = (f"# Ablation: {study} ({budget})\n\n" + tables.markdown(header, table, bold, caption)
          + "\n" + "\n\n".join(notes) + "\n\n## Runs behind each row\n\n" + "\n".join(runs) + "\n")
    (out / "table.md").write_text(md)
    (out / "table.csv").write_text(tables.csv_text(csv_records(recs, data)))
    (out / "table.tex").write_text(tables.latex(header, table, bold, caption))
    figures(client, rows, keys, out,  # the fingerprint is in the table's caption
            f"{study}, {data['data']}, {'/'.join(epochs)} epochs, {len(seeds)} seed(s)")
    client.log_artifacts(used[0], str(out), "report")
    return md


def _short_number(value: str) -> str:
    """`0.0006906543748811757` -> `0.0006907`: a sampled value, to four significant digits."""
    try:
        number = float(value)
    except ValueError:
        return value
    return value if number.is_integer() and "." not in value else f"{number:.4g}"


def trials_report(client: MlflowClient, experiment: str, name: str, keys: list[str],
                  metric: str, out: Path) -> str:
    """A hyperparameter search's table: every trial's value, parameters, state and epochs run,
    from its MLflow runs (the newest run of each trial number)."""
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], f"tags.`{t.TRIAL}` != ''",
                              order_by=["attributes.start_time DESC"],
                              max_results=50000) if exp else []
    if not runs:
        raise UserInputError(f"search {name}: no trial in experiment '{experiment}'; run "
                             f"`python src/train.py -m hpo={name}` first")
    newest = {}
    for run in runs:
        newest.setdefault(int(run.data.tags[t.TRIAL]), run)
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
    best = max(done, key=done.get) if done else None
    bold = [[int(r[0]) == best] * len(r) for r in rows]
    header = ["Trial", metric, *keys, "State", "Epochs run", "Run"]
    first = sources[min(sources)]
    data = data_of(first)
    caption = (f"Search `{name}` (MLflow experiment `{experiment}`) on {data['data']} (fingerprint "
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
    md = f"# Search: {name}\n\n" + tables.markdown(header, rows, bold, caption)
    (out / "table.md").write_text(md)
    (out / "table.csv").write_text(tables.csv_text([dict(zip(header, r)) for r in rows]))
    (out / "table.tex").write_text(tables.latex(header, rows, bold, caption))
    return md
