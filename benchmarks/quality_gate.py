"""Quality gate of the bundled models on the held-out 64x64 test tiles (PSNR-Y, SSIM-Y).

Bicubic vs the discrete model with the Markov sampler at NFE 15 (the baseline) vs the
continuous model with every ODE solver at NFE 15; writes a Markdown table and a side-by-side
PNG (LR, bicubic, baseline, best ODE solver, HR).

    python benchmarks/quality_gate.py --figure docs/figures/side_by_side.png
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from cresshift.data.io import bicubic_down, list_images, load_image
from cresshift.metrics import psnr_y, ssim_y
from cresshift.models.pipeline import bundled_path, load_pipeline, upsample_lr

ODE_ROWS = [("euler", 1.0), ("euler", 4.0), ("euler", -8.0), ("heun", 1.0), ("heun", 4.0), ("heun", -8.0),
            ("ddim", 2.0), ("dpmpp-2m", 1.0), ("dpmpp-2m", 4.0), ("dpmpp-3m", 1.0)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--discrete", default="bundled-discrete")
    ap.add_argument("--continuous", default="bundled")
    ap.add_argument("--tiles", default=str(bundled_path("bundled").parent / "testset"))
    ap.add_argument("--nfe", type=int, default=15)
    ap.add_argument("--figure", default=None)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    paths = list_images([args.tiles])
    hr = torch.stack([load_image(p) for p in paths])
    lr = bicubic_down(hr, 4)
    bic = upsample_lr(lr, 4).clamp(-1, 1)
    disc = load_pipeline(args.discrete, device=args.device)
    cont = load_pipeline(args.continuous, device=args.device)
    rows = [("bicubic", "-", "-", 0, bic)]
    base = disc(lr, solver="markov", nfe=args.nfe, seed=0).cpu()
    rows.append(("discrete model (baseline)", "markov", "-", args.nfe, base))
    rows.append(("continuous model", "markov", "-", args.nfe, cont(lr, solver="markov", nfe=args.nfe, seed=0).cpu()))
    for solver, rho in ODE_ROWS:
        r = cont.run(lr, solver=solver, nfe=args.nfe, rho=rho, seed=0)
        rows.append(("continuous model", solver, f"{rho:g}", r.nfe, r.sr.cpu()))
    print(f"{len(paths)} test tiles (64x64 HR) from {args.tiles}; NFE {args.nfe}; seed 0")
    print("| model | solver | rho | NFE | PSNR-Y | SSIM-Y |")
    print("|---|---|---|---|---|---|")
    scores = []
    for name, solver, rho, nfe, sr in rows:
        p, s = float(psnr_y(sr, hr).mean()), float(ssim_y(sr, hr).mean())
        scores.append((name, solver, rho, p, s, sr))
        print(f"| {name} | {solver} | {rho} | {nfe} | {p:.3f} | {s:.4f} |")
    bp, bs = scores[0][3], scores[0][4]
    base_p, base_s = scores[1][3], scores[1][4]
    ode = [x for x in scores[3:]]
    best = max(ode, key=lambda x: x[3])
    print(f"\nbaseline beats bicubic: PSNR-Y {base_p - bp:+.3f} dB, SSIM-Y {base_s - bs:+.4f} -> "
          f"{'PASS' if base_p > bp and base_s > bs else 'FAIL'}")
    print(f"best ODE solver ({best[1]}, rho {best[2]}) vs baseline: PSNR-Y {best[3] - base_p:+.3f} dB, "
          f"SSIM-Y {best[4] - base_s:+.4f} -> {'PASS' if best[3] >= base_p and best[4] >= base_s else 'FAIL'}")
    if args.figure:
        import numpy as np
        from PIL import Image, ImageDraw

        from cresshift.data.io import to_uint8
        idx = [0, len(paths) // 2, len(paths) - 1]
        cols = [("LR", torch.nn.functional.interpolate(lr, scale_factor=4, mode="nearest")), ("bicubic", bic),
                ("baseline markov@15", base), (f"{best[1]} rho={best[2]}@15", best[5]), ("HR", hr)]
        s, pad, head = 128, 4, 16
        canvas = Image.new("RGB", (len(cols) * (s + pad), len(idx) * (s + pad) + head), "white")
        draw = ImageDraw.Draw(canvas)
        for j, (title, imgs) in enumerate(cols):
            draw.text((j * (s + pad) + 2, 2), title, fill="black")
            for i, k in enumerate(idx):
                tile = Image.fromarray(to_uint8(imgs[k])).resize((s, s), Image.NEAREST)
                canvas.paste(tile, (j * (s + pad), head + i * (s + pad)))
        Path(args.figure).parent.mkdir(parents=True, exist_ok=True)
        canvas.save(args.figure)
        print(f"wrote {args.figure}")


if __name__ == "__main__":
    main()
