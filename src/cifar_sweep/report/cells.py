"""A table's rows as text: the cells of the Markdown, LaTeX and CSV tables (means ± std, the
difference to the baseline with its interval and tests, the report's own numbers)."""

from __future__ import annotations

from cifar_sweep.report import epochs_run
from cifar_sweep.report.rows import ACCURACY, CHANCE_MARK, COLUMNS, Record
from cifar_sweep.statistics import ALPHA, MAX_SEEDS, Delta


def signed(value: float, digits: int) -> str:
    return f"{value:+,.{digits}f}"


def p_text(p: float | None) -> str:
    return "–" if p is None else "<0.001" if p < 0.001 else f"{p:.3f}"


def seeds_text(seeds: list[str]) -> str:
    """`3: 0-2`, `5: 0-4`, `4: 0, 1, 2, 7`: how many seeds, and which."""
    try:
        numbers = sorted(int(s) for s in seeds)
    except ValueError:
        return f"{len(seeds)}: {', '.join(seeds)}"
    if len(numbers) > 2 and numbers == list(range(numbers[0], numbers[-1] + 1)):
        return f"{len(numbers)}: {numbers[0]}-{numbers[-1]}"
    return f"{len(numbers)}: {', '.join(map(str, numbers))}"


def cells(recs: list[Record], axis_title: str, paper: dict | None = None,
          at_chance: frozenset[str] = frozenset()):
    """(header, rows of cells, bold flags): ours, the difference to the baseline with its
    interval and test, and the report's own numbers beside them; the rows labelled in
    `at_chance` marked †."""
    titles = {c.metric: c.title for c in COLUMNS}
    paper_titles = [titles[m] for m in (paper or {}).get("columns", {})]
    source = (paper or {}).get("source", "report")
    header = ([axis_title] + [c.title for c in COLUMNS]
              + ["Δ accuracy [95% CI]", "p (test)", "p (Holm)", "Seeds for 80% power"]
              + EVIDENCE_HEADER
              + [f"{source}: {t}" for t in paper_titles] + ["Epochs", "Seeds"])
    base = next((r for r in recs if r.baseline), None)
    best_mean = {}
    for c in COLUMNS:
        means = [r.stats[c.metric][0] for r in recs]
        if len(recs) > 1 and len(set(means)) > 1:
            best_mean[c.metric] = max(means) if c.higher_is_better else min(means)
    table, bold = [], []
    for rec in recs:
        line = [rec.label + (f" {CHANCE_MARK}" if rec.label in at_chance else "")
                + (" (baseline)" if rec.baseline else "")]
        flags = [False]
        for c in COLUMNS:
            mean, std = rec.stats[c.metric]
            text = f"{mean * c.scale:,.{c.digits}f}"
            if len(rec.run_ids) > 1 and c.varies_by_seed:
                text += f" ± {std * c.scale:,.{c.digits}f}"
            diff = None if base is None else (mean - base.stats[c.metric][0]) * c.scale
            # no "(+0)" where a setting does not change the column (parameters, memory)
            if diff is not None and rec is not base and c is not ACCURACY and \
                    round(diff, c.digits) != 0:
                text += f" ({signed(diff, c.digits)})"
            line.append(text)
            flags.append(best_mean.get(c.metric) == mean)
        d = rec.delta
        if d is None:
            line += ["", "", "", ""]
        else:
            interval = (f" [{signed(d.low, 2)}, {signed(d.high, 2)}]"
                        if d.low is not None and d.high is not None else "")
            mark = {True: "", False: "≈ ", None: ""}[d.seeds_tell_apart]
            needed = ("" if d.seeds_tell_apart is not False
                      else str(d.seeds_needed) if d.seeds_needed else f"> {MAX_SEEDS}")
            line += [f"{mark}{signed(d.diff, 2)}{interval}",
                     f"{p_text(d.p)} {d.test}".strip() if d.p is not None else "–",
                     p_text(d.p_holm), needed]
        flags += [False] * 4
        line += evidence_cells(rec)
        flags += [False] * len(EVIDENCE_HEADER)
        line += [_paper_cell(rec.paper.get(t)) for t in paper_titles]
        flags += [False] * len(paper_titles)
        line += [epochs_run.cell(rec.length) if rec.length else ",".join(rec.epochs),
                 seeds_text(rec.seeds)]
        flags += [False, False]
        table.append(line)
        bold.append(flags)
    return header, table, bold


# the per-example evidence a reader needs to judge a row (the CSV has all of it): the test set's
# own noise on the row's accuracy, and Δ's interval over seeds and test images together
EVIDENCE_HEADER = ["Test noise (±95%)", "Δ bootstrap [95%]"]


def evidence_cells(rec: Record) -> list[str]:
    """`±0.87` and `[+0.12, +1.60]` (points); empty where the row's runs kept no predictions."""
    e = rec.evidence
    if e is None:
        return ["", ""]
    interval = ("" if e.delta_boot_low is None or e.delta_boot_high is None
                else f"[{signed(e.delta_boot_low, 2)}, {signed(e.delta_boot_high, 2)}]")
    return [f"±{e.test_noise_95:.2f}", interval]


def evidence_csv(rec: Record) -> dict:
    """The CSV's per-example columns: points for the noise and the interval, fractions for the
    ensemble's accuracy and churn (as test_accuracy_mean); empty where there are none."""
    e = rec.evidence
    names = ("test_noise_95", "ensemble_accuracy", "churn", "delta_boot_low", "delta_boot_high")
    if e is None:
        return dict.fromkeys(names, "")
    return {name: "" if getattr(e, name) is None else getattr(e, name) for name in names}


def power_level(comparisons: int) -> str:
    """The level the seeds-for-power column uses, as the caption prints it: `5%`, `1.25%`."""
    return f"{ALPHA / max(1, comparisons) * 100:.3g}%"


def _paper_cell(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.2f}" if value > 1 else f"{value:.4f}"


def csv_records(recs: list[Record], data: dict[str, str]) -> list[dict]:
    out = []
    for rec in recs:
        d = rec.delta or Delta(float("nan"))
        out.append({
            "setting": rec.setting or rec.label, "baseline": rec.baseline, "runs": len(rec.run_ids),
            "seeds": " ".join(rec.seeds), "epochs": " ".join(rec.epochs), **data,
            **({"epochs_run": " ".join(map(str, rec.length.ran))}
               if rec.length and rec.length.early else {}),
            **{f"{m}_{stat}": v for m, (mean, sd) in rec.stats.items()
               for stat, v in (("mean", mean), ("std", sd))},
            "delta_accuracy_points": d.diff, "delta_ci95_low": d.low, "delta_ci95_high": d.high,
            "delta_p": d.p, "delta_test": d.test, "delta_p_holm": d.p_holm,
            "seeds_for_80pct_power": d.seeds_needed, **evidence_csv(rec),
            **{f"report {t}": v for t, v in rec.paper.items()},
            "run_ids": " ".join(rec.run_ids)})
    # every record gets every column, so the CSV has one header for all
    keys = list(dict.fromkeys(k for r in out for k in r))
    return [{k: r.get(k, "") for k in keys} for r in out]
