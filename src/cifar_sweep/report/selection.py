"""Which runs a table holds: a pure function of the runs' frame (`results.py`), so that what a
table shows can be tested without a store.

A table compares *settings* (a row each: all finished runs of one setting hash, one per seed, the
newest where a seed was trained twice, from any sweep or single command). What it holds is decided
by its *fixed settings*: the values every run of the reference sweep shares (by default the newest
sweep; or one chosen by id, or the newest matching `where`), over every key that decides a result
(the config but where it is logged, the data's fingerprint, the device type, the precision used,
the code's parts and torch's version). A run that differs in any fixed key is left out, and so is
a run of a row's setting made by other code than the row's (the reference sweep's, else the
newest); the table lists what was left out, by the keys that differ: nothing is mixed silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from cifar_sweep.plan.identity import NOT_RESULT_KEYS, OFF_WHEN_NULL, SEED_KEY

# what decides a result besides the config keys: these columns of the frame, and the code's
# parts (code.model, code.training, ...: a part that differs between rows, such as the model in
# the arch study, is checked within each row instead)
DERIVED_KEYS = ("data_fingerprint", "device_type", "torch_version")
CODE = "code."
MISSING = "(none)"


@dataclass
class Row:
    """One setting: its label, the overrides that name it, its runs (one per seed)."""

    key: str
    label: str
    overrides: dict[str, str]
    run_ids: list[str]
    seeds: list[str]
    order: tuple                 # where the row stands: see _first_seen
    baseline: bool = False


@dataclass
class Selection:
    rows: list[Row]
    reference_sweep: str
    axes: list[str]              # the override keys that name the rows (the sweep's, but seeds)
    fixed: dict[str, str]        # result key -> the value every row shares
    left_out: list[tuple[dict[str, str], list[str]]] = field(default_factory=list)
    sweeps_used: list[str] = field(default_factory=list)

    @property
    def baseline(self) -> Row | None:
        return next((r for r in self.rows if r.baseline), None)


def result_keys(frame: pd.DataFrame) -> list[str]:
    """The columns that decide a run's result, the seed aside."""
    def excluded(key: str) -> bool:
        return key == SEED_KEY or any(key == k or key.startswith(k + ".") for k in NOT_RESULT_KEYS)

    config = [k for k in frame.attrs.get("config_keys", []) if not excluded(k)]
    return (config + [k for k in DERIVED_KEYS if k in frame.columns]
            + [k for k in frame.columns if k.startswith(CODE)])


def _values(frame: pd.DataFrame) -> pd.DataFrame:
    """The result keys as strings, missing ones as `(none)`; the precision the run resolved
    replaces `trainer.precision` (`auto` is fp32 on one machine, bf16 on another)."""
    keys = result_keys(frame)
    values = frame.reindex(columns=keys).astype(object).where(frame.reindex(columns=keys).notna(),
                                                              MISSING).astype(str)
    if "trainer.precision" in values and "precision" in frame:
        resolved = frame["precision"].notna()
        values.loc[resolved, "trainer.precision"] = frame.loc[resolved, "precision"].astype(str)
    for section, switch in OFF_WHEN_NULL.items():  # off: as absent, as in the config hash
        if f"{section}.{switch}" in values:
            off = values[f"{section}.{switch}"].isin(["None", MISSING])
            for key in [k for k in values if k.startswith(section + ".")]:
                values.loc[off, key] = MISSING
    if "device_type" not in frame and "device" in frame:  # `cuda:1` and `cuda` are one type
        values["device_type"] = frame["device"].fillna(MISSING).astype(str).str.split(":").str[0]
    return values


def parse_overrides(text) -> dict[str, str]:
    if not isinstance(text, str):
        return {}
    return dict(o.partition("=")[::2] for o in text.split() if "=" in o)


def _holds(sweeps_cell, sweep_id: str) -> bool:
    return isinstance(sweeps_cell, str) and sweep_id in sweeps_cell.split()


