"""Perception-distortion plot (LPIPS against PSNR-Y) from a quality-gate report or a bench results.json.

``cresshift bench`` writes ``plot_pd.png`` itself; this draws the same plot for the table of
``benchmarks/quality_gate.py`` (bicubic, the baseline and every solver at one NFE):

    python benchmarks/pd_plot.py benchmarks/logs/quality_gate.md docs/figures/bundled_pd.png
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from cresshift.bench import perception_distortion_plot


def _mean(text: str) -> float:
    """A report cell, ``mean`` or ``mean ± half``: the mean."""
    return float(text.partition("±")[0])


def gate_table(text: str) -> tuple[list[dict[str, Any]], str]:
    """The rows of a quality-gate report's Markdown table as bench-style table entries, and the LPIPS heading."""
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    heads = [h.strip() for h in lines[0].strip("|").split("|")]
    lpips_name = next(h for h in heads if h.startswith("LPIPS"))
    table = []
    for line in lines[1:]:
        cells = dict(zip(heads, (c.strip() for c in line.strip("|").split("|"))))
        baseline = "baseline" in cells["model"]
        solver = cells["solver"] if cells["model"] == "continuous" else cells["model"]
        table.append({"solver": solver, "rho": None if cells["rho"] == "-" else float(cells["rho"]),
                      "nfe": int(cells["NFE"]), "baseline": baseline, "psnr_y": _mean(cells["PSNR-Y (dB)"]),
                      "lpips": _mean(cells[lpips_name])})
    return table, lpips_name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", help="quality_gate.md or a bench results.json")
    ap.add_argument("out", help="PNG to write")
    args = ap.parse_args()
    text = Path(args.source).read_text()
    if args.source.endswith(".json"):
        result = json.loads(text)
        table, lpips_name = result["table"], result["lpips"]["name"]
    else:
        table, lpips_name = gate_table(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    print(f"wrote {perception_distortion_plot(table, lpips_name, Path(args.out))}")


if __name__ == "__main__":
    main()
