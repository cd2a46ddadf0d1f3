"""Quality gate of the bundled models on the held-out 64x64 test tiles (issues 4 and 12): LPIPS and PSNR-Y.

Rows: bicubic; the discrete model with the Markov sampler at NFE 15 (the original-ResShift
baseline); the continuous model with the Markov sampler and with every ODE solver at NFE 15.
Every comparison is a paired difference over the same tiles and seeds with its 95 % bootstrap
interval over tiles, seeds nested (``cresshift/stats.py``); it is a *win* only when the
interval lies on the better side of zero, a *loss* only when it lies on the worse side. Gate
(``gate``): with LPIPS, (1) the baseline wins against bicubic in LPIPS and PSNR-Y, (2) the
continuous model's best ODE row by LPIPS wins against the baseline in LPIPS with its PSNR-Y
interval above -0.1 dB; the earlier PSNR-Y / SSIM-Y gate is printed beside it. Writes the table (with the settings and
versions) to ``--report`` and a side-by-side PNG (LR, bicubic, baseline, best ODE solver, HR)
to ``--figure``. Seed ``seed + k`` for the whole batch in draw k of ``--seeds K``; LR =
``bicubic_down(HR, 4)``.

    python benchmarks/quality_gate.py --seeds 4 --figure docs/figures/bundled_side_by_side.png
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from cresshift.data.io import bicubic_down, list_images, load_image
from cresshift.metrics import LPIPSMetric, psnr_y, ssim_y
from cresshift.models.pipeline import bundled_path, load_pipeline, upsample_lr
from cresshift.stats import Difference, mean_interval, paired_difference

ROOT = Path(__file__).resolve().parents[1]
#: (solver, rho) rows for the continuous model; rho = 1 is the uniform grid t_k = k/T (design §6)
ODE_ROWS = [("euler", 1.0), ("euler", 4.0), ("euler", -8.0), ("heun", 1.0), ("heun", 4.0), ("heun", -8.0),
            ("ddim", 1.0), ("ddim", 2.0), ("ddim", 4.0), ("dpmpp-2m", 1.0), ("dpmpp-2m", 4.0), ("dpmpp-3m", 1.0)]


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--discrete", default="bundled-discrete", help="baseline model (discrete t)")
    ap.add_argument("--continuous", default="bundled", help="continuous-t model")
    ap.add_argument("--tiles", default=str(bundled_path("bundled").parent / "testset"))
    ap.add_argument("--nfe", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", type=int, default=1, help="noise draws K (seed, seed + 1, ...), the same in every row")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--report", default=str(ROOT / "benchmarks" / "logs" / "quality_gate.md"))
    ap.add_argument("--figure", default=None)
    ap.add_argument("--lpips-net", default="alex", choices=["alex", "vgg"])
    ap.add_argument("--context-pad", type=int, default=None,
                    help="mirrored border context in network pixels (default: each model's own; 0 = none)")
    ap.add_argument("--continuous-schedule", default=None, choices=["exact", "exp", "paper"],
                    help="schedule the continuous model's rows sample on (default: its own; e.g. exp with "
                         "--continuous bundled-discrete: the discrete weights on the fitted exp-alpha schedule)")
    args = ap.parse_args()
    if args.context_pad is not None and args.context_pad < 0:
        ap.error(f"--context-pad must be >= 0, got {args.context_pad}")
    if args.seeds < 1:
        ap.error(f"--seeds must be >= 1, got {args.seeds}")
    return args


def sample_rows(disc, cont, lr: torch.Tensor, bic: torch.Tensor, args: argparse.Namespace) -> list[tuple]:
    """(model, solver, rho, NFE, [SR batch per draw]) for every row; bicubic repeats its one output."""
    ctx = {"context_pad": args.context_pad}
    cctx = {**ctx, "schedule": args.continuous_schedule}
    specs = [("discrete (baseline)", disc, "markov", None, ctx), ("continuous", cont, "markov", None, cctx)]
    specs += [("continuous", cont, solver, rho, cctx) for solver, rho in ODE_ROWS]
    rows = [("bicubic", "-", "-", 0, [bic] * args.seeds)]
    for name, pipe, solver, rho, kw in specs:
        runs = [pipe.run(lr, solver=solver, nfe=args.nfe, rho=1.0 if rho is None else rho, seed=args.seed + k, **kw)
                for k in range(args.seeds)]
        rows.append((name, solver, "-" if rho is None else f"{rho:g}", runs[0].nfe, [r.sr.cpu() for r in runs]))
    return rows


def grids(srs: list[torch.Tensor], hr: torch.Tensor, lpips: LPIPSMetric) -> dict[str, np.ndarray]:
    """Per metric the values[tile, draw] of one row."""
    out = {"psnr_y": np.stack([psnr_y(sr, hr).numpy() for sr in srs], 1),
           "ssim_y": np.stack([ssim_y(sr, hr).numpy() for sr in srs], 1)}
    if lpips.available:
        out["lpips"] = np.stack([lpips(sr, hr).double().cpu().numpy() for sr in srs], 1)
    return out


def verdict(d: Difference, higher_is_better: bool = True) -> str:
    """win / loss when the interval excludes zero (in the metric's better direction), else no significant difference."""
    if not d.significant:
        return "no significant difference"
    return "win" if (d.mean > 0) == higher_is_better else "loss"


def diff_text(d: Difference, digits: int, unit: str = "") -> str:
    return f"{d.mean:+.{digits}f}{unit} [{d.lo:+.{digits}f}, {d.hi:+.{digits}f}]"


def main() -> int:
    args = parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    paths = list_images([args.tiles])
    hr = torch.stack([load_image(p) for p in paths])
    lr = bicubic_down(hr, 4)
    bic = upsample_lr(lr, 4).clamp(-1, 1)
    disc = load_pipeline(args.discrete, device=args.device, cpu_bf16=())
    cont = load_pipeline(args.continuous, device=args.device, cpu_bf16=())
    lpips = LPIPSMetric(args.lpips_net, device=args.device)
    rows = sample_rows(disc, cont, lr, bic, args)
    scores = [(name, solver, rho, nfe, grids(srs, hr, lpips), srs[0]) for name, solver, rho, nfe, srs in rows]
    text, gates = report(scores, lpips, args, len(paths), disc, cont)
    print(text)
    if args.report:
        write_report(args, text, paths, disc, cont)
    if args.figure:
        best = gates["best"]
        write_figure(args.figure, [("LR (nearest)", torch.nn.functional.interpolate(lr, scale_factor=4, mode="nearest")),
                                       ("bicubic", bic), (f"baseline: markov@{args.nfe}", scores[1][5]),
                                       (f"continuous: {best[1]} rho={best[2]}@{args.nfe}", best[5]), ("HR", hr)],
                     hr, [p.stem for p in paths])
        print(f"wrote {args.figure}")
    return 0 if gates["pass"] else 1


def report(scores: list[tuple], lpips: LPIPSMetric, args: argparse.Namespace, n_tiles: int, disc, cont
           ) -> tuple[str, dict]:
    """The Markdown table (mean ± half the 95 % interval, paired PSNR-Y difference to the baseline) and the gate lines."""
    pad = lambda p: p.context_pad if args.context_pad is None else args.context_pad
    lp_head = f" {lpips.name} |" if lpips.available else ""
    lines = [f"{n_tiles} held-out test tiles (64x64 HR, x4) from {Path(args.tiles).name}/; NFE {args.nfe}; "
             f"seeds {args.seed}..{args.seed + args.seeds - 1} (the same in every row); mirrored border context "
             f"{pad(disc)} / {pad(cont)} px (discrete / continuous); "
             + (f"continuous rows on the {args.continuous_schedule} schedule; " if args.continuous_schedule else "")
             + "PSNR-Y / SSIM-Y on uint8-rounded Y (design §8); ± is half the width of the 95 % percentile bootstrap "
             "interval over tiles (seeds nested); Δ is the paired difference to the baseline (same tiles and seeds) "
             "with its 95 % interval, * where it excludes zero"
             + ("" if lpips.available else f"; LPIPS not computed ({lpips.reason})"), "",
             f"| model | solver | rho | NFE | PSNR-Y (dB) | SSIM-Y |{lp_head} Δ PSNR-Y vs baseline (dB) |",
             "|---|---|---|---|---|---|" + ("---|" if lpips.available else "") + "---|"]
    base = scores[1][4]
    for i, (name, solver, rho, nfe, g, _) in enumerate(scores):
        p, s = mean_interval(g["psnr_y"]), mean_interval(g["ssim_y"])
        extra = f" {mean_interval(g['lpips']).mean:.4f} ± {mean_interval(g['lpips']).half_width:.4f} |" \
            if "lpips" in g else ""
        d = paired_difference(g["psnr_y"], base["psnr_y"])
        delta = "" if i == 1 else diff_text(d, 3) + (" *" if d.significant else "")
        lines.append(f"| {name} | {solver} | {rho} | {nfe} | {p.mean:.3f} ± {p.half_width:.3f} | "
                     f"{s.mean:.4f} ± {s.half_width:.4f} |{extra} {delta} |")
    gate_lines, passed, best = gate(scores, args.nfe, lpips.name if lpips.available else None)
    lines += ["", *gate_lines]
    return "\n".join(lines), {"pass": passed, "best": best}


def gate(scores: list[tuple], nfe: int, lpips_name: Optional[str]) -> tuple[list[str], bool, tuple]:
    """The gate in paired differences with 95 % intervals; (lines, passed, the best ODE row for the figure).

    With LPIPS (issue 12, the paper's metric): (1) the baseline beats bicubic in LPIPS and
    PSNR-Y (both intervals on the winning side of zero); (2) the continuous model's best ODE
    row by mean LPIPS beats the baseline in LPIPS and its PSNR-Y difference's interval lies
    above -0.1 dB. The earlier PSNR-Y / SSIM-Y gate (best ODE row by PSNR-Y: no significant
    loss) is printed beside it and decides only when LPIPS is not available.
    """
    bic, base, odes = scores[0][4], scores[1][4], scores[3:]
    lines, old = [], []
    best_psnr = max(odes, key=lambda x: (x[4]["psnr_y"].mean(), x[4]["ssim_y"].mean()))
    for what, row, ref, rule in ((f"baseline (discrete, markov@{nfe}) vs bicubic", base, bic, "win"),
                                 (f"best ODE solver by PSNR-Y ({best_psnr[1]}, rho {best_psnr[2]}) vs baseline",
                                  best_psnr[4], base, "no loss")):
        dp, ds = paired_difference(row["psnr_y"], ref["psnr_y"]), paired_difference(row["ssim_y"], ref["ssim_y"])
        verdicts = [verdict(dp), verdict(ds)]
        ok = all(v == "win" for v in verdicts) if rule == "win" else "loss" not in verdicts
        old.append(ok)
        lines.append(f"PSNR/SSIM gate: {what}: PSNR-Y {diff_text(dp, 3, ' dB')} ({verdicts[0]}), SSIM-Y "
                     f"{diff_text(ds, 4)} ({verdicts[1]}) -> {'PASS' if ok else 'FAIL'} (needs: {rule})")
    if lpips_name is None:
        return lines, all(old), best_psnr
    best = min(odes, key=lambda x: x[4]["lpips"].mean())
    d1l, d1p = paired_difference(base["lpips"], bic["lpips"]), paired_difference(base["psnr_y"], bic["psnr_y"])
    ok1 = verdict(d1l, higher_is_better=False) == "win" and verdict(d1p) == "win"
    d2l, d2p = paired_difference(best[4]["lpips"], base["lpips"]), paired_difference(best[4]["psnr_y"], base["psnr_y"])
    ok2 = verdict(d2l, higher_is_better=False) == "win" and d2p.lo > -0.1
    lines += [f"gate (1): baseline (discrete, markov@{nfe}) vs bicubic: {lpips_name} {diff_text(d1l, 4)}, PSNR-Y "
              f"{diff_text(d1p, 3, ' dB')} -> {'PASS' if ok1 else 'FAIL'} (needs: both wins)",
              f"gate (2): best ODE solver by {lpips_name} ({best[1]}, rho {best[2]}) vs baseline: {lpips_name} "
              f"{diff_text(d2l, 4)}, PSNR-Y {diff_text(d2p, 3, ' dB')} -> {'PASS' if ok2 else 'FAIL'} "
              f"(needs: an {lpips_name} win and the PSNR-Y interval above -0.1 dB)"]
    return lines, ok1 and ok2, best


def write_report(args: argparse.Namespace, text: str, paths: list[Path], disc, cont) -> None:
    meta = {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "args": vars(args),
            "tiles": [p.name for p in paths],
            "models": {k: {"file": str(p.config.get("training", {}).get("settings", {}).get("out", "")),
                           "training": p.config.get("training")} for k, p in (("discrete", disc), ("continuous", cont))},
            "versions": {"torch": torch.__version__, "python": platform.python_version()}}
    Path(args.report).parent.mkdir(parents=True, exist_ok=True)
    Path(args.report).write_text(f"# Quality gate of the bundled models\n\n{text}\n\n<details><summary>settings and "
                                 f"versions</summary>\n\n```json\n{json.dumps(meta, indent=1, default=str)}\n```\n"
                                 f"</details>\n")
    print(f"wrote {args.report}")


def write_figure(path: str, cols: list[tuple[str, torch.Tensor]], hr: torch.Tensor,
                 names: list[str]) -> None:
    """Rows: three tiles (smooth, middle, busy by bicubic PSNR); columns: the methods, 3x nearest zoom."""
    from PIL import Image, ImageDraw

    from cresshift.data.io import to_uint8

    order = psnr_y(cols[1][1], hr).argsort(descending=True).tolist()
    idx = [order[0], order[len(order) // 2], order[-1]]
    s, pad, head, side = 192, 6, 18, 120
    canvas = Image.new("RGB", (side + len(cols) * (s + pad), head + len(idx) * (s + pad)), "white")
    draw = ImageDraw.Draw(canvas)
    for j, (title, imgs) in enumerate(cols):
        draw.text((side + j * (s + pad) + 2, 3), title, fill="black")
        for i, k in enumerate(idx):
            tile = Image.fromarray(to_uint8(imgs[k])).resize((s, s), Image.NEAREST)
            canvas.paste(tile, (side + j * (s + pad), head + i * (s + pad)))
            if 0 < j < len(cols) - 1:
                p = float(psnr_y(imgs[k:k + 1], hr[k:k + 1]))
                draw.rectangle([side + j * (s + pad), head + i * (s + pad) + s - 14,
                                side + j * (s + pad) + 74, head + i * (s + pad) + s], fill="white")
                draw.text((side + j * (s + pad) + 2, head + i * (s + pad) + s - 13), f"{p:.2f} dB", fill="black")
    for i, k in enumerate(idx):
        draw.text((4, head + i * (s + pad) + s // 2), names[k], fill="black")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


if __name__ == "__main__":
    raise SystemExit(main())
