"""VQModelTorch: ResShift's VQ-f4 autoencoder (a VQGAN encoder / codebook / decoder).

The module tree reproduces the official parameter names and shapes, so the official
``autoencoder_vq_f4.pth`` (205 tensors) loads with ``strict=True``:

    encoder.conv_in, encoder.down.<i>.block.<j>[.attn.<j>][.downsample], encoder.mid.{block_1,attn_1,block_2},
    encoder.norm_out, encoder.conv_out, quant_conv, quantize.embedding, post_quant_conv,
    decoder.conv_in, decoder.mid.*, decoder.up.<i>.block.<j>[.attn.<j>][.upsample], decoder.norm_out, decoder.conv_out

``encode(x)`` returns the pre-quantisation latent (after ``quant_conv``); ``decode(z)`` snaps ``z`` to the
nearest codebook entry first (unless ``force_not_quantize``), then applies ``post_quant_conv`` and the decoder.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["VQModelTorch", "VectorQuantizer", "Encoder", "Decoder", "ResnetBlock", "AttnBlock",
           "Downsample", "Upsample"]

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")

# Default memory budget of one chunk of the [positions, codes] distance matrix, in elements
# (2**23 float32 = 32 MiB: 1024 positions at a time against the official 8192-entry codebook).
_DISTANCE_CHUNK_ELEMENTS = 1 << 23


def _group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with 32 groups and eps 1e-6, as everywhere in the VQGAN."""
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


def _conv3x3(in_channels: int, out_channels: int, padding_mode: str) -> nn.Conv2d:
    """Stride-1 'same' 3x3 convolution."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1, padding_mode=padding_mode)


def _conv1x1(in_channels: int, out_channels: int) -> nn.Conv2d:
    """Pointwise convolution."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=1, padding=0)


def _per_level(num_res_blocks: Union[int, Sequence[int]], levels: int) -> list[int]:
    """ResnetBlocks per resolution level, from an int or a per-level list."""
    if isinstance(num_res_blocks, int):
        return [num_res_blocks] * levels
    counts = [int(n) for n in num_res_blocks]
    if len(counts) != levels:
        raise ValueError(f"num_res_blocks has {len(counts)} entries for {levels} levels (ch_mult)")
    return counts


# ------------------------------------------------------------------------------------------------
# Building blocks
# ------------------------------------------------------------------------------------------------
class ResnetBlock(nn.Module):
    """norm-swish-conv twice plus a skip (a 1x1 ``nin_shortcut`` only when the width changes)."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0,
                 padding_mode: str = "zeros") -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.norm1 = _group_norm(in_channels)
        self.conv1 = _conv3x3(in_channels, out_channels, padding_mode)
        self.norm2 = _group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _conv3x3(out_channels, out_channels, padding_mode)
        if in_channels != out_channels:
            self.nin_shortcut = _conv1x1(in_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x + F(x), with the skip projected when widths differ."""
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        skip = self.nin_shortcut(x) if self.in_channels != self.out_channels else x
        return skip + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with 1x1-conv projections and a residual connection."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = _group_norm(channels)
        self.q = _conv1x1(channels, channels)
        self.k = _conv1x1(channels, channels)
        self.v = _conv1x1(channels, channels)
        self.proj_out = _conv1x1(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x + proj_out(softmax(q k^T / sqrt(C)) v) over the H*W positions."""
        b, c, h, w = x.shape
        normed = self.norm(x)

        # [B, C, H, W] -> [B, H*W, C] token sequences; one head of width C (default scale 1/sqrt(C)).
        def tokens(proj: nn.Conv2d) -> torch.Tensor:
            return proj(normed).flatten(2).transpose(1, 2)

        attended = F.scaled_dot_product_attention(tokens(self.q), tokens(self.k), tokens(self.v))
        attended = attended.transpose(1, 2).reshape(b, c, h, w)
        return x + self.proj_out(attended)


class Downsample(nn.Module):
    """Halve the resolution: zero-pad right/bottom by one then a stride-2 3x3 conv (or 2x2 average pooling)."""

    def __init__(self, channels: int, with_conv: bool = True) -> None:
        super().__init__()
        self.with_conv = with_conv
        if with_conv:
            # torch convs cannot pad asymmetrically, so the padding is done in forward().
            self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, C, ceil((H-1)/2), ...] (H/2 for even H)."""
        if not self.with_conv:
            return F.avg_pool2d(x, kernel_size=2, stride=2)
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0.0))