def reference_sweep(jobs: pd.DataFrame, sweeps: pd.DataFrame, sweep: str | None = None,
                    where: dict[str, str] | None = None) -> str:
    """The sweep whose fixed settings decide the table: `sweep` (an id, or `latest`), else the
    newest sweep holding a finished run (matching `where`, if given). Raises LookupError."""
    finished = jobs[jobs.status == "FINISHED"]
    values = _values(finished) if len(finished) else None
    candidates = sweeps.sort_values("start_time", ascending=False).run_id.tolist()
    if sweep not in (None, "latest"):
        if sweep not in candidates:
            raise LookupError(f"sweep {sweep} is not a sweep of this experiment")
        candidates = [sweep]
    for sweep_id in candidates:
        held = finished.sweeps.map(lambda cell, s=sweep_id: _holds(cell, s))
        if not held.any():
            continue
        if where and values is not None:  # (values: there is a finished run)
            rows = values[held]
            if not all(k in rows and (rows[k] == v).all() for k, v in where.items()):
                continue
        return sweep_id
    raise LookupError("no sweep with a finished run" + (f" where {where}" if where else ""))


def choose(jobs: pd.DataFrame, sweeps: pd.DataFrame, *, sweep: str | None = None,
           where: dict[str, str] | None = None, baseline: str | None = None,
           default_baseline_first: bool = False, axes: list[str] | None = None) -> Selection:
    """The table's rows: see the module's docstring. `baseline`: an override (`lr.value=0.005`)
    naming the baseline row; else, with `default_baseline_first`, the reference sweep's first
    setting. `axes`: the override keys that name rows (a preset's swept keys); by default what
    the reference sweep varied but the seed. Raises LookupError when there is nothing to show."""
    jobs = jobs[(jobs.status == "FINISHED") & jobs.trial.isna()] if "trial" in jobs else jobs
    ref = reference_sweep(jobs, sweeps, sweep, where)
    values = _values(jobs)
    in_ref = jobs.sweeps.map(lambda cell: _holds(cell, ref))
    if not axes:
        axes = [k for k in str(sweeps.set_index("run_id").varying.get(ref, "")).split()
                if k != SEED_KEY]
    ref_values = values[in_ref]
    # an axis is never fixed, even where the reference sweep holds one value of it; nor is a key
    # none of its runs has (an option of a config group it does not use: Adagrad's lr_decay in
    # a sweep of SGD and Adam)
    fixed = {k: ref_values[k].iloc[0] for k in ref_values
             if ref_values[k].nunique() == 1 and ref_values[k].iloc[0] != MISSING
             and k not in {a.lstrip("+") for a in axes}}
    fixed.update(where or {})
    varying = [k for k in ref_values if k not in fixed]

    # the runs that share the fixed settings; the others, grouped by what differs
    differs = pd.DataFrame({k: values[k] != v for k, v in fixed.items() if k in values},
                           index=values.index)
    keep = ~differs.any(axis=1) if len(differs.columns) else pd.Series(True, index=values.index)
    left: dict[tuple, list[str]] = {}
    for index in jobs.index[~keep]:
        diff = tuple((k, values.at[index, k]) for k in differs.columns if differs.at[index, k])
        left.setdefault(diff, []).append(jobs.at[index, "run_id"])
    members = jobs[keep]
    starts = dict(zip(sweeps.run_id, sweeps.start_time))
    rows = _rows(members, values[keep], ref, axes, varying, left, starts)
    for row in rows:
        row.baseline = bool(baseline) and baseline in {f"{k}={v}" for k, v in row.overrides.items()}
    if not baseline and default_baseline_first and rows:
        first = first_job(sweeps, ref)
        # the reference sweep's first job's row, whatever order re-runs, continuations or added
        # seeds put the rows in (a run finished before keeps its first sweep's place)
        chosen = next((r for r in rows if r.overrides and first
                       and all(first.get(k) == v for k, v in r.overrides.items())), rows[0])
        chosen.baseline = True
    used = members[members.run_id.isin([i for r in rows for i in r.run_ids])]
    sweeps_used = sorted({s for cell in used.sweeps.dropna() for s in str(cell).split()})
    return Selection(rows, ref, axes, fixed,
                     sorted(((dict(k), v) for k, v in left.items()), key=lambda x: -len(x[1])),
                     sweeps_used)


