"""Bench reports: the table (Markdown, terminal cells, CSV), the footer, results.json and the plots."""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Optional, Sequence

from .rows import BICUBIC
from .settings import METRICS, BenchResult
from .summary import INTERVALS_NOTE


def _fmt(v: Any, digits: int) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return f"{v:.{digits}f}"


def headings(lpips_name: str) -> list[str]:
    """The table's column headings: the row, one per metric of ``METRICS`` (arrow: better), then the timings."""
    metrics = [f"{lpips_name if key == 'lpips' else name} {'↑' if higher else '↓'}" for key, name, higher, _ in METRICS]
    return ["solver", "rho", "NFE", *metrics, "time (s)", "img/s"]


def table_cells(entry: dict[str, Any]) -> list[str]:
    """The formatted cells of one row (as in table.md and the terminal)."""
    cells = [entry["label"], "" if entry["rho"] is None else f"{entry['rho']:g}", str(entry["nfe"])]
    cells += [_metric_cell(entry, k, d) for k, _, _, d in METRICS]
    cells += [f"{entry['seconds']:.2f}", _fmt(entry["images_per_s"], 2)]
    return cells


def _metric_cell(entry: dict[str, Any], key: str, digits: int) -> str:
    """``mean ± half-width of the 95 % interval``, `` *`` when the paired difference to the Baseline excludes 0."""
    text = _fmt(entry[key], digits)
    ci = entry.get(f"{key}_ci")
    if ci is not None and entry[key] is not None and not math.isinf(entry[key]):
        text += f" ± {(ci[1] - ci[0]) / 2:.{digits}f}"
    diff = (entry.get("vs_baseline") or {}).get(key)
    return text + (" *" if diff and diff["significant"] else "")


def to_markdown(result: BenchResult) -> str:
    heads = headings(result.lpips_name)
    lines = ["| " + " | ".join(heads) + " |", "|" + "|".join("---" for _ in heads) + "|"]
    lines += ["| " + " | ".join(table_cells(e)) + " |" for e in result.table]
    lines += ["", *footer(result)]
    return "\n".join(lines) + "\n"


def footer(result: BenchResult) -> list[str]:
    s = result.meta["settings"]
    data = s["hr"] or "the bundled held-out tiles"
    lines = [f"{len(result.items)} images from {data}" + (f" (LR from {s['lr']})" if s["lr"] else
                                                            f" (LR by bicubic x{result.meta['sf']})")
             + f"; seed {s['seed']} + image index" + (f", {s['seeds']} noise seeds per image (the same in every row)"
                                                       if s.get("seeds", 1) > 1 else "")
             + f"; device {result.meta['device']['device']}.",
             "NFE is the number of network calls each row used; time is compute seconds summed over images.",
             f"PSNR / SSIM on the 8-bit-quantised images (Y: BT.601), "
             f"{'crop ' + str(s['crop_border']) + ' px' if s.get('crop_border') else 'no border crop'}; "
             f"LPIPS on the float images in [-1, 1].",
             result.meta.get("intervals", INTERVALS_NOTE) + "."]
    if any(r.baseline for r in result.rows):
        lines.append(f"Baseline: the Markov sampler at NFE = T on {result.meta['models'].get('baseline')} "
                     f"(its discrete chain).")
    if any(r.solver == BICUBIC for r in result.rows):
        lines.append(f"bicubic: the bicubic x{result.meta['sf']} upsampling of the LR input (no network), "
                     f"scored like every row.")
    lines += result.notes
    if s.get("command"):
        lines.append(f"Command: `{s['command']}`")
    return lines


def to_csv(result: BenchResult) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    keys = ["label", "solver", "rho", "nfe", "nfe_budget", *(m for m, *_ in METRICS), "images",
            "seconds", "images_per_s", "schedule", "options"]
    extra = [f"{m}_{part}" for m, *_ in METRICS for part in ("lo", "hi", "diff", "diff_lo", "diff_hi", "significant")]
    w.writerow(keys + ["samples"] + extra)
    for e in result.table:
        row = ["" if e[k] is None else (json.dumps(e[k]) if isinstance(e[k], dict) else e[k]) for k in keys]
        row.append(e.get("samples", e["images"]))
        for m, *_ in METRICS:
            diff = (e.get("vs_baseline") or {}).get(m)
            row += e.get(f"{m}_ci") or ["", ""]
            row += [diff["diff"], *diff["ci"], int(diff["significant"])] if diff else ["", "", "", ""]
        w.writerow(row)
    return buf.getvalue()