class Upsample(nn.Module):
    """Double the resolution: nearest-neighbour x2 then (optionally) a 3x3 conv."""

    def __init__(self, channels: int, with_conv: bool = True, padding_mode: str = "zeros") -> None:
        super().__init__()
        self.with_conv = with_conv
        if with_conv:
            self.conv = _conv3x3(channels, channels, padding_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, C, 2H, 2W]."""
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.conv(x) if self.with_conv else x


class _Level(nn.Module):
    """One resolution level: ``block`` (ResnetBlocks), ``attn`` (one per block, or empty), then a resampler.

    The resampler is registered as ``downsample`` (encoder) or ``upsample`` (decoder) and is absent on the
    coarsest encoder / finest decoder level, which is what the official key names require.
    """

    def __init__(self, widths: Sequence[tuple[int, int]], with_attn: bool, dropout: float, padding_mode: str,
                 resampler: Optional[tuple[str, nn.Module]]) -> None:
        super().__init__()
        self.block = nn.ModuleList(ResnetBlock(cin, cout, dropout, padding_mode) for cin, cout in widths)
        self.attn = nn.ModuleList(AttnBlock(cout) for _, cout in widths) if with_attn else nn.ModuleList()
        self._resampler_name: Optional[str] = None
        if resampler is not None:
            self._resampler_name = resampler[0]
            self.add_module(*resampler)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Blocks (each followed by its attention, if any), then the resampler."""
        for i, block in enumerate(self.block):
            h = block(h)
            if len(self.attn):
                h = self.attn[i](h)
        if self._resampler_name is not None:
            h = getattr(self, self._resampler_name)(h)
        return h


class _Middle(nn.Module):
    """ResnetBlock -> AttnBlock -> ResnetBlock at the coarsest resolution."""

    def __init__(self, channels: int, dropout: float, padding_mode: str) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, dropout, padding_mode)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels, dropout, padding_mode)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """The three blocks in order."""
        return self.block_2(self.attn_1(self.block_1(h)))


def _check_common(padding_mode: str, attn_type: str, ch: int, ch_mult: Sequence[int]) -> None:
    """Reject settings this implementation does not reproduce."""
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
    if attn_type != "vanilla":
        raise NotImplementedError(f"attn_type {attn_type!r} (only the official 'vanilla' attention is implemented)")
    if len(ch_mult) < 1 or any((ch * m) % 32 for m in ch_mult):
        raise ValueError(f"every ch * ch_mult must be a multiple of 32 for GroupNorm(32); got ch={ch}, "
                         f"ch_mult={list(ch_mult)}")