def first_job(sweeps: pd.DataFrame, sweep_id: str) -> dict[str, str]:
    """The first job's values of a sweep (`optimizer=sgd,adam`: optimizer=sgd): its own tag, or
    for sweeps logged before it, the first value of each of its overrides, in their order."""
    by_id = sweeps.set_index("run_id")
    if sweep_id not in by_id.index:
        return {}
    tagged = by_id.get("first_job", pd.Series(dtype=object)).get(sweep_id)
    if isinstance(tagged, str) and tagged:
        return parse_overrides(tagged)
    text = by_id.get("overrides", pd.Series(dtype=object)).get(sweep_id)
    if not isinstance(text, str) or text == "(no overrides)":
        return {}
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(text.split())
        return {o.get_key_element(): (next(iter(o.sweep_string_iterator())) if o.is_sweep_override()
                                      else o.get_value_element_as_str()) for o in parsed}
    except Exception:  # a glob needs the config to expand; then the rows' own order decides
        return {}


def _one_code(group: pd.DataFrame, values: pd.DataFrame, ref: str,
              left: dict[tuple, list[str]]) -> pd.DataFrame:
    """A setting's runs made by one code version: the reference sweep's (else the newest run's);
    runs of other code go to `left`, by the parts that differ."""
    if "code_version" not in group or group.code_version.nunique(dropna=False) < 2:
        return group
    in_ref = group[group.sweeps.map(lambda cell: _holds(cell, ref))]
    chosen = (in_ref if len(in_ref) else group).code_version.iloc[0]
    same = group.code_version.fillna(MISSING) == (chosen if isinstance(chosen, str) else MISSING)
    model = values.loc[group.index[same][0]]
    parts = [k for k in values if k.startswith(CODE)]
    for index in group.index[~same]:
        diff = tuple((k, values.at[index, k]) for k in parts if values.at[index, k] != model[k])
        left.setdefault(diff or (("code_version", str(group.at[index, "code_version"])),),
                        []).append(group.at[index, "run_id"])
    return group[same]


def _rows(members: pd.DataFrame, values: pd.DataFrame, ref: str, axes: list[str],
          varying: list[str], left: dict[tuple, list[str]], starts: dict) -> list[Row]:
    """A row per setting. The frame's columns are read once into plain lists and each
    setting's runs are picked by position: through pandas group by group this was about 25 ms
    a row, so 2 minutes for a table of 10,000 runs (docs/speed.md)."""
    key, missing = members.setting_hash, members.setting_hash.isna()
    if missing.any():  # older runs without a setting hash: their varying values (only theirs:
        # joined row by row for 10,000 runs this was 1.1 s)
        key = key.where(~missing, values.loc[missing, varying].astype(str).agg(" ".join, axis=1)
                        if varying else "(all)")
    # newest first (stable: runs started in the same millisecond keep the frame's order)
    by_time = np.argsort(-members.start_time.to_numpy().astype("int64"), kind="stable")
    keys = key.to_numpy()
    run_ids = members.run_id.to_numpy()
    seeds = members.seed.to_numpy()
    seed_num = pd.to_numeric(members.seed, errors="coerce").to_numpy(dtype=float)
    in_ref = members.sweeps.map(lambda cell: _holds(cell, ref)).to_numpy()
    overrides_text = members.overrides.to_numpy()
    first_seen = [_first_seen(sweeps, job, start, starts) for sweeps, job, start in zip(
        members.sweeps, pd.to_numeric(members.job_num, errors="coerce"), members.start_time)]
    code = members.code_version.fillna(MISSING).to_numpy() if "code_version" in members else None
    axis_values = {a: values[a].to_numpy() for a in axes if a in values}
    varying_values = {k: values[k].to_numpy() for k in varying}

    groups: dict[str, list[int]] = {}
    for position in by_time:
        groups.setdefault(keys[position], []).append(position)
    rows, named_by_axes, firsts = [], {}, {}
    for setting in dict.fromkeys(keys.tolist()):  # the settings in the frame's order
        every = groups[setting]
        group = every
        if code is not None and len({code[p] for p in every}) > 1:
            kept = set(_one_code(members.iloc[every], values, ref, left).run_id)
            group = [p for p in every if run_ids[p] in kept]
        newest, seen = [], set()
        for p in group:  # a seed trained twice: its newest run
            if seeds[p] not in seen:
                seen.add(seeds[p])
                newest.append(p)
        newest.sort(key=lambda p: (np.isnan(seed_num[p]), seed_num[p]))
        named = [p for p in group if in_ref[p]] or group
        overrides = {}
        for p in named:
            # an axis's value: as the run's overrides gave it, else its config value
            parsed = {**{a: column[p] for a, column in axis_values.items()},
                      **parse_overrides(overrides_text[p])}
            if all(a in parsed for a in axes):
                overrides = {a: parsed[a] for a in axes}
                break
        by_axes = bool(overrides) and bool(axes)
        first = {k: column[group[0]] for k, column in varying_values.items()}
        if not by_axes:  # a run of no sweep with default values: name it by them
            overrides = dict(first)
        rows.append(Row(str(setting), "", overrides, [run_ids[p] for p in newest],
                        [str(seeds[p]) for p in newest], min(first_seen[p] for p in every)))
        named_by_axes[id(rows[-1])] = by_axes
        firsts[id(rows[-1])] = first
    _name_rows(rows, named_by_axes, firsts, varying)
    return sorted(rows, key=lambda r: r.order)