def _plots(result: BenchResult, out: Path) -> tuple[list[str], Optional[str]]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return [], "plots skipped: matplotlib is not installed (pip install 'cresshift[plot]')"
    from ..data.io import atomic_write

    written = []
    for key, name, higher, _ in METRICS:
        if all(e[key] is None for e in result.table):
            continue
        fig, ax = plt.subplots(figsize=(5, 3.5))
        series: dict[str, list[tuple[int, float, float, float]]] = {}
        for e in result.table:
            if e[key] is None or not isinstance(e["nfe"], int):
                continue
            label = "Baseline (markov)" if e["baseline"] else \
                e["solver"] + ("" if e["rho"] is None else f" ρ={e['rho']:g}")
            lo, hi = e.get(f"{key}_ci") or (e[key], e[key])
            series.setdefault(label, []).append((e["nfe"], e[key], e[key] - lo, hi - e[key]))
        for label, pts in series.items():
            pts.sort()
            ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[[p[2] for p in pts], [p[3] for p in pts]],
                        marker="*" if label.startswith("Baseline") else "o", capsize=3,
                        linestyle="-" if len(pts) > 1 else "none", label=label)
        heading = result.lpips_name if key == "lpips" else name
        ax.set_xlabel("NFE (network calls)")
        ax.set_ylabel(f"{heading} {'↑' if higher else '↓'} (bars: 95 % interval)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
        fig.tight_layout()
        path = out / f"plot_{key}.png"
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
        plt.close(fig)
        written.append(str(path))
    if any(e["lpips"] is not None and e["psnr_y"] is not None for e in result.table):
        written.append(perception_distortion_plot(result.table, result.lpips_name, out / "plot_pd.png"))
    return written, None


def perception_distortion_plot(table: Sequence[dict[str, Any]], lpips_name: str, path: Path) -> str:
    """LPIPS against PSNR-Y, one labelled point per table row (Blau & Michaeli's perception-distortion plane).

    Rows need ``lpips``, ``psnr_y``, ``solver``, ``rho``, ``nfe`` and ``baseline``; rows without
    LPIPS are left out. A row's ``vs_baseline`` (``summarize``) becomes error bars: the 95 %
    interval of its paired difference to the baseline, drawn around the point (the spread over
    images would hide every difference). Written atomically. Needs matplotlib.
    """
    from ..data.io import atomic_write

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for e in table:
        if e["lpips"] is None or e["psnr_y"] is None:
            continue
        label = "Baseline (markov)" if e["baseline"] else \
            e["solver"] + ("" if e["rho"] is None else f" ρ={e['rho']:g}") + (f" @{e['nfe']}" if e["nfe"] else "")
        ax.scatter(e["psnr_y"], e["lpips"], marker="*" if e["baseline"] else "o", s=60 if e["baseline"] else 20)
        paired = e.get("vs_baseline") or {}
        if paired.get("psnr_y") and paired.get("lpips"):  # the paired difference's interval, around the point
            (x_lo, x_hi), (y_lo, y_hi) = paired["psnr_y"]["ci"], paired["lpips"]["ci"]
            dx, dy = paired["psnr_y"]["diff"], paired["lpips"]["diff"]
            ax.errorbar(e["psnr_y"], e["lpips"], xerr=[[dx - x_lo], [x_hi - dx]], yerr=[[dy - y_lo], [y_hi - dy]],
                        fmt="none", elinewidth=0.6, alpha=0.6)
        ax.annotate(label, (e["psnr_y"], e["lpips"]), fontsize=5, xytext=(3, 2), textcoords="offset points")
    ax.set_xlabel("PSNR-Y (dB) ↑")
    ax.set_ylabel(f"{lpips_name} ↓")
    ax.set_title("perception–distortion: better is down and right\n(bars: 95 % interval of the paired difference to the baseline)", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)
    return str(path)


def write_outputs(result: BenchResult, out: Path) -> list[str]:
    """results.json, table.md, table.csv and plot_<metric>.png under ``out`` (atomically); returns the paths."""
    from ..data.io import atomic_write, strict_json

    out.mkdir(parents=True, exist_ok=True)

    def text(path: Path, content: str) -> str:
        atomic_write(path, content)
        return str(path)

    plots, note = _plots(result, out)
    if note:
        result.notes.append(note)
    paths = [text(out / "table.md", to_markdown(result)), text(out / "table.csv", to_csv(result))]
    paths.append(text(out / "results.json", strict_json(result_json(result), indent=1)))
    return paths + plots


def result_json(result: BenchResult) -> dict[str, Any]:
    """results.json: the table, every per-image value, the settings, versions and device."""
    return {"table": result.table, "notes": result.notes, **result.meta, "records": result.records}


def command_line(argv: Sequence[str]) -> str:
    """How the sweep was started (``cresshift`` + its arguments), for table.md."""
    import shlex

    return "cresshift " + " ".join(shlex.quote(str(a)) for a in argv)
