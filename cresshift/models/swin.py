"""Swin transformer layers as ResShift's UNet uses them (shifted windows, relative position bias).

Everything stays in NCHW: the norms are GroupNorm(32) and the feed-forward is a pair of 1x1
convolutions, as in the official network. Parameter and buffer names follow the official
checkpoints (``patch_embed.proj``, ``blocks.N.norm1``, ``blocks.N.attn.relative_position_bias_table``,
``blocks.N.attn.relative_position_index``, ``blocks.N.attn_mask`` ...).

Shift mask. The official code builds its shifted-window mask with two indexing slips: the
region labels are written through the wrong tensor axes, so they depend on the row only, and
each window's label grid is flattened column-major while the tokens are flattened row-major.
The net effect: only the bottom row of windows is masked, and there the split runs between
columns ``< window - shift`` and ``>= window - shift``. The official checkpoints were trained with
that mask (the official forward always recomputes it; its stored ``attn_mask`` buffer is never
read), so ``layout="official"`` reproduces it exactly. ``layout="swin"`` is the textbook mask
(3 x 3 regions of the rolled map). A block adopts the layout of the ``attn_mask`` it loads.

Sizes. Feature maps whose sides are not multiples of the window are padded (bottom/right,
after ``norm1``) and the padded tokens are masked out as keys; the result is cropped back.
Maps whose sides are multiples take no padding, so their results are untouched.
"""
from __future__ import annotations

import warnings
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GroupNorm32", "SwinLayer", "SwinBlock", "WindowAttention", "Mlp", "PatchEmbed", "PatchUnEmbed",
           "window_partition", "window_merge", "shift_mask", "MASK_LAYOUTS"]

MASK_VALUE = -100.0  # the official value for pairs in different regions (not -inf)
MASK_LAYOUTS = ("official", "swin")


