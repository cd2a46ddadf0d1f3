"""Paired comparison of two models on the same tiles and noise seeds, with 95 % bootstrap intervals.

Each model super-resolves every tile ``--seeds`` times (seed s, s + 1, ... for the whole
batch) with one solver; per metric the table gives each model's mean ± half its 95 %
interval and the paired difference B - A with its interval (``cresshift/stats.py``: bootstrap
over tiles, seeds nested). A difference is a win or a loss only when its interval excludes zero.

    python benchmarks/compare_models.py runs/uniform/last.safetensors runs/loss-aware/last.safetensors \
        --tiles validation --solver ddim --seeds 4

``--tiles``: a folder of HR tiles, ``test`` (the bundled held-out tiles, the default) or
``validation`` (the tiles the trainer validates on).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from cresshift.data.io import bicubic_down, list_images, load_image
from cresshift.metrics import LPIPSMetric, psnr_y, ssim_y
from cresshift.models.pipeline import bundled_path, load_pipeline
from cresshift.stats import mean_interval, paired_difference

#: (key, heading, higher is better, digits)
METRICS = (("psnr_y", "PSNR-Y (dB)", True, 3), ("ssim_y", "SSIM-Y", True, 4), ("lpips", "LPIPS-alex", False, 4))


def tiles(arg: str) -> torch.Tensor:
    if arg == "validation":
        from cresshift.data.photos import validation_tiles
        return torch.stack(validation_tiles(64))
    folder = bundled_path("bundled").parent / "testset" if arg == "test" else Path(arg)
    return torch.stack([load_image(p) for p in list_images([str(folder)])])


def signed(x: float, digits: int) -> str:
    """A difference with ``digits`` decimals, or in scientific notation where those would round it to zero."""
    return f"{x:+.1e}" if x != 0 and abs(x) < 0.5 * 10.0 ** -digits else f"{x:+.{digits}f}"


def measure(model: str, hr: torch.Tensor, args: argparse.Namespace, lpips: LPIPSMetric) -> dict[str, np.ndarray]:
    """Per metric the values[tile, seed] of one model."""
    pipe = load_pipeline(model, cpu_bf16=())
    lr = bicubic_down(hr, pipe.sf)
    out: dict[str, list[np.ndarray]] = {key: [] for key, *_ in METRICS}
    for k in range(args.seeds):
        sr = pipe.run(lr, solver=args.solver, nfe=args.nfe, rho=args.rho, seed=args.seed + k).sr.cpu()
        out["psnr_y"].append(psnr_y(sr, hr).numpy())
        out["ssim_y"].append(ssim_y(sr, hr).numpy())
        if lpips.available:
            out["lpips"].append(lpips(sr, hr).double().cpu().numpy())
    return {key: np.stack(v, 1) for key, v in out.items() if v}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_a")
    ap.add_argument("model_b")
    ap.add_argument("--tiles", default="test")
    ap.add_argument("--solver", default="ddim")
    ap.add_argument("--nfe", type=int, default=15)
    ap.add_argument("--rho", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--labels", nargs=2, default=None, help="names of A and B in the table")
    ap.add_argument("--report", default=None, help="append the table (Markdown) to this file")
    args = ap.parse_args()
    for m in (args.model_a, args.model_b):
        if m.endswith(".safetensors") and not Path(m).is_file():
            ap.error(f"{m}: no such file")
    hr = tiles(args.tiles)
    lpips = LPIPSMetric("alex")
    a, b = measure(args.model_a, hr, args, lpips), measure(args.model_b, hr, args, lpips)
    name_a, name_b = args.labels or (args.model_a, args.model_b)
    lines = [f"{len(hr)} {args.tiles} tiles, {args.solver} rho {args.rho:g} NFE {args.nfe}, seeds "
             f"{args.seed}..{args.seed + args.seeds - 1}; A = {name_a}, B = {name_b}; ± and [..]: 95 % bootstrap "
             "intervals over tiles (seeds nested), B - A paired" + ("" if lpips.available else f"; {lpips.reason}"),
             "", "| metric | A | B | B - A [95 % interval] | verdict |", "|---|---|---|---|---|"]
    for key, head, higher, digits in METRICS:
        if key not in a:
            continue
        ia, ib, d = mean_interval(a[key]), mean_interval(b[key]), paired_difference(b[key], a[key])
        verdict = "no significant difference" if not d.significant else \
            ("B better" if (d.mean > 0) == higher else "A better")
        lines.append(f"| {head} | {ia.mean:.{digits}f} ± {ia.half_width:.{digits}f} | {ib.mean:.{digits}f} ± "
                     f"{ib.half_width:.{digits}f} | {signed(d.mean, digits)} [{signed(d.lo, digits)}, {signed(d.hi, digits)}] | "
                     f"{verdict} |")
    command = " ".join(["python benchmarks/compare_models.py", *sys.argv[1:]])
    text = "\n".join(lines) + f"\n\nCommand: `{command}`\n"
    print(text)
    if args.report:
        with open(args.report, "a", encoding="utf-8") as fh:
            fh.write(text + "\n")
        print(f"appended to {args.report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
