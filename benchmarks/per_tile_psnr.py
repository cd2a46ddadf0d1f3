"""Per-tile PSNR-Y of a model against bicubic on the bundled held-out test tiles.

Prints, for each 64x64 test tile, PSNR-Y of bicubic, of one Markov@15 sample (seed 0) and of
the mean of ``--samples`` Markov@15 samples (seeds 0..n-1: what is left is bias, not sampling
noise), then the means over tiles. This is how the flat-tile failure of the bundled models was
found (``cresshift/bundled/README.md``).

    python benchmarks/per_tile_psnr.py bundled-discrete
    python benchmarks/per_tile_psnr.py runs/bundled/discrete/best.safetensors --samples 8
    python benchmarks/per_tile_psnr.py bundled-discrete --context-pad 0 --margin 4   # + border / inside

``--margin M`` adds PSNR-Y over the outer M pixels of each tile and over the rest, for bicubic
and the seed-0 sample: how the border artifact was told apart from texture inside the tiles.
"""
from __future__ import annotations

import argparse
import sys

import torch

from cresshift.data.io import bicubic_down, list_images, load_image
from cresshift.metrics import psnr_y, rgb_to_y
from cresshift.models.checkpoints import CheckpointError
from cresshift.models.pipeline import bundled_path, load_pipeline, upsample_lr


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="bundled | bundled-discrete | a cresshift .safetensors")
    ap.add_argument("--tiles", default=str(bundled_path("bundled").parent / "testset"))
    ap.add_argument("--nfe", type=int, default=15)
    ap.add_argument("--samples", type=int, default=8, help="Markov samples averaged in the last column")
    ap.add_argument("--margin", type=int, default=0, help="also PSNR-Y on the outer MARGIN px and inside them")
    ap.add_argument("--context-pad", type=int, default=None,
                    help="mirrored border context in network pixels (default: the model's own; 0 = none)")
    args = ap.parse_args()
    if args.margin < 0:
        ap.error(f"--margin must be >= 0, got {args.margin}")
    if args.context_pad is not None and args.context_pad < 0:
        ap.error(f"--context-pad must be >= 0, got {args.context_pad}")
    try:
        pipe = load_pipeline(args.model, cpu_bf16=())
        paths = list_images([args.tiles])
    except (CheckpointError, ValueError, FileNotFoundError) as err:
        print(f"error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    hr = torch.stack([load_image(p) for p in paths])
    lr = bicubic_down(hr, pipe.sf)
    bic = upsample_lr(lr, pipe.sf).clamp(-1, 1)
    runs = torch.stack([pipe.run(lr, solver="markov", nfe=args.nfe, seed=s, context_pad=args.context_pad).sr
                        for s in range(args.samples)])
    cols = [psnr_y(bic, hr), psnr_y(runs[0].clamp(-1, 1), hr), psnr_y(runs.mean(0).clamp(-1, 1), hr)]
    ctx = pipe.context_pad if args.context_pad is None else args.context_pad
    print(f"# {args.model}: PSNR-Y (dB) on {len(paths)} tiles from {args.tiles}, markov@{args.nfe}, border context {ctx} px")
    print(f"| tile | bicubic | markov seed 0 | mean of {args.samples} |")
    print("|---|---|---|---|")
    for i, p in enumerate(paths):
        print(f"| {p.stem} | " + " | ".join(f"{float(c[i]):.2f}" for c in cols) + " |")
    print("| **mean** | " + " | ".join(f"**{float(c.mean()):.3f}**" for c in cols) + " |")
    if args.margin > 0:
        print(f"\n| tile | bicubic, outer {args.margin} px | markov seed 0, outer {args.margin} px | bicubic, inside | "
              "markov seed 0, inside |")
        print("|---|---|---|---|---|")
        parts = [_ring_psnr(img, hr, args.margin) for img in (bic, runs[0].clamp(-1, 1))]
        for i, p in enumerate(paths):
            vals = [parts[0][0][i], parts[1][0][i], parts[0][1][i], parts[1][1][i]]
            print(f"| {p.stem} | " + " | ".join(f"{float(v):.2f}" for v in vals) + " |")
    return 0


def _ring_psnr(sr: torch.Tensor, hr: torch.Tensor, margin: int) -> tuple[torch.Tensor, torch.Tensor]:
    """PSNR-Y (the metric's uint8-rounded Y) over the outer ``margin`` pixels and over the rest, per image."""
    err = (rgb_to_y(sr, quantized=True) - rgb_to_y(hr, quantized=True)) ** 2
    inside = torch.zeros(err.shape[-2:], dtype=torch.bool)
    inside[margin:-margin, margin:-margin] = True
    return tuple(10 * torch.log10(255.0 ** 2 / err[:, m].mean(1)) for m in (~inside, inside))  # type: ignore[return-value]


if __name__ == "__main__":
    sys.exit(main())
