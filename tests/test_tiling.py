"""Tiled evaluation: weights, coverage, and equality with untiled evaluation for local operators."""
import pytest
import torch
from torch import nn

from cresshift.models.tiling import blend_window, tile_starts, tiled_apply


@pytest.mark.parametrize("size,tile,overlap", [(100, 32, 8), (64, 64, 8), (65, 32, 16), (200, 48, 0)])
def test_tiles_cover_with_overlap(size, tile, overlap):
    starts = tile_starts(size, tile, overlap)
    assert starts[0] == 0 and starts[-1] + min(tile, size) == size
    covered = torch.zeros(size)
    for s in starts:
        covered[s:s + tile] += 1
    assert bool((covered >= 1).all())
    for a, b in zip(starts, starts[1:]):
        assert a + tile - b >= overlap  # consecutive tiles overlap at least as asked


def test_blending_weights_sum_to_one():
    # The normalised weights of all tiles covering a pixel sum to one, everywhere.
    H, W, tile, ov = 70, 90, 32, 8
    ones = torch.ones(1, 1, H, W)
    out = tiled_apply(lambda t: torch.ones_like(t), ones, tile=tile, overlap=ov)
    torch.testing.assert_close(out, ones)
    w = blend_window(32, 32, ramp=8)
    assert float(w.min()) > 0 and float(w[16, 16]) == 1.0
    # The falling side of one tile and the rising side of the next, overlapping by `ramp`
    # pixels, add up to exactly one.
    fall = blend_window(1, 16, ramp=8, borders=(True, True, True, False), dtype=torch.float64)[0, 8:]
    rise = blend_window(1, 16, ramp=8, borders=(True, True, False, True), dtype=torch.float64)[0, :8]
    torch.testing.assert_close(fall + rise, torch.ones(8, dtype=torch.float64), rtol=0, atol=2e-6)


def test_local_operator_tiled_equals_untiled():
    # A 3x3 conv stack has a receptive radius of 2: tiles overlapping by 16 reproduce it.
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, 3, 3, padding=1))
    x = torch.randn(2, 3, 96, 80)
    with torch.no_grad():
        full = net(x)
        tiled = tiled_apply(net, x, tile=32, overlap=16)
    torch.testing.assert_close(tiled, full, rtol=0, atol=1e-5)


def test_side_inputs_and_output_scale():
    # An x4 "decoder" that upsamples by nearest: tiling must place its output at 4x offsets.
    x = torch.randn(1, 3, 40, 56)
    lq = torch.randn(1, 3, 40, 56)
    f = lambda t, s: torch.nn.functional.interpolate(t + s, scale_factor=4, mode="nearest")  # noqa: E731
    full = f(x, lq)
    tiled = tiled_apply(f, x, tile=16, overlap=4, side_inputs=(lq,), out_scale=4.0)
    torch.testing.assert_close(tiled, full, rtol=1e-6, atol=1e-6)


def test_bad_overlap():
    with pytest.raises(ValueError, match="overlap"):
        tile_starts(100, 32, 40)
