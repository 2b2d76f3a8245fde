"""Ablation tables and figures, regenerated from the MLflow store alone (never from memory).

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

from cifar_sweep import plots  # noqa: E402
from cifar_sweep import tracking as t  # noqa: E402
from cifar_sweep.errors import UserInputError  # noqa: E402

SEED_KEYS = {"trainer.seed"}
# (column, metric, scale, digits, higher is better)
COLUMNS = [
    ("Accuracy (%)", "test_accuracy", 100, 2, True),
    ("Precision", "test_precision_weighted", 1, 4, True),
    ("Recall", "test_recall_weighted", 1, 4, True),
    ("F1", "test_f1_weighted", 1, 4, True),
    ("Parameters", "parameters", 1, 0, False),
    ("Memory (MB)", "model_size_fp32_mb", 1, 3, False),
    ("Peak memory (MB)", None, 1, 0, False),  # peak RSS on CPU, peak allocated on GPU
    ("Train time (min)", "train_seconds", 1 / 60, 2, False),
]


@dataclass
class Row:
    setting: str
    overrides: dict[str, str]
    sweep_id: str
    first_job: int  # the row's first job number in its sweep: rows keep the sweep's order
    runs: list = field(default_factory=list)
    baseline: bool = False

    def values(self, metric: str | None) -> list[float]:
        if metric is None:
            return [r.data.metrics.get("peak_gpu_memory_mb", r.data.metrics.get("peak_rss_mb"))
                    for r in self.runs]
        return [r.data.metrics[metric] for r in self.runs if metric in r.data.metrics]


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


def table(rows: list[Row], keys: list[str]) -> tuple[list[list[str]], list[dict], list[list[bool]]]:
    """Formatted cells, raw numbers for CSV, and which cells are the best of their column."""
    base = next((r for r in rows if r.baseline), None)
    stats = [{metric or "peak_memory_mb": mean_std(r.values(metric)) for _, metric, *_ in COLUMNS}
             for r in rows]
    best = [[False] * len(COLUMNS) for _ in rows]
    for j, (_, metric, _, _, higher) in enumerate(COLUMNS):
        means = [s[metric or "peak_memory_mb"][0] for s in stats]
        target = max(means) if higher else min(means)
        if len(rows) > 1 and len(set(means)) > 1:
            for i, m in enumerate(means):
                best[i][j] = m == target
    cells, raw = [], []
    for row, s in zip(rows, stats):
        line = [_label(row, keys) + (" (baseline)" if row.baseline else "")]
        for _, metric, scale, digits, _ in COLUMNS:
            mean, std = s[metric or "peak_memory_mb"]
            text = f"{mean * scale:,.{digits}f}"
            if len(row.runs) > 1 and metric not in ("parameters", "model_size_fp32_mb"):
                text += f" ± {std * scale:,.{digits}f}"
            if base is not None and not row.baseline and metric:
                delta = (mean - stats[rows.index(base)][metric][0]) * scale
                text += f" ({delta:+.{digits}f})"
            line.append(text)
        epochs = sorted({r.data.params.get("trainer.epochs", "?") for r in row.runs})
        seeds = sorted({r.data.params.get("trainer.seed", "?") for r in row.runs})
        line += [",".join(epochs), str(len(seeds))]
        cells.append(line)
        raw.append({"setting": row.setting, "baseline": row.baseline, "runs": len(row.runs),
                    "seeds": " ".join(seeds), "epochs": " ".join(epochs),
                    **{f"{k}_{stat}": v for k, (m, sd) in s.items()
                       for stat, v in (("mean", m), ("std", sd))},
                    "sweep_run_id": row.sweep_id,
                    "run_ids": " ".join(r.info.run_id for r in row.runs)})
    return cells, raw, best


def _header(keys: list[str]) -> list[str]:
    first = keys[0] if len(keys) == 1 else "Setting"
    return [first] + [c[0] for c in COLUMNS] + ["Epochs", "Seeds"]


def to_markdown(header, cells, best) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for line, flags in zip(cells, best):
        shown = [line[0]] + [f"**{c}**" if flags[j] else c for j, c in enumerate(line[1:1 + len(flags)])]
        out.append("| " + " | ".join(shown + line[1 + len(flags):]) + " |")
    return "\n".join(out) + "\n"


def to_latex(header, cells, best) -> str:
    def esc(text: str) -> str:
        return (text.replace("\\", "\\textbackslash{}").replace("_", "\\_").replace("%", "\\%")
                .replace("±", "$\\pm$").replace("&", "\\&").replace("#", "\\#"))

    out = ["\\begin{tabular}{l" + "r" * (len(header) - 1) + "}", "\\hline",
           " & ".join(esc(h) for h in header) + " \\\\", "\\hline"]
    for line, flags in zip(cells, best):
        shown = [esc(line[0])] + [f"\\textbf{{{esc(c)}}}" if flags[j] else esc(c)
                                  for j, c in enumerate(line[1:1 + len(flags)])]
        out.append(" & ".join(shown + [esc(c) for c in line[1 + len(flags):]]) + " \\\\")
    out += ["\\hline", "\\end{tabular}"]
    return "\n".join(out) + "\n"


def to_csv(raw: list[dict]) -> str:
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(raw[0]))
    writer.writeheader()
    writer.writerows(raw)
    return buffer.getvalue()


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


def study_report(client: MlflowClient, experiment: str, study: str, baseline: str | None,
                 out: Path) -> str:
    rows, sweeps, keys, ignored = collect(client, experiment, study, baseline)
    cells, raw, best = table(rows, keys)
    header = _header(keys)
    out.mkdir(parents=True, exist_ok=True)
    used = sorted({r.sweep_id for r in rows}, key=[s.info.run_id for s in sweeps].index)
    notes = [
        f"Study `{study}`, MLflow experiment `{experiment}`. Test-set metrics (weighted precision, "
        "recall and F1, as the report's Table VII); mean ± sample std over seeds; differences "
        "in brackets are to the baseline; bold marks the best of each column. Memory is the "
        "float32 size of the weights; peak memory is the process's peak RSS on a CPU.",
        f"Runs chosen: for each setting, all finished runs of the newest sweep holding it "
        f"({len(sweeps)} comparable sweep(s) in the store; used: {', '.join(used)}).",
    ]
    if ignored:
        notes.append(f"Ignored {len(ignored)} older sweep(s) on other data or another epoch "
                     f"budget: {', '.join(s.info.run_id for s in ignored)}.")
    if baseline and not any(r.baseline for r in rows):
        notes.append(f"The baseline `{baseline}` is not among these runs: no differences shown.")
    runs = ["| Setting | Sweep | Runs |", "|---|---|---|"] + [
        f"| {r.setting} | {r.sweep_id} | {' '.join(x.info.run_id for x in r.runs)} |" for r in rows]
    md = (f"# Ablation: {study}\n\n" + to_markdown(header, cells, best) + "\n"
          + "\n\n".join(notes) + "\n\n## Runs behind each row\n\n" + "\n".join(runs) + "\n")
    (out / "table.md").write_text(md)
    (out / "table.csv").write_text(to_csv(raw))
    (out / "table.tex").write_text(to_latex(header, cells, best))
    figures(client, rows, keys, out, study)
    client.log_artifacts(used[0], str(out), "report")
    return md
