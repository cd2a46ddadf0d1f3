"""Reproduce the two bundled models from scratch (design §9; issue: bundled default models).

1. ``discrete``: trained from scratch with discrete t (the original ResShift recipe);
2. ``continuous``: fine-tuned from it with continuous t ~ U(1/T, 1) and the exp-alpha schedule
   fitted to the same table (the paper's recipe).
Small pixel-space Swin-UNet, x4 SR on 64x64 HR crops of the photographs shipped in
scikit-image/scikit-learn (test photographs held out, ``cresshift/data/PHOTOS.md``). Each
phase keeps its best EMA checkpoint by validation PSNR-Y on a separate validation photograph.

    python benchmarks/train_bundled.py 2>&1 | tee benchmarks/logs/train_bundled.log
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

from cresshift.training import TrainSettings, train

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/bundled")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps-discrete", type=int, default=1600)
    ap.add_argument("--steps-continuous", type=int, default=500)
    ap.add_argument("--lr", type=float, default=5e-4, help="from-scratch learning rate (phase 1)")
    ap.add_argument("--lr-finetune", type=float, default=1e-4, help="continuous fine-tuning learning rate (phase 2)")
    ap.add_argument("--kappa", type=float, default=2.0)
    ap.add_argument("--predict", default="residual")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--val-every", type=int, default=200)
    ap.add_argument("--install", action="store_true", help="copy the results into cresshift/bundled/")
    args = ap.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    out = Path(args.out)
    common = dict(device=args.device, batch=args.batch, micro_batch=min(8, args.batch), predict=args.predict,
                  val_every=args.val_every, save_every=args.val_every, ema=0.999, grad_clip=1.0,
                  model_overrides={"num_res_blocks": [1, 1, 1]}, seed=0)
    t0 = time.perf_counter()
    print(f"# phase 1: discrete t, {args.steps_discrete} steps, kappa {args.kappa}, predict {args.predict}", file=sys.stderr)
    r1 = train(TrainSettings(out=str(out / "discrete"), time="discrete", steps=args.steps_discrete, lr=args.lr,
                             warmup=100, cosine=True, kappa=args.kappa, val_solver="markov", val_nfe=15, **common))
    t1 = time.perf_counter()
    print(f"# phase 1 done in {(t1 - t0) / 60:.1f} min: {json.dumps(r1)}", file=sys.stderr)
    print(f"# phase 2: continuous t (exp-alpha fitted), {args.steps_continuous} steps from phase 1's best", file=sys.stderr)
    r2 = train(TrainSettings(out=str(out / "continuous"), time="continuous", schedule="exp",
                             init=str(out / "discrete" / "best.safetensors"), steps=args.steps_continuous,
                             lr=args.lr_finetune, warmup=0, cosine=False, val_solver="heun", val_nfe=15, **common))
    t2 = time.perf_counter()
    print(f"# phase 2 done in {(t2 - t1) / 60:.1f} min: {json.dumps(r2)}", file=sys.stderr)
    print(f"# total {(t2 - t0) / 60:.1f} min on {args.device} ({torch.get_num_threads()} threads)", file=sys.stderr)
    if args.install:
        dest = ROOT / "cresshift" / "bundled"
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out / "discrete" / "best.safetensors", dest / "discrete.safetensors")
        shutil.copyfile(out / "continuous" / "best.safetensors", dest / "continuous.safetensors")
        from cresshift.data.photos import write_test_tiles
        write_test_tiles(dest / "testset")
        print(f"# installed into {dest}", file=sys.stderr)


if __name__ == "__main__":
    main()
