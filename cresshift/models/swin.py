"""Swin transformer layers as used inside ResShift's UNet (shifted windows, relative position bias).

Parameter names follow the official checkpoints (``patch_embed.proj``, ``blocks.N.norm1``,
``blocks.N.attn.relative_position_bias_table`` ...). Feature maps stay in NCHW; the norms are
GroupNorm(32) and the MLP is a pair of 1x1 convolutions, as in the official network.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GroupNorm32", "SwinLayer", "SwinBlock", "WindowAttention", "window_partition", "window_merge",
           "shift_mask"]

MASK_VALUE = -100.0  # the official shifted-window mask value (not -inf)


class GroupNorm32(nn.GroupNorm):
    """GroupNorm with 32 groups, computed in float32 whatever the input dtype."""

    def __init__(self, channels: int) -> None:
        super().__init__(32, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


def window_partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """[B, C, H, W] -> [B * nWindows, ws * ws, C], windows in (batch, row, column) order."""
    B, C, H, W = x.shape
    x = x.reshape(B, C, H // ws, ws, W // ws, ws).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(-1, ws * ws, C)


def window_merge(windows: torch.Tensor, ws: int, H: int, W: int) -> torch.Tensor:
    """The inverse of ``window_partition``."""
    C = windows.shape[-1]
    B = windows.shape[0] // ((H // ws) * (W // ws))
    x = windows.reshape(B, H // ws, W // ws, ws, ws, C).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(B, C, H, W)


def shift_mask(H: int, W: int, ws: int, shift: int) -> torch.Tensor:
    """[nWindows, ws*ws, ws*ws] additive mask: tokens from different regions of the rolled map don't attend."""
    region = torch.zeros(1, 1, H, W)
    bounds = ((0, -ws), (-ws, -shift), (-shift, None))
    label = 0
    for h0, h1 in bounds:
        for w0, w1 in bounds:
            region[..., slice(h0, h1), slice(w0, w1)] = label
            label += 1
    ids = window_partition(region, ws).squeeze(-1)  # nW, ws*ws
    diff = ids[:, None, :] - ids[:, :, None]
    return torch.where(diff != 0, torch.tensor(MASK_VALUE), torch.tensor(0.0))


class WindowAttention(nn.Module):
    """Multi-head self-attention inside a window, with a learned relative position bias."""

    def __init__(self, dim: int, window: int, heads: int) -> None:
        super().__init__()
        self.window, self.heads = window, heads
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        # Index of the (dy, dx) offset between every pair of tokens in a window.
        yy, xx = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
        coords = torch.stack([yy.flatten(), xx.flatten()])  # 2, N
        rel = coords[:, :, None] - coords[:, None, :] + (window - 1)
        self.register_buffer("relative_position_index", rel[0] * (2 * window - 1) + rel[1])
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def bias(self) -> torch.Tensor:
        """[heads, N, N] relative position bias."""
        n = self.window * self.window
        return self.relative_position_bias_table[self.relative_position_index.reshape(-1)].reshape(n, n, -1).permute(2, 0, 1)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        Bw, N, C = x.shape
        q, k, v = self.qkv(x).reshape(Bw, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        bias = self.bias().to(q.dtype)[None]  # 1, heads, N, N
        if mask is not None:
            nW = mask.shape[0]
            bias = (bias.reshape(1, 1, self.heads, N, N) + mask.to(q.dtype)[None, :, None]).expand(
                Bw // nW, nW, self.heads, N, N).reshape(Bw, self.heads, N, N)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(out.transpose(1, 2).reshape(Bw, N, C))


class Mlp(nn.Module):
    """Two 1x1 convolutions with GELU (the official block's feed-forward)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class SwinBlock(nn.Module):
    """One (shifted-)window attention block + MLP, both residual, on NCHW features."""

    def __init__(self, dim: int, resolution: int, heads: int, window: int, shift: int, mlp_ratio: float) -> None:
        super().__init__()
        if resolution <= window:  # the whole map is one window: nothing to shift
            window, shift = resolution, 0
        self.window, self.shift, self.resolution = window, shift, resolution
        self.norm1 = GroupNorm32(dim)
        self.attn = WindowAttention(dim, window, heads)
        self.norm2 = GroupNorm32(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        # The official checkpoints store the mask for the training resolution.
        self.register_buffer("attn_mask", shift_mask(resolution, resolution, window, shift) if shift else None)
        self._masks: dict[tuple[int, int], torch.Tensor] = {}

    def _mask(self, H: int, W: int, device: torch.device) -> Optional[torch.Tensor]:
        if not self.shift:
            return None
        if (H, W) == (self.resolution, self.resolution) and self.attn_mask is not None:
            return self.attn_mask
        key = (H, W)
        if key not in self._masks:
            self._masks[key] = shift_mask(H, W, self.window, self.shift)
        return self._masks[key].to(device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        ws = self.window
        if H % ws or W % ws:
            raise ValueError(f"Swin feature map {H}x{W} is not a multiple of the window size {ws}; "
                             f"pad the input to a multiple of window_size * 2^(levels-1)")
        # Shifted window attention.
        h = self.norm1(x)
        if self.shift:
            h = torch.roll(h, shifts=(-self.shift, -self.shift), dims=(2, 3))
        h = window_merge(self.attn(window_partition(h, ws), self._mask(H, W, x.device)), ws, H, W)
        if self.shift:
            h = torch.roll(h, shifts=(self.shift, self.shift), dims=(2, 3))
        x = x + h
        # Feed-forward.
        return x + self.mlp(self.norm2(x))


class PatchProj(nn.Module):
    """A 1x1 convolution named ``proj`` (the official patch embed/unembed with patch size 1)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class SwinLayer(nn.Module):
    """Project to the Swin width, ``depth`` blocks alternating plain and shifted windows, project back."""

    def __init__(self, channels: int, embed_dim: int, heads: int, window: int, depth: int, resolution: int,
                 mlp_ratio: float) -> None:
        super().__init__()
        self.patch_embed = PatchProj(channels, embed_dim)
        self.patch_unembed = PatchProj(embed_dim, channels)
        self.blocks = nn.ModuleList([
            SwinBlock(embed_dim, resolution, heads, window, 0 if i % 2 == 0 else window // 2, mlp_ratio)
            for i in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.patch_embed(x)
        for block in self.blocks:
            h = block(h)
        return self.patch_unembed(h)
