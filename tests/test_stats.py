"""Bootstrap intervals and paired differences (issue 18) against independent references."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from cresshift.stats import as_grid, bootstrap_means, mean_interval, paired_difference


def test_interval_of_a_normal_sample_matches_the_t_interval():
    """One seed per image: the percentile interval of the mean ~ mean ± t_{0.975} s / sqrt(n) (bootstrap error ~10 %)."""
    x = np.random.default_rng(3).normal(30.0, 2.0, size=60)
    ci = mean_interval(x, seed=1)
    half = sps.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    assert ci.mean == pytest.approx(x.mean())
    assert ci.lo == pytest.approx(x.mean() - half, abs=0.12 * half)
    assert ci.hi == pytest.approx(x.mean() + half, abs=0.12 * half)


def test_nested_bootstrap_spread_matches_the_two_level_standard_error():
    """I images x K seeds with image effects (sd b) and seed noise (sd w): sd of the mean = sqrt((b² + w²/K) / I).

    Resampling seeds as well inside each image would give sqrt((b² + 2 w²/K) / I), 17 % too wide here.
    """
    rng = np.random.default_rng(0)
    n_img, n_seed, b, w = 200, 4, 1.0, 2.0
    grid = rng.normal(0, b, size=(n_img, 1)) + rng.normal(0, w, size=(n_img, n_seed))
    boots = bootstrap_means(grid, n_boot=4000, seed=2)
    assert boots.std() == pytest.approx(math.sqrt((b ** 2 + w ** 2 / n_seed) / n_img), rel=0.1)
    # resampling seeds alone (images fixed) misses the image spread: far too narrow
    seeds_only = np.random.default_rng(2).integers(0, n_seed, size=(2000, n_img, n_seed))
    narrow = grid[np.arange(n_img)[None, :, None], seeds_only].mean(axis=(1, 2)).std()
    assert narrow < 0.75 * boots.std()


def test_paired_difference_detects_a_constant_shift():
    """b = a + 0.05 + tiny noise on images far more different than that: significant, the interval holds 0.05."""
    rng = np.random.default_rng(4)
    a = rng.normal(30, 3, size=(18, 2))
    b = a + 0.05 + rng.normal(0, 0.01, size=a.shape)
    d = paired_difference(b, a)
    assert d.significant and d.lo < 0.05 < d.hi and d.mean == pytest.approx(0.05, abs=0.01)
    assert not mean_interval(b).excludes(mean_interval(a).mean)  # unpaired, the same shift drowns in the image spread


def test_paired_test_flags_pure_noise_at_about_the_nominal_rate():
    """400 synthetic repetitions of two rows with the same mean: about 5 % flagged (percentile bootstrap, n = 30)."""
    rng = np.random.default_rng(11)
    flagged = 0
    reps = 400
    for r in range(reps):
        image = rng.normal(0, 3, size=(30, 1))
        a = image + rng.normal(0, 0.5, size=(30, 2))
        b = image + rng.normal(0, 0.5, size=(30, 2))
        flagged += paired_difference(a, b, n_boot=1000, seed=r).significant
    rate = flagged / reps
    assert 0.02 <= rate <= 0.09, rate


def test_deterministic_given_a_seed_and_input_checks():
    x = np.random.default_rng(0).normal(size=(10, 3))
    assert mean_interval(x, seed=5) == mean_interval(x, seed=5)
    assert mean_interval(x, seed=5) != mean_interval(x, seed=6)
    with pytest.raises(ValueError, match="same images and seeds"):
        paired_difference(x, x[:, :2])
    with pytest.raises(ValueError, match="NaN"):
        as_grid([1.0, float("nan")])
    with pytest.raises(ValueError, match="level"):
        mean_interval(x, level=1.5)
    constant = mean_interval(np.full((5, 2), 7.0))
    assert (constant.lo, constant.mean, constant.hi) == (7.0, 7.0, 7.0)
