"""Reproduce the two bundled models from scratch (design §9; issue 4: bundled default models).

1. ``discrete``: trained from scratch with discrete t (the original ResShift recipe);
2. ``continuous``: fine-tuned from it with continuous t ~ U(1/T, 1) and the exp-alpha schedule
   fitted to the same table (the paper's §3.1 recipe), training only the time conditioning
   (``time_embed`` and every block's ``emb_layers``, 13 % of the weights): on five photographs
   all-parameter fine-tuning overfits (``cresshift/bundled/README.md``; the paper's is
   ``--trainable-finetune all``).
Small pixel-space Swin-UNet, x4 SR on 64x64 HR crops of the photographs shipped in
scikit-image/scikit-learn (test photographs held out, ``cresshift/data/PHOTOS.md``). Each
phase keeps its best EMA checkpoint by validation PSNR-Y on the validation photograph (never
the test photographs). The log goes to stderr and is appended to ``--log`` (default
``OUT/train.log``; appending never loses an earlier run's log).

    python benchmarks/train_bundled.py --install      # about 25 min on a 2-core CPU
    python benchmarks/train_bundled.py --phases 2 --init-discrete cresshift/bundled/discrete.safetensors \
        --out runs/phase2 --install   # phase 2 alone, from the shipped baseline
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path

import torch

from cresshift.models.checkpoints import atomic_write
from cresshift.training import TrainSettings, train

ROOT = Path(__file__).resolve().parents[1]


class _Tee:
    """Write stderr to the terminal and to a log file."""

    def __init__(self, stream, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.stream, self.file = stream, open(path, "a")

    def write(self, s: str) -> int:
        self.stream.write(s)
        self.file.write(s)
        self.file.flush()
        return len(s)

    def flush(self) -> None:
        self.stream.flush()
        self.file.flush()

    def isatty(self) -> bool:
        return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/bundled")
    ap.add_argument("--log", default=None, help="log file, appended to (default: OUT/train.log)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--data", default="photos-colour",
                    help="training folder, 'photos' (all shipped training photographs) or 'photos-colour' (the colour ones)")
    ap.add_argument("--val", default="photos", help="validation folder, or 'photos' (the validation photograph)")
    ap.add_argument("--steps-discrete", type=int, default=800)
    ap.add_argument("--steps-continuous", type=int, default=300)
    ap.add_argument("--lr", type=float, default=5e-4, help="from-scratch learning rate (phase 1)")
    ap.add_argument("--lr-finetune", type=float, default=5e-5, help="continuous fine-tuning learning rate (phase 2; the paper's 5e-5)")
    ap.add_argument("--kappa", type=float, default=0.1,
                    help="kappa (realsr-x4-v1 has 2; 0.1 measured better for PSNR, see cresshift/bundled/README.md)")
    ap.add_argument("--min-noise-level", type=float, default=None,
                    help="override the schedule's min_noise_level (realsr-x4-v1: 0.04)")
    ap.add_argument("--predict", default="residual")
    ap.add_argument("--loss-weight", default="bicubic", choices=["none", "bicubic"],
                    help="per-crop MSE weight; bicubic: MSE / (bicubic MSE + 1 grey level^2), see cresshift/bundled/README.md")
    ap.add_argument("--continuous-schedule", default="exp", choices=["exp", "exact"],
                    help="eta(t) of phase 2: exp (the paper's alpha(t) fitted to the table) or exact (keeps the table's marginals)")
    ap.add_argument("--trainable-finetune", default="time", choices=["all", "time"],
                    help="parameters phase 2 trains: only the time conditioning (time_embed, emb_layers), or all")
    ap.add_argument("--t-sampler-finetune", default="uniform", choices=["uniform", "loss-aware"],
                    help="phase 2 sampling of t: uniform (the paper) or loss-aware importance sampling")
    ap.add_argument("--val-every-finetune", type=int, default=50, help="validation (and checkpoint) interval of phase 2")
    ap.add_argument("--init-discrete", default=None,
                    help="phase 2 starts from this discrete model (default: phase 1's best in --out)")
    ap.add_argument("--scale-aug", type=float, default=1.0,
                    help="phase 1 scale augmentation: HR crops cut at a random scale in [SCALE_AUG, 1] (1 = off)")
    ap.add_argument("--scale-aug-finetune", type=float, default=1.0, help="phase 2 scale augmentation (1 = off)")
    ap.add_argument("--phases", default="12", help="which phases to run: 1, 2 or 12")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--micro-batch", type=int, default=8)
    ap.add_argument("--res-blocks", type=int, nargs=3, default=[1, 1, 1])
    ap.add_argument("--norm-groups", type=int, default=32,
                    help="GroupNorm groups of the small network (32 = the official setting: one channel per group at width 32)")
    ap.add_argument("--val-every", type=int, default=100)
    ap.add_argument("--val-solver", default="ddim", help="ODE solver validating phase 2 (NFE 15, uniform grid)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--install", action="store_true", help="copy the results into cresshift/bundled/")
    args = ap.parse_args()
    if args.init_discrete is not None and not Path(args.init_discrete).is_file():
        ap.error(f"--init-discrete {args.init_discrete}: no such file (a cresshift .safetensors discrete model)")
    if args.val_every < 1 or args.val_every_finetune < 1:
        ap.error("--val-every and --val-every-finetune must be >= 1")
    if not (0 < args.scale_aug <= 1 and 0 < args.scale_aug_finetune <= 1):
        ap.error("--scale-aug and --scale-aug-finetune must be in (0, 1] (1 = off)")
    sys.stderr = _Tee(sys.stderr, Path(args.log) if args.log else Path(args.out) / "train.log")  # type: ignore[assignment]
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    print(f"# train_bundled {json.dumps(vars(args))}", file=sys.stderr)
    print(f"# torch {torch.__version__}, python {platform.python_version()}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}", file=sys.stderr)
    common = dict(device=args.device, batch=args.batch, micro_batch=min(args.micro_batch, args.batch),
                  data=args.data, val=args.val, val_every=args.val_every, save_every=args.val_every, ema=0.999,
                  grad_clip=1.0, seed=0, loss_weight=args.loss_weight)
    t0 = t1 = time.perf_counter()
    if "1" in args.phases:
        print(f"# phase 1: discrete t, {args.steps_discrete} steps, kappa {args.kappa}, min_noise_level {args.min_noise_level}, predict {args.predict}, "
              f"loss weight {args.loss_weight}", file=sys.stderr)
        r1 = train(TrainSettings(out=str(out / "discrete"), time="discrete", steps=args.steps_discrete, lr=args.lr,
                                 warmup=100, cosine=True, kappa=args.kappa, min_noise_level=args.min_noise_level, predict=args.predict,
                                 model_overrides={"num_res_blocks": list(args.res_blocks), "norm_groups": args.norm_groups},
                                 val_solver="markov", val_nfe=15, scale_aug=args.scale_aug, **common))
        t1 = time.perf_counter()
        print(f"# phase 1 done in {(t1 - t0) / 60:.1f} min: {json.dumps(r1)}", file=sys.stderr)
    if "2" in args.phases:
        start = args.init_discrete or "phase 1's best"
        print(f"# phase 2: continuous t ({args.continuous_schedule} schedule, {args.t_sampler_finetune} t), "
              f"{args.steps_continuous} steps, trains "
              f"{args.trainable_finetune} parameters, from {start}", file=sys.stderr)
        r2 = train(TrainSettings(out=str(out / "continuous"), time="continuous", schedule=args.continuous_schedule,
                                 init=args.init_discrete or str(out / "discrete" / "best.safetensors"), steps=args.steps_continuous,
                                 lr=args.lr_finetune, warmup=0, cosine=True, val_solver=args.val_solver, val_nfe=15,
                                 trainable=args.trainable_finetune, scale_aug=args.scale_aug_finetune,
                                 t_sampler=args.t_sampler_finetune,
                                 **{**common, "val_every": args.val_every_finetune, "save_every": args.val_every_finetune}))
        t2 = time.perf_counter()
        print(f"# phase 2 done in {(t2 - t1) / 60:.1f} min: {json.dumps(r2)}", file=sys.stderr)
    print(f"# total {(time.perf_counter() - t0) / 60:.1f} min on {args.device} ({torch.get_num_threads()} threads)",
          file=sys.stderr)
    if args.install:
        dest = ROOT / "cresshift" / "bundled"
        dest.mkdir(parents=True, exist_ok=True)
        trained = [name for phase, name in (("1", "discrete"), ("2", "continuous")) if phase in args.phases]
        for name in trained:  # atomically: a failed copy never leaves a half-written model
            src = out / name / "best.safetensors"
            atomic_write(dest / f"{name}.safetensors", lambda tmp, src=src: shutil.copyfile(src, tmp))
        from cresshift.data.photos import write_test_tiles
        write_test_tiles(dest / "testset")
        print(f"# installed into {dest}", file=sys.stderr)


if __name__ == "__main__":
    main()