# ------------------------------------------------------------------------------------------------
# Encoder / decoder
# ------------------------------------------------------------------------------------------------
class Encoder(nn.Module):
    """Image [B, in_channels, H, W] -> latent [B, z_channels (x2 if double_z), H/f, W/f], f = 2^(len(ch_mult)-1)."""

    def __init__(self, *, ch: int, ch_mult: Sequence[int], num_res_blocks: Union[int, Sequence[int]],
                 attn_resolutions: Sequence[int], in_channels: int, resolution: int, z_channels: int,
                 double_z: bool = True, dropout: float = 0.0, resamp_with_conv: bool = True,
                 padding_mode: str = "zeros", attn_type: str = "vanilla", **unused: Any) -> None:
        super().__init__()
        _check_common(padding_mode, attn_type, ch, ch_mult)
        blocks = _per_level(num_res_blocks, len(ch_mult))
        self.conv_in = _conv3x3(in_channels, ch, padding_mode)

        # Level i runs at resolution / 2^i; all but the last end with a Downsample.
        self.down = nn.ModuleList()
        width, res = ch, resolution
        for i, mult in enumerate(ch_mult):
            out = ch * mult
            widths = [(width if j == 0 else out, out) for j in range(blocks[i])]
            width = out
            is_last = i == len(ch_mult) - 1
            resampler = None if is_last else ("downsample", Downsample(width, resamp_with_conv))
            self.down.append(_Level(widths, res in attn_resolutions, dropout, padding_mode, resampler))
            if not is_last:
                res //= 2

        self.mid = _Middle(width, dropout, padding_mode)
        self.norm_out = _group_norm(width)
        self.conv_out = _conv3x3(width, 2 * z_channels if double_z else z_channels, padding_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode an image batch to the raw latent (before quant_conv)."""
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """Latent [B, z_channels, h, w] -> image [B, out_ch, h*f, w*f], f = 2^(len(ch_mult)-1)."""

    def __init__(self, *, ch: int, out_ch: int, ch_mult: Sequence[int], num_res_blocks: Union[int, Sequence[int]],
                 attn_resolutions: Sequence[int], resolution: int, z_channels: int, dropout: float = 0.0,
                 resamp_with_conv: bool = True, padding_mode: str = "zeros", attn_type: str = "vanilla",
                 tanh_out: bool = False, **unused: Any) -> None:
        super().__init__()
        _check_common(padding_mode, attn_type, ch, ch_mult)
        blocks = _per_level(num_res_blocks, len(ch_mult))
        self.tanh_out = tanh_out
        width = ch * ch_mult[-1]
        res = resolution // 2 ** (len(ch_mult) - 1)
        self.conv_in = _conv3x3(z_channels, width, padding_mode)
        self.mid = _Middle(width, dropout, padding_mode)

        # Built coarse to fine, but stored so that up[i] runs at resolution / 2^i (up[0] is the finest level);
        # each level has one more ResnetBlock than its encoder twin, and all but up[0] end with an Upsample.
        levels: list[_Level] = []
        for i in reversed(range(len(ch_mult))):
            out = ch * ch_mult[i]
            widths = [(width if j == 0 else out, out) for j in range(blocks[i] + 1)]
            width = out
            resampler = None if i == 0 else ("upsample", Upsample(width, resamp_with_conv, padding_mode))
            levels.append(_Level(widths, res in attn_resolutions, dropout, padding_mode, resampler))
            if i != 0:
                res *= 2
        self.up = nn.ModuleList(reversed(levels))

        self.norm_out = _group_norm(width)
        self.conv_out = _conv3x3(width, out_ch, padding_mode)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Decode a (post_quant_conv'd) latent to an image batch."""
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):  # coarsest first
            h = level(h)
        h = self.conv_out(F.silu(self.norm_out(h)))
        return torch.tanh(h) if self.tanh_out else h


