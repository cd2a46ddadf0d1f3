"""Uncertainty of benchmark numbers: nested bootstrap intervals over images and seeds, paired differences.

A metric measured on I images with K noise seeds each is an array ``values[I, K]``; the
number a table reports is its mean. Its 95 % interval is a percentile bootstrap over images
with the seeds nested in them: each resample draws I images with replacement, every drawn
image bringing all K of its seeds, and takes the mean; the interval is the 2.5 and 97.5
percentiles of ``n_boot`` such means. This is the two-stage (random effects) model's
bootstrap that resamples the first stage only (Davison & Hinkley 1997, §3.8): its variance
estimates (b² + w²/K) / I for image spread b and seed spread w, while also resampling the
seeds inside each image would add w²/K a second time.

Two rows are compared *paired*: both ran the same images with the same seeds, so the
per-(image, seed) differences ``a - b`` carry the comparison and the image-to-image spread
cancels. The test is the bootstrap above applied to those differences: a
difference is significant at the 5 % level when its 95 % percentile interval excludes zero.

Everything is deterministic given ``seed`` (numpy's PCG64), so a table is reproducible.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

__all__ = ["Interval", "Difference", "as_grid", "bootstrap_means", "mean_interval", "paired_difference", "format_interval",
           "N_BOOT", "LEVEL"]

N_BOOT = 4000
LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A mean and its percentile bootstrap interval [lo, hi] at ``level``."""

    mean: float
    lo: float
    hi: float
    level: float = LEVEL

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2

    def excludes(self, value: float = 0.0) -> bool:
        return not self.lo <= value <= self.hi


@dataclass(frozen=True)
class Difference(Interval):
    """The mean paired difference a - b with its interval; ``significant`` when the interval excludes 0."""

    @property
    def significant(self) -> bool:
        return self.excludes(0.0)


def as_grid(values: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    """A float64 [images, seeds] array (a 1-D input is one seed per image); raise on NaN or a ragged/empty input."""
    grid = np.asarray(values, dtype=np.float64)
    if grid.ndim == 1:
        grid = grid[:, None]
    if grid.ndim != 2 or grid.size == 0:
        raise ValueError(f"expected values[images, seeds], got shape {grid.shape}")
    if not np.isfinite(grid).all():
        raise ValueError("the values contain NaN or infinity")
    return grid


def bootstrap_means(values: np.ndarray, *, n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """``n_boot`` bootstrap means of values[I, K]: I images drawn with replacement, each with all K of its seeds."""
    per_image = as_grid(values).mean(axis=1)
    images = np.random.default_rng(seed).integers(0, len(per_image), size=(n_boot, len(per_image)))
    return per_image[images].mean(axis=1)


def _interval(values: np.ndarray, cls: type, *, n_boot: int, seed: int, level: float) -> Interval:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    grid = as_grid(values)
    boots = bootstrap_means(grid, n_boot=n_boot, seed=seed)
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    return cls(float(grid.mean()), float(lo), float(hi), level)


def mean_interval(values: Sequence[Sequence[float]] | np.ndarray, *, n_boot: int = N_BOOT, seed: int = 0,
                  level: float = LEVEL) -> Interval:
    """Mean of values[I, K] and its percentile bootstrap interval over images (seeds nested)."""
    return _interval(np.asarray(values, dtype=np.float64), Interval, n_boot=n_boot, seed=seed, level=level)


def paired_difference(a: Sequence[Sequence[float]] | np.ndarray, b: Sequence[Sequence[float]] | np.ndarray, *,
                      n_boot: int = N_BOOT, seed: int = 0, level: float = LEVEL) -> Difference:
    """Mean of a - b over the same (image, seed) pairs, with its paired bootstrap interval (images, seeds nested)."""
    ga, gb = as_grid(a), as_grid(b)
    if ga.shape != gb.shape:
        raise ValueError(f"paired values need the same images and seeds, got shapes {ga.shape} and {gb.shape}")
    result = _interval(ga - gb, Difference, n_boot=n_boot, seed=seed, level=level)
    assert isinstance(result, Difference)
    return result


def format_interval(interval: Optional[Interval], digits: int) -> str:
    """``mean ± half-width`` (the half-width of the percentile interval), or "n/a"."""
    if interval is None:
        return "n/a"
    return f"{interval.mean:.{digits}f} ± {interval.half_width:.{digits}f}"
