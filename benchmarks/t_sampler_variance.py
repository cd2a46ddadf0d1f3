"""Variance of the per-crop training-loss estimate under loss-aware vs uniform t, from a checkpoint's sampler state.

Uniform: Var_u = mean_b M_b - mu^2; loss-aware: Var_p = sum_b M_b / (B^2 p_b) - mu^2, with M_b the
second moment of bin b's last losses and p_b the sampler's probabilities; 95 % interval by resampling
each bin's losses (p recomputed every time). This is the variance of the loss value, not of the gradient,
and p is fitted to the same losses, so the ratio is an optimistic estimate.

    python benchmarks/t_sampler_variance.py runs/loss-aware/continuous/ckpt-0000020.pt
"""
import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from cresshift.training.t_sampler import LossAwareTSampler

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("checkpoint", help="a trainer checkpoint (OUT/continuous/ckpt-*.pt) of a --t-sampler loss-aware run")
path = ap.parse_args().checkpoint
if not Path(path).is_file():
    ap.error(f"{path}: no such file")
checkpoint = torch.load(path, map_location="cpu", weights_only=True)
if "t_sampler" not in checkpoint:
    sys.exit(f"{path} holds no loss-aware t-sampler state (a run with --t-sampler loss-aware writes one)")
state = checkpoint["t_sampler"][0]
losses = state["losses"].double().numpy()
B, H = losses.shape


def ratio(x: np.ndarray) -> float:
    sampler = LossAwareTSampler(15, bins=B, history=H)
    sampler.load_state_dict({"losses": torch.from_numpy(x), "counts": state["counts"]})
    p = sampler.probabilities().numpy()
    M, mu = (x ** 2).mean(1), x.mean()
    return float(((M / p).sum() / B ** 2 - mu ** 2) / (M.mean() - mu ** 2))


rng = np.random.default_rng(0)
boots = [ratio(np.take_along_axis(losses, rng.integers(0, H, size=(B, H)), 1)) for _ in range(2000)]
lo, hi = np.quantile(boots, [0.025, 0.975])
print(f"step {int(checkpoint['step'])}: "
      f"Var(loss-aware) / Var(uniform) = {ratio(losses):.3f} [{lo:.3f}, {hi:.3f}] (95 %, {B} bins x {H} losses resampled)")