# ------------------------------------------------------------------------------------------------
# Codebook
# ------------------------------------------------------------------------------------------------
class VectorQuantizer(nn.Module):
    """Snap each latent vector to its nearest codebook entry (L2), as the official VectorQuantizer2 does.

    Distances are computed ``chunk_size`` positions at a time (default: as many as fit a 32 MiB
    [positions, codes] block), in at least float32, with the official expansion
    ``|z|^2 + |e|^2 - 2 z.e``; ties go to the lowest index (``argmin``).
    """

    def __init__(self, n_embed: int, embed_dim: int, chunk_size: Optional[int] = None) -> None:
        super().__init__()
        self.n_embed, self.embed_dim = n_embed, embed_dim
        self.embedding = nn.Embedding(n_embed, embed_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / n_embed, 1.0 / n_embed)  # the official initialisation
        self.chunk_size = chunk_size

    def _positions_per_chunk(self) -> int:
        """How many latent positions go into one distance block."""
        if self.chunk_size is not None:
            if self.chunk_size < 1:
                raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")
            return int(self.chunk_size)
        return max(1, _DISTANCE_CHUNK_ELEMENTS // self.n_embed)

    @torch.no_grad()
    def indices(self, z: torch.Tensor) -> torch.Tensor:
        """Nearest-code indices of a [B, embed_dim, H, W] latent, as a [B, H, W] long tensor."""
        if z.dim() != 4 or z.shape[1] != self.embed_dim:
            raise ValueError(f"expected a [B, {self.embed_dim}, H, W] latent, got {tuple(z.shape)}")
        b, c, h, w = z.shape
        dtype = torch.promote_types(z.dtype, torch.float32)  # half-precision distances would blur near-ties
        vectors = z.detach().movedim(1, -1).reshape(-1, c).to(dtype)
        codes = self.embedding.weight.detach().to(device=z.device, dtype=dtype)
        codes_t = codes.t()
        code_sq = codes.square().sum(dim=1)

        # One [chunk, n_embed] distance block at a time: |z|^2 + |e|^2 - 2 z.e (the |z|^2 term does not change
        # the argmin, but keeping it reproduces the official rounding).
        out = torch.empty(vectors.shape[0], dtype=torch.long, device=z.device)
        step = self._positions_per_chunk()
        for start in range(0, vectors.shape[0], step):
            part = vectors[start:start + step]
            dist = part.square().sum(dim=1, keepdim=True) + code_sq
            dist.sub_(part @ codes_t, alpha=2.0)
            out[start:start + step] = dist.argmin(dim=1)
        return out.reshape(b, h, w)

    def embed_code(self, indices: torch.Tensor) -> torch.Tensor:
        """Codebook vectors of a [B, H, W] index map, as [B, embed_dim, H, W]."""
        return self.embedding(indices).movedim(-1, 1).contiguous()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """The quantised latent: exact codebook vectors, with a straight-through gradient to ``z``."""
        quantised = self.embed_code(self.indices(z)).detach()  # in the codebook's dtype, as official
        if torch.is_grad_enabled() and z.requires_grad:
            # Straight-through estimator (identity gradient, as the official z + (z_q - z).detach());
            # z - z.detach() is exactly zero, so the values stay the exact codebook entries.
            quantised = quantised + (z - z.detach())
        return quantised


# ------------------------------------------------------------------------------------------------
# The autoencoder
# ------------------------------------------------------------------------------------------------
class VQModelTorch(nn.Module):
    """The VQ autoencoder: ``encode`` -> pre-quantisation latent; ``decode`` quantises, then decodes."""

    def __init__(self, embed_dim: int, n_embed: int, ddconfig: dict[str, Any]) -> None:
        super().__init__()
        self.embed_dim, self.n_embed = embed_dim, n_embed
        self.downsample_factor = 2 ** (len(ddconfig["ch_mult"]) - 1)
        self.encoder = Encoder(**ddconfig)
        self.decoder = Decoder(**ddconfig)
        self.quantize = VectorQuantizer(n_embed, embed_dim)
        self.quant_conv = _conv1x1(ddconfig["z_channels"], embed_dim)
        self.post_quant_conv = _conv1x1(embed_dim, ddconfig["z_channels"])

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Image [B, 3, H, W] -> unquantised latent [B, embed_dim, H/4, W/4] (after quant_conv)."""
        return self.quant_conv(self.encoder(x))

    def decode(self, z: torch.Tensor, force_not_quantize: bool = False) -> torch.Tensor:
        """Latent -> image; ``z`` is snapped to the codebook first unless ``force_not_quantize``."""
        quantised = z if force_not_quantize else self.quantize(z)
        return self.decoder(self.post_quant_conv(quantised))

    def decode_code(self, indices: torch.Tensor) -> torch.Tensor:
        """Codebook index map [B, h, w] -> image."""
        return self.decode(self.quantize.embed_code(indices), force_not_quantize=True)

    def forward(self, x: torch.Tensor, force_not_quantize: bool = False) -> torch.Tensor:
        """Reconstruction: decode(encode(x))."""
        return self.decode(self.encode(x), force_not_quantize)
