"""Quality gate of the bundled models on the held-out 64x64 test tiles (issue 4), PSNR-Y and SSIM-Y.

Rows: bicubic; the discrete model with the Markov sampler at NFE 15 (the original-ResShift
baseline); the continuous model with the Markov sampler and with every ODE solver at NFE 15.
Gate: the baseline beats bicubic in mean PSNR-Y and SSIM-Y, and the best ODE row of the
continuous model is at least as good as the baseline in both. Writes the table (with the
settings and versions) to ``--report`` and a side-by-side PNG (LR, bicubic, baseline, best
ODE solver, HR) to ``--figure``. One seed (0) for the whole batch; LR = ``bicubic_down(HR, 4)``.

    python benchmarks/quality_gate.py --figure docs/figures/bundled_side_by_side.png
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

from cresshift.data.io import bicubic_down, list_images, load_image
from cresshift.metrics import LPIPSMetric, psnr_y, ssim_y
from cresshift.models.pipeline import bundled_path, load_pipeline, upsample_lr

ROOT = Path(__file__).resolve().parents[1]
#: (solver, rho) rows for the continuous model; rho = 1 is the uniform grid t_k = k/T (design §6)
ODE_ROWS = [("euler", 1.0), ("euler", 4.0), ("euler", -8.0), ("heun", 1.0), ("heun", 4.0), ("heun", -8.0),
            ("ddim", 1.0), ("ddim", 2.0), ("ddim", 4.0), ("dpmpp-2m", 1.0), ("dpmpp-2m", 4.0), ("dpmpp-3m", 1.0)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--discrete", default="bundled-discrete", help="baseline model (discrete t)")
    ap.add_argument("--continuous", default="bundled", help="continuous-t model")
    ap.add_argument("--tiles", default=str(bundled_path("bundled").parent / "testset"))
    ap.add_argument("--nfe", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--report", default=str(ROOT / "benchmarks" / "logs" / "quality_gate.md"))
    ap.add_argument("--figure", default=None)
    ap.add_argument("--context-pad", type=int, default=None,
                    help="mirrored border context in network pixels (default: each model's own; 0 = none)")
    ap.add_argument("--continuous-schedule", default=None, choices=["exact", "exp", "paper"],
                    help="schedule the continuous model's rows sample on (default: its own; e.g. exp with "
                         "--continuous bundled-discrete: the discrete weights on the fitted exp-alpha schedule)")
    args = ap.parse_args()
    if args.context_pad is not None and args.context_pad < 0:
        ap.error(f"--context-pad must be >= 0, got {args.context_pad}")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    paths = list_images([args.tiles])
    hr = torch.stack([load_image(p) for p in paths])
    lr = bicubic_down(hr, 4)
    bic = upsample_lr(lr, 4).clamp(-1, 1)
    disc = load_pipeline(args.discrete, device=args.device)
    cont = load_pipeline(args.continuous, device=args.device)
    lpips = LPIPSMetric("alex", device=args.device)

    ctx = {"context_pad": args.context_pad}
    rows: list[tuple[str, str, str, int, torch.Tensor]] = [("bicubic", "-", "-", 0, bic)]
    r = disc.run(lr, solver="markov", nfe=args.nfe, seed=args.seed, **ctx)
    rows.append(("discrete (baseline)", "markov", "-", r.nfe, r.sr.cpu()))
    cctx = {**ctx, "schedule": args.continuous_schedule}
    r = cont.run(lr, solver="markov", nfe=args.nfe, seed=args.seed, **cctx)
    rows.append(("continuous", "markov", "-", r.nfe, r.sr.cpu()))
    for solver, rho in ODE_ROWS:
        r = cont.run(lr, solver=solver, nfe=args.nfe, rho=rho, seed=args.seed, **cctx)
        rows.append(("continuous", solver, f"{rho:g}", r.nfe, r.sr.cpu()))

    lp_head = f" {lpips.name} |" if lpips.available else ""
    lines = [f"{len(paths)} held-out test tiles (64x64 HR, x4) from {Path(args.tiles).name}/; NFE {args.nfe}; "
             f"seed {args.seed}; mirrored border context {disc.context_pad if args.context_pad is None else args.context_pad} / "
             f"{cont.context_pad if args.context_pad is None else args.context_pad} px (discrete / continuous); "
             + (f"continuous rows on the {args.continuous_schedule} schedule; " if args.continuous_schedule else "")
             + f"PSNR-Y / SSIM-Y on uint8-rounded Y (design §8)"
             + ("" if lpips.available else f"; LPIPS not computed ({lpips.reason})"), "",
             f"| model | solver | rho | NFE | PSNR-Y (dB) | SSIM-Y |{lp_head}",
             "|---|---|---|---|---|---|" + ("---|" if lpips.available else "")]
    scores = []
    for name, solver, rho, nfe, sr in rows:
        p, s = float(psnr_y(sr, hr).mean()), float(ssim_y(sr, hr).mean())
        extra = f" {float(lpips(sr, hr).mean()):.4f} |" if lpips.available else ""
        scores.append((name, solver, rho, p, s, sr))
        lines.append(f"| {name} | {solver} | {rho} | {nfe} | {p:.3f} | {s:.4f} |{extra}")
    bp, bs = scores[0][3], scores[0][4]
    base_p, base_s = scores[1][3], scores[1][4]
    best = max(scores[3:], key=lambda x: (x[3], x[4]))
    gate1 = base_p > bp and base_s > bs
    gate2 = best[3] >= base_p and best[4] >= base_s
    lines += ["", f"baseline (discrete, markov@{args.nfe}) vs bicubic: PSNR-Y {base_p - bp:+.3f} dB, "
              f"SSIM-Y {base_s - bs:+.4f} -> {'PASS' if gate1 else 'FAIL'}",
              f"best ODE solver of the continuous model ({best[1]}, rho {best[2]}) vs baseline: PSNR-Y "
              f"{best[3] - base_p:+.3f} dB, SSIM-Y {best[4] - base_s:+.4f} -> {'PASS' if gate2 else 'FAIL'}"]
    text = "\n".join(lines)
    print(text)
    if args.report:
        meta = {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "args": vars(args),
                "tiles": [p.name for p in paths],
                "models": {k: {"file": str(p.config.get("training", {}).get("settings", {}).get("out", "")),
                               "training": p.config.get("training")} for k, p in
                           (("discrete", disc), ("continuous", cont))},
                "versions": {"torch": torch.__version__, "python": platform.python_version()}}
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report).write_text(f"# Quality gate of the bundled models\n\n{text}\n\n<details><summary>settings and "
                                     f"versions</summary>\n\n```json\n{json.dumps(meta, indent=1, default=str)}\n```\n"
                                     f"</details>\n")
        print(f"wrote {args.report}")
    if args.figure:
        write_figure(args.figure, [("LR (nearest)", torch.nn.functional.interpolate(lr, scale_factor=4, mode="nearest")),
                                       ("bicubic", bic), (f"baseline: markov@{args.nfe}", scores[1][5]),
                                       (f"continuous: {best[1]} rho={best[2]}@{args.nfe}", best[5]), ("HR", hr)],
                     hr, [p.stem for p in paths])
        print(f"wrote {args.figure}")
    return 0 if gate1 and gate2 else 1


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