class GroupNorm32(nn.GroupNorm):
    """GroupNorm with 32 groups as in the official network (``groups`` changes it), computed in float32."""

    def __init__(self, channels: int, eps: float = 1e-5, groups: int = 32) -> None:
        super().__init__(groups, channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


# --- windows ------------------------------------------------------------------------------
def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, nWindows, window * window, C]; windows row by row, tokens row-major."""
    B, C, H, W = x.shape
    x = x.reshape(B, C, H // window, window, W // window, window)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(B, (H // window) * (W // window), window * window, C)


def window_merge(windows: torch.Tensor, window: int, H: int, W: int) -> torch.Tensor:
    """The exact inverse of ``window_partition``: [B, nWindows, window * window, C] -> [B, C, H, W]."""
    B, C = windows.shape[0], windows.shape[-1]
    x = windows.reshape(B, H // window, W // window, window, window, C)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(B, C, H, W)


def _band_labels(n: int, window: int, shift: int) -> torch.Tensor:
    """Which of the three bands of a rolled axis each index falls in: 0 | 1 | 2 = the wrapped strip."""
    idx = torch.arange(n)
    return (idx >= n - window).long() + (idx >= n - shift).long()


def _window_labels(labels: torch.Tensor, window: int) -> torch.Tensor:
    """[H, W] per-pixel labels -> [nWindows, window * window] per-token labels."""
    return window_partition(labels[None, None].float(), window)[0, :, :, 0]


def shift_mask(H: int, W: int, window: int, shift: int, layout: str = "official",
               pad: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """[nWindows, N, N] additive mask for shifted-window attention on an H x W map (already padded).

    ``layout`` picks the official ResShift mask or the textbook Swin one (see the module doc).
    ``pad`` = (rows, cols) of padding at the bottom/right of the un-rolled map: those tokens get
    ``-inf`` as keys, so no real token attends to them. ``shift`` may be 0 (padding mask only).
    """
    if layout not in MASK_LAYOUTS:
        raise ValueError(f"unknown shift mask layout {layout!r}; expected one of {MASK_LAYOUTS}")
    n_tokens = window * window
    n_windows = (H // window) * (W // window)
    mask = torch.zeros(n_windows, n_tokens, n_tokens)
    # Region mask of the rolled map.
    if shift > 0:
        rows = _band_labels(H, window, shift)
        if layout == "swin":
            grid = rows[:, None] * 3 + _band_labels(W, window, shift)[None, :]
            tokens = _window_labels(grid, window)
        else:  # official: labels from the row only, each window's grid read transposed
            grid = rows[:, None].expand(H, W)
            tokens = _window_labels(grid, window).reshape(n_windows, window, window).transpose(1, 2)
            tokens = tokens.reshape(n_windows, n_tokens)
        different = tokens[:, :, None] != tokens[:, None, :]
        mask = mask.masked_fill(different, MASK_VALUE)
    # Padded keys: padding sits at the bottom/right of the un-rolled map, i.e. rolled by -shift.
    if pad[0] or pad[1]:
        padded = torch.zeros(H, W, dtype=torch.bool)
        padded[H - pad[0]:, :] = True
        padded[:, W - pad[1]:] = True
        padded = torch.roll(padded, shifts=(-shift, -shift), dims=(0, 1))
        padded_keys = _window_labels(padded, window) > 0  # nW, N
        mask = mask.masked_fill(padded_keys[:, None, :], float("-inf"))
    return mask


# --- attention ----------------------------------------------------------------------------
class WindowAttention(nn.Module):
    """Multi-head self-attention inside each window, with a learned relative position bias."""

    def __init__(self, dim: int, window: int, heads: int, proj_drop: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"Swin width {dim} is not divisible by {heads} heads")
        self.dim, self.window, self.heads = dim, window, heads
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        # Table row of the (dy, dx) offset between every (query, key) pair of a window.
        yy, xx = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
        dy = yy.flatten()[:, None] - yy.flatten()[None, :] + (window - 1)
        dx = xx.flatten()[:, None] - xx.flatten()[None, :] + (window - 1)
        self.register_buffer("relative_position_index", dy * (2 * window - 1) + dx)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def position_bias(self) -> torch.Tensor:
        """[heads, N, N] relative position bias of a window."""
        n = self.window * self.window
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]
        return bias.reshape(n, n, self.heads).permute(2, 0, 1)

    def forward(self, windows: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """[B, nW, N, C] windows (and an optional [nW, N, N] additive mask) -> [B, nW, N, C]."""
        B, nW, N, C = windows.shape
        qkv = self.qkv(windows).reshape(B, nW, N, 3, self.heads, C // self.heads)
        q, k, v = qkv.permute(3, 0, 1, 4, 2, 5).unbind(0)  # each B, nW, heads, N, d
        bias = self.position_bias().to(q.dtype)  # heads, N, N
        if mask is not None:
            bias = bias[None] + mask.to(q.dtype)[:, None]  # nW, heads, N, N
        # Scaled dot-product attention (scale d^-1/2) with bias + mask added to the logits,
        # broadcast over the batch.
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        out = out.permute(0, 1, 3, 2, 4).reshape(B, nW, N, C)
        return self.proj_drop(self.proj(out))


class Mlp(nn.Module):
    """Feed-forward of the block: 1x1 conv, GELU, 1x1 conv."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, dim, 1)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(F.gelu(self.fc1(x)))))


