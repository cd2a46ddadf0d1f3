import numpy as np
import pytest

from cresshift.grids import rho_grid


@pytest.mark.parametrize("rho", [1, 2, 4, 8, -4, -8, 0.5, -1])
@pytest.mark.parametrize("n", [2, 3, 8, 15])
def test_endpoints_and_monotone(n, rho):
    t = rho_grid(n, rho, 1 / 15)
    assert len(t) == n and t.dtype == np.float64
    assert t[0] == 1.0 and t[-1] == 1 / 15
    assert np.all(np.diff(t) < 0)


def test_rho_one_is_uniform():
    np.testing.assert_allclose(np.diff(rho_grid(11, 1.0, 0.1)), -0.09, atol=1e-15)


def test_positive_rho_crowds_image_end_negative_rho_the_lr_end():
    pos, neg = rho_grid(8, 8.0, 1 / 15), rho_grid(8, -8.0, 1 / 15)
    steps_pos, steps_neg = -np.diff(pos), -np.diff(neg)
    assert steps_pos[-1] < steps_pos[0]  # small steps near t_min
    assert steps_neg[0] < steps_neg[-1]  # small steps near t = 1


def test_formula_matches_design():
    n, rho, tm = 6, 4.0, 1 / 15
    i = np.arange(n)
    s = (1 + i / (n - 1) * (tm ** (1 / rho) - 1)) ** rho
    np.testing.assert_allclose(rho_grid(n, rho, tm), s, atol=1e-15)
    s_neg = (1 + i / (n - 1) * (tm ** (1 / -rho) - 1)) ** -rho
    np.testing.assert_allclose(rho_grid(n, -rho, tm), 1 + tm - s_neg[::-1], atol=1e-15)


@pytest.mark.parametrize("bad", [dict(n=1, rho=1, t_min=0.1), dict(n=5, rho=0, t_min=0.1),
                                 dict(n=5, rho=1, t_min=1.5)])
def test_bad_input(bad):
    with pytest.raises(ValueError):
        rho_grid(**bad)
