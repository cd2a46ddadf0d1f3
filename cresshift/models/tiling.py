"""Seam-free tiled evaluation: overlapping tiles blended with smooth weights that sum to one."""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import torch

__all__ = ["tile_starts", "blend_window", "tiled_apply"]


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets covering [0, size) with tiles of ``tile`` overlapping by at least ``overlap``."""
    if tile >= size:
        return [0]
    if not 0 <= overlap < tile:
        raise ValueError(f"tile overlap must be in [0, tile={tile}), got {overlap}")
    stride = tile - overlap
    n = math.ceil((size - tile) / stride) + 1
    # Spread the tiles evenly so the last one ends exactly at the border.
    return [round(i * (size - tile) / (n - 1)) for i in range(n)]


def blend_window(h: int, w: int, *, ramp: int, borders: tuple[bool, bool, bool, bool] = (False,) * 4,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Separable tile weights: ~0 on an outer margin, a raised-cosine rise, then 1.

    On a side facing another tile (not on the image border, see ``borders`` = top, bottom,
    left, right) the first ``ramp // 4`` pixels get weight 1e-6 (tile edges, where a network
    sees zero padding instead of the neighbouring content, are left out), the next
    ``ramp - 2 (ramp // 4)`` rise as sin^2; two tiles overlapping by ``ramp`` then have weights
    summing to exactly one (sin^2 + cos^2). The caller still normalises by the summed weights.
    """
    def one(n: int, lo_border: bool, hi_border: bool) -> torch.Tensor:
        x = torch.ones(n, dtype=torch.float64, device=device)
        r = min(ramp, n // 2)
        if r > 0:
            m = r // 4
            length = r - 2 * m
            up = torch.full((r - m,), 1.0, dtype=torch.float64, device=device)
            up[:m] = 1e-6
            up[m:m + length] = torch.sin(0.5 * math.pi * (torch.arange(length, dtype=torch.float64, device=device) + 0.5) / length) ** 2
            if not lo_border:
                x[:r - m] = up
            if not hi_border:
                x[n - (r - m):] = torch.minimum(x[n - (r - m):], up.flip(0))
        return x
    top, bottom, left, right = borders
    return (one(h, top, bottom)[:, None] * one(w, left, right)[None, :]).to(dtype)


def tiled_apply(fn: Callable[..., torch.Tensor], x: torch.Tensor, *, tile: Optional[int], overlap: int,
                out_scale: float = 1.0, side_inputs: Sequence[Optional[torch.Tensor]] = (),
                multiple: int = 1) -> torch.Tensor:
    """Apply ``fn(x_tile, *side_tiles)`` over overlapping spatial tiles of ``x`` and blend.

    ``side_inputs`` are tensors whose spatial size is a fixed multiple of x's (cropped to the
    matching region). ``out_scale`` is the output/input spatial ratio (4 for a VQ-f4 decoder).
    ``multiple`` rounds the tile size down to what the network accepts. ``tile=None`` or a tile
    larger than x evaluates ``fn`` once. Peak memory is bounded by the tile, not the image.
    """
    H, W = x.shape[-2:]
    if tile is None or (tile >= H and tile >= W):
        return fn(x, *side_inputs)
    tile = max(multiple, tile // multiple * multiple)
    overlap = min(overlap, tile // 2)
    ys, xs = tile_starts(H, tile, overlap), tile_starts(W, tile, overlap)
    out: Optional[torch.Tensor] = None
    wsum: Optional[torch.Tensor] = None
    for y0 in ys:
        for x0 in xs:
            th, tw = min(tile, H), min(tile, W)
            sides = []
            for s in side_inputs:
                if s is None:
                    sides.append(None)
                    continue
                r = s.shape[-1] / W
                sides.append(s[..., int(y0 * r):int((y0 + th) * r), int(x0 * r):int((x0 + tw) * r)])
            o = fn(x[..., y0:y0 + th, x0:x0 + tw], *sides)
            oh, ow = o.shape[-2:]
            if out is None:
                out = torch.zeros(*o.shape[:-2], int(H * out_scale), int(W * out_scale), dtype=o.dtype, device=o.device)
                wsum = torch.zeros(int(H * out_scale), int(W * out_scale), dtype=o.dtype, device=o.device)
            oy, ox = int(y0 * out_scale), int(x0 * out_scale)
            borders = (y0 == 0, y0 + th >= H, x0 == 0, x0 + tw >= W)
            wgt = blend_window(oh, ow, ramp=int(overlap * out_scale), borders=borders, device=o.device, dtype=o.dtype)
            out[..., oy:oy + oh, ox:ox + ow] += o * wgt
            wsum[oy:oy + oh, ox:ox + ow] += wgt
    assert out is not None and wsum is not None
    return out / wsum