def _label(overrides: dict[str, str]) -> str:
    return (next(iter(overrides.values())) if len(overrides) == 1
            else " ".join(f"{k}={v}" for k, v in overrides.items()) or "(all)")


def _differing(a, b, keys: list[str]) -> dict[str, str]:
    """The keys where run `a`'s values differ from run `b`'s: config keys first; the code's
    parts and the derived keys only where no config key tells them apart."""
    config = [k for k in keys if not k.startswith(CODE) and k not in DERIVED_KEYS]
    for chosen in (config, keys):
        diff = {k: a[k] for k in chosen if a[k] != b[k]}
        if diff:
            return diff
    return {}


def _name_rows(rows: list[Row], by_axes: dict[int, bool], firsts: dict[int, dict],
               varying: list[str]) -> None:
    """Every row a label of its own, named by the setting that differs: a row the axes name
    keeps the axes' values; another (a single run with, say, `optimizer.momentum=0.5`) is named
    as the nearest such row plus what differs from it; rows the axes name alike (single runs of
    the same axis value with another setting) get the keys that tell them apart added."""
    anchors = [r for r in rows if by_axes[id(r)]]
    for row in rows:
        if by_axes[id(row)] or not anchors:
            continue
        diffs = [(_differing(firsts[id(row)], firsts[id(a)], varying), a) for a in anchors]
        diff, nearest = min(diffs, key=lambda d: len(d[0]))
        if diff and len(diff) < len(row.overrides):
            row.overrides = {**nearest.overrides, **diff}
    for row in rows:
        row.label = _label(row.overrides)
    by_label: dict[str, list[Row]] = {}
    for row in rows:
        by_label.setdefault(row.label, []).append(row)
    for same in by_label.values():
        if len(same) < 2:
            continue
        # the row that came first (the sweep's own) keeps its name; the others get what differs
        first, *others = sorted(same, key=lambda r: r.order)
        for row in others:
            diff = _differing(firsts[id(row)], firsts[id(first)], varying) or {
                "setting": row.key[:12]}
            row.overrides = {**row.overrides, **diff}
            row.label = _label(row.overrides)


def _first_seen(sweeps, job, start_time, starts: dict) -> tuple:
    """Rows come in the order the sweeps first ran them: the earliest sweep holding the run, its
    job number there; runs of no sweep after, by start time."""
    held = [starts[s] for s in str(sweeps or "").split() if s in starts]
    if held:
        return (min(held), 0 if pd.isna(job) else job, start_time)
    return (start_time, 0, start_time)


def describe_left_out(selection: Selection, limit: int = 3) -> list[str]:
    """`trainer.batch_size=256: 2 runs, not mixed in`, one line per group of left-out runs."""
    lines = []
    for diff, run_ids in selection.left_out:
        shown = ", ".join(f"{k}={v}" for k, v in list(diff.items())[:limit])
        more = f" and {len(diff) - limit} more keys" if len(diff) > limit else ""
        lines.append(f"{shown}{more}: {len(run_ids)} run{'s' * (len(run_ids) != 1)}, not mixed in")
    return lines