class SwinBlock(nn.Module):
    """(Shifted-)window attention then feed-forward, both pre-norm residual, on NCHW features."""

    def __init__(self, dim: int, resolution: int, heads: int, window: int, shift: int, mlp_ratio: float,
                 drop: float = 0.0, mask_layout: str = "official", norm_groups: int = 32) -> None:
        super().__init__()
        if mask_layout not in MASK_LAYOUTS:
            raise ValueError(f"unknown shift mask layout {mask_layout!r}; expected one of {MASK_LAYOUTS}")
        if resolution <= window:  # the whole training map is one window: nothing to shift
            window, shift = resolution, 0
        if not 0 <= shift < window:
            raise ValueError(f"shift {shift} must lie in [0, window {window})")
        self.window, self.shift, self.resolution = window, shift, resolution
        self.mask_layout = mask_layout
        self.norm1 = GroupNorm32(dim, groups=norm_groups)
        self.attn = WindowAttention(dim, window, heads, proj_drop=drop)
        self.norm2 = GroupNorm32(dim, groups=norm_groups)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        # Stored for checkpoint compatibility (the mask at the training resolution); forward
        # computes the mask for the actual size from ``mask_layout``, as the official code does.
        self.register_buffer("attn_mask", shift_mask(resolution, resolution, window, shift, mask_layout)
                             if shift else None)
        self._mask_cache: dict[tuple, torch.Tensor] = {}
        self.register_load_state_dict_post_hook(SwinBlock._adopt_loaded_layout)

    def extra_repr(self) -> str:
        return f"window={self.window}, shift={self.shift}, resolution={self.resolution}, mask={self.mask_layout}"

    @staticmethod
    def _adopt_loaded_layout(block: "SwinBlock", incompatible: object) -> None:
        """After a load, use the mask layout the checkpoint's ``attn_mask`` was built with."""
        block._mask_cache.clear()
        mask = block.attn_mask
        if mask is None or mask.is_meta:
            return
        for layout in (block.mask_layout,) + tuple(m for m in MASK_LAYOUTS if m != block.mask_layout):
            if torch.equal(mask.detach().float().cpu(),
                           shift_mask(block.resolution, block.resolution, block.window, block.shift, layout)):
                block.mask_layout = layout
                return
        warnings.warn(f"loaded Swin attn_mask matches no known layout; keeping {block.mask_layout!r}",
                      stacklevel=2)

    def _mask(self, H: int, W: int, pad: tuple[int, int], device: torch.device) -> Optional[torch.Tensor]:
        if not self.shift and not any(pad):
            return None
        key = (H, W, pad, device, self.mask_layout)
        if key not in self._mask_cache:
            if len(self._mask_cache) >= 16:  # many sizes seen: start over rather than grow
                self._mask_cache.clear()
            self._mask_cache[key] = shift_mask(H, W, self.window, self.shift, self.mask_layout, pad).to(device)
        return self._mask_cache[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        ws, s = self.window, self.shift
        h = self.norm1(x)
        # Pad to whole windows (only when needed; padded tokens are masked out as keys).
        pad = (-H % ws, -W % ws)
        if any(pad):
            h = F.pad(h, (0, pad[1], 0, pad[0]))
        Hp, Wp = H + pad[0], W + pad[1]
        # Shifted window attention.
        if s:
            h = torch.roll(h, shifts=(-s, -s), dims=(2, 3))
        h = window_merge(self.attn(window_partition(h, ws), self._mask(Hp, Wp, pad, x.device)), ws, Hp, Wp)
        if s:
            h = torch.roll(h, shifts=(s, s), dims=(2, 3))
        if any(pad):
            h = h[:, :, :H, :W]
        x = x + h
        # Feed-forward.
        return x + self.mlp(self.norm2(x))


# --- the layer the UNet inserts -------------------------------------------------------------
class PatchEmbed(nn.Module):
    """1x1 convolution into the Swin width (patch size 1), optionally followed by GroupNorm."""

    def __init__(self, in_channels: int, embed_dim: int, patch_norm: bool = False, norm_groups: int = 32) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, embed_dim, 1)
        self.norm = GroupNorm32(embed_dim, groups=norm_groups) if patch_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))


class PatchUnEmbed(PatchEmbed):
    """1x1 convolution back to the UNet width, optionally followed by GroupNorm."""

    def __init__(self, out_channels: int, embed_dim: int, patch_norm: bool = False, norm_groups: int = 32) -> None:
        super().__init__(embed_dim, out_channels, patch_norm, norm_groups)


class SwinLayer(nn.Module):
    """Project to the Swin width, ``depth`` blocks alternating plain and shifted windows, project back."""

    def __init__(self, channels: int, embed_dim: int, heads: int, window: int, depth: int, resolution: int,
                 mlp_ratio: float, drop: float = 0.0, patch_norm: bool = False,
                 mask_layout: str = "official", norm_groups: int = 32) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(channels, embed_dim, patch_norm, norm_groups)
        self.patch_unembed = PatchUnEmbed(channels, embed_dim, patch_norm, norm_groups)
        self.blocks = nn.ModuleList([
            SwinBlock(embed_dim, resolution, heads, window, 0 if i % 2 == 0 else window // 2, mlp_ratio,
                      drop=drop, mask_layout=mask_layout, norm_groups=norm_groups)
            for i in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.patch_embed(x)
        for block in self.blocks:
            h = block(h)
        return self.patch_unembed(h)
