"""Bench summary: per-row means with 95 % bootstrap intervals and paired differences to the Baseline row."""
from __future__ import annotations

from typing import Any, Iterable, Optional, Sequence

from .data import Item
from .rows import Row
from .settings import METRICS


INTERVALS_NOTE = ("± is half the width of the 95 % percentile bootstrap interval over images (seeds nested); "
                  "* marks a paired difference to the Baseline row (same images and seeds) whose 95 % paired "
                  "bootstrap interval excludes zero")


def summarize(rows: Sequence[Row], records: Iterable[dict[str, Any]], items: Sequence[Item], *,
              seeds: int = 1) -> list[dict[str, Any]]:
    """Mean of every metric per row over the images and ``seeds`` draws, NFE actually used, compute seconds, images/s.

    LPIPS is None (shown "n/a") unless every image of the row has it. Complete rows also get
    ``<metric>_ci`` (the 95 % bootstrap interval) and, beside a Baseline row, ``vs_baseline``:
    per metric the mean paired difference row - Baseline, its interval and whether it excludes 0.
    """
    by_row: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        by_row.setdefault(rec["row"], []).append(rec)
    names = {it.name for it in items}
    table = []
    grids: dict[str, dict[str, Any]] = {}
    for row in rows:
        recs = [r for r in by_row.get(row.key, []) if r["image"] in names and int(r.get("draw", 0)) < seeds]
        n = len(recs)
        entry: dict[str, Any] = {"label": row.label, "solver": row.solver, "rho": row.rho, "nfe_budget": row.nfe,
                                 "schedule": row.schedule, "options": dict(row.options), "baseline": row.baseline,
                                 "images": len({r["image"] for r in recs}), "samples": n,
                                 "complete": n == len(items) * seeds}
        used = sorted({int(r["nfe"]) for r in recs})
        entry["nfe"] = used[0] if len(used) == 1 else (f"{used[0]}-{used[-1]}" if used else None)
        for key, *_ in METRICS:
            vals = [r.get(key) for r in recs]
            entry[key] = (sum(vals) / n) if n and all(v is not None for v in vals) else None
        secs = sum(float(r["seconds"]) for r in recs)
        entry["seconds"] = secs
        entry["images_per_s"] = (n / secs) if secs > 0 else None
        grids[row.key] = _metric_grids(recs, items, seeds) if entry["complete"] else {}
        for key, *_ in METRICS:
            ci = _interval(grids[row.key].get(key))
            entry[f"{key}_ci"] = None if ci is None else [ci.lo, ci.hi]
        table.append(entry)
    base = next((r for r in rows if r.baseline), None)
    for row, entry in zip(rows, table):
        if base is not None and row is not base:
            entry["vs_baseline"] = {key: _difference(grids[row.key].get(key), grids[base.key].get(key))
                                    for key, *_ in METRICS}
    return table


def _metric_grids(recs: Sequence[dict[str, Any]], items: Sequence[Item], seeds: int) -> dict[str, Any]:
    """Per metric the values[image, draw] array of a complete row (metrics some image lacks are left out)."""
    import numpy as np

    at = {(r["image"], int(r.get("draw", 0))): r for r in recs}
    grids = {}
    for key, *_ in METRICS:
        vals = [[at[(it.name, k)].get(key) for k in range(seeds)] for it in items]
        if all(v is not None for row in vals for v in row):
            grids[key] = np.asarray(vals, dtype=np.float64)
    return grids


def _interval(grid: Any) -> Any:
    """The 95 % bootstrap interval of a grid's mean (None without a grid or with an infinite value)."""
    import numpy as np

    from ..stats import mean_interval

    if grid is None or not np.isfinite(grid).all():
        return None
    return mean_interval(grid)


def _difference(grid: Any, base: Any) -> Optional[dict[str, Any]]:
    """{"diff", "ci", "significant"}: the paired difference grid - base, or None where either is missing."""
    import numpy as np

    from ..stats import paired_difference

    if grid is None or base is None or not (np.isfinite(grid).all() and np.isfinite(base).all()):
        return None
    d = paired_difference(grid, base)
    return {"diff": d.mean, "ci": [d.lo, d.hi], "significant": d.significant}
