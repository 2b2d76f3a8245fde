"""An adaptive seed budget for a preset study: 3 seeds for every row, then more seeds only for
the rows whose difference to the baseline the seeds cannot yet tell apart, up to what the
measured spread says would tell it apart with 80% power (the table's column, from
`statistics.judge`), or a cap."""

from __future__ import annotations

from cifar_sweep.report.studies import Table

FIRST_ROUND = 3
CAP = 8


def second_round(table: Table, cap: int = CAP) -> list[tuple[int, list[str]]]:
    """[(seeds to reach, the axis's values: the baseline's first, then the undecided rows')]:
    one sweep each, from seed FIRST_ROUND up. Empty when every comparison is decided, or when
    the table has no baseline or not exactly one axis."""
    base = next((r for r in table.records if r.baseline), None)
    axes = table.selection.axes
    if base is None or len(axes) != 1:
        return []
    axis = axes[0]
    targets: dict[int, list[str]] = {}
    for rec in table.records:
        d = rec.delta
        if d is None or d.seeds_tell_apart is not False:
            continue
        target = min(cap, max(d.seeds_needed or cap, len(rec.seeds) + 1))
        if target > len(rec.seeds):
            targets.setdefault(target, []).append(_value(table, rec, axis))
    base_value = _value(table, base, axis)
    return [(n, [base_value, *values]) for n, values in sorted(targets.items())]


def _value(table: Table, rec, axis: str) -> str:
    row = next(r for r in table.selection.rows if r.run_ids == rec.run_ids)
    return row.overrides[axis]
