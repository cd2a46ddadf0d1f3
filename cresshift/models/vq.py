"""VQModelTorch: the VQ-f4 autoencoder of ResShift's latent models (a VQGAN encoder/decoder).

``encode(x)`` returns the pre-quantisation latent (after ``quant_conv``); ``decode(z)``
quantises to the nearest codebook entry first, then ``post_quant_conv`` and the decoder.
Parameter names and shapes match the official ``autoencoder_vq_f4.pth`` (205 keys).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["VQModelTorch", "VectorQuantizer", "Encoder", "Decoder"]


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """Two GroupNorm-swish-conv stages with a (1x1 when the width changes) shortcut."""

    def __init__(self, cin: int, cout: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = _norm(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = _norm(cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return (self.nin_shortcut(x) if self.nin_shortcut is not None else x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all positions (1x1 conv projections), residual."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = _norm(channels)
        self.q, self.k, self.v = (nn.Conv2d(channels, channels, 1) for _ in range(3))
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        h = self.norm(x)
        q, k, v = (m(h).reshape(B, 1, C, H * W).transpose(-1, -2) for m in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v).transpose(-1, -2).reshape(B, C, H, W)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Pad right/bottom by one, then a stride-2 3x3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest x2, then a 3x3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Level(nn.Module):
    """One resolution level: ``block`` (ResnetBlocks), ``attn`` (maybe empty), and a resampler."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.ModuleList()
        self.attn = nn.ModuleList()


class _Mid(nn.Module):
    def __init__(self, channels: int, dropout: float) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, dropout)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


def _blocks(num_res_blocks: Union[int, Sequence[int]], levels: int) -> list[int]:
    return [num_res_blocks] * levels if isinstance(num_res_blocks, int) else list(num_res_blocks)


class Encoder(nn.Module):
    """Image -> z_channels latent, downsampling by 2^(len(ch_mult) - 1)."""

    def __init__(self, *, ch: int, ch_mult: Sequence[int], num_res_blocks: Union[int, Sequence[int]],
                 attn_resolutions: Sequence[int], in_channels: int, resolution: int, z_channels: int,
                 double_z: bool = False, dropout: float = 0.0, **_: Any) -> None:
        super().__init__()
        blocks = _blocks(num_res_blocks, len(ch_mult))
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        self.down = nn.ModuleList()
        res, cin = resolution, ch
        for i, mult in enumerate(ch_mult):
            level = _Level()
            for _ in range(blocks[i]):
                level.block.append(ResnetBlock(cin, ch * mult, dropout))
                cin = ch * mult
                if res in attn_resolutions:
                    level.attn.append(AttnBlock(cin))
            if i != len(ch_mult) - 1:
                level.downsample = Downsample(cin)
                res //= 2
            self.down.append(level)
        self.mid = _Mid(cin, dropout)
        self.norm_out = _norm(cin)
        self.conv_out = nn.Conv2d(cin, 2 * z_channels if double_z else z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            for j, block in enumerate(level.block):
                h = block(h)
                if len(level.attn):
                    h = level.attn[j](h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """z_channels latent -> image, upsampling by 2^(len(ch_mult) - 1)."""

    def __init__(self, *, ch: int, out_ch: int, ch_mult: Sequence[int], num_res_blocks: Union[int, Sequence[int]],
                 attn_resolutions: Sequence[int], resolution: int, z_channels: int, dropout: float = 0.0,
                 **_: Any) -> None:
        super().__init__()
        blocks = _blocks(num_res_blocks, len(ch_mult))
        cin = ch * ch_mult[-1]
        res = resolution // 2 ** (len(ch_mult) - 1)
        self.conv_in = nn.Conv2d(z_channels, cin, 3, padding=1)
        self.mid = _Mid(cin, dropout)
        levels: list[_Level] = []
        for i in reversed(range(len(ch_mult))):
            level = _Level()
            for _ in range(blocks[i] + 1):
                level.block.append(ResnetBlock(cin, ch * ch_mult[i], dropout))
                cin = ch * ch_mult[i]
                if res in attn_resolutions:
                    level.attn.append(AttnBlock(cin))
            if i != 0:
                level.upsample = Upsample(cin)
                res *= 2
            levels.insert(0, level)  # up[0] is the finest level, as in the official layout
        self.up = nn.ModuleList(levels)
        self.norm_out = _norm(cin)
        self.conv_out = nn.Conv2d(cin, out_ch, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            for j, block in enumerate(level.block):
                h = block(h)
                if len(level.attn):
                    h = level.attn[j](h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class VectorQuantizer(nn.Module):
    """Nearest-codebook-entry quantisation by L2 distance, computed in chunks of positions."""

    def __init__(self, n_embed: int, embed_dim: int, chunk: int = 4096) -> None:
        super().__init__()
        self.embedding = nn.Embedding(n_embed, embed_dim)
        self.chunk = chunk

    def indices(self, z: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, H, W] codebook indices."""
        B, C, H, W = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, C)
        e = self.embedding.weight
        e2 = (e ** 2).sum(1)
        out = []
        for part in flat.split(self.chunk):
            # |z - e|^2 = |z|^2 + |e|^2 - 2 z.e, the same expansion the official quantiser uses.
            d = (part ** 2).sum(1, keepdim=True) + e2 - 2 * part @ e.T
            out.append(d.argmin(1))
        return torch.cat(out).reshape(B, H, W)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.embedding(self.indices(z)).permute(0, 3, 1, 2).contiguous()


class VQModelTorch(nn.Module):
    """The VQ-f4 autoencoder: ``encode`` -> pre-quantisation latent, ``decode`` quantises first."""

    def __init__(self, embed_dim: int, n_embed: int, ddconfig: dict[str, Any]) -> None:
        super().__init__()
        self.encoder = Encoder(**ddconfig)
        self.decoder = Decoder(**ddconfig)
        self.quantize = VectorQuantizer(n_embed, embed_dim)
        self.quant_conv = nn.Conv2d(ddconfig["z_channels"], embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(embed_dim, ddconfig["z_channels"], 1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.quant_conv(self.encoder(x))

    def decode(self, z: torch.Tensor, force_not_quantize: bool = False) -> torch.Tensor:
        q = z if force_not_quantize else self.quantize(z)
        return self.decoder(self.post_quant_conv(q))

    def forward(self, x: torch.Tensor, force_not_quantize: bool = False) -> torch.Tensor:
        return self.decode(self.encode(x), force_not_quantize)
