"""Peak memory of tiled inference for a large output (1024x1024 by default) on the CPU.

Runs the pipeline on a 256x256 LR image (1024x1024 output) with tiles, for a model file or
the official realsr-x4 architecture with random weights, and prints seconds and peak RSS
(``--tile 0``: untiled, for comparison; run it as a separate process, peak RSS only grows).

    python benchmarks/large_image_memory.py --model bundled --tile 64
    python benchmarks/large_image_memory.py --model realsr-x4-v1 --tile 64 --nfe 2
"""
from __future__ import annotations

import argparse
import resource
import time

import torch

from cresshift.models.pipeline import load_pipeline


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="bundled")
    ap.add_argument("--lr-size", type=int, default=256)
    ap.add_argument("--tile", type=int, default=64, help="tile side in LR pixels (0: untiled)")
    ap.add_argument("--overlap", type=int, default=16)
    ap.add_argument("--solver", default="dpmpp-2m")
    ap.add_argument("--nfe", type=int, default=5)
    args = ap.parse_args()
    official = args.model.startswith("realsr") or args.model.startswith("bicsr")
    pipe = load_pipeline(args.model, random_weights=official)
    lr = torch.rand(1, 3, args.lr_size, args.lr_size) * 2 - 1
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    res = pipe.run(lr, solver=args.solver, nfe=args.nfe, tile=args.tile or None, tile_overlap=args.overlap, seed=0)
    dt = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{args.model}: LR {args.lr_size}^2 -> {tuple(res.sr.shape[-2:])}, tile {args.tile} LR px, "
          f"{args.solver}@{res.nfe}: {dt:.1f} s, peak RSS {rss:.0f} MB (before the run {rss0:.0f} MB)")


if __name__ == "__main__":
    main()
