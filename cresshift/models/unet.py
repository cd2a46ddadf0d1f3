"""UNetModelSwin: ResShift's denoising network (a scale-shift-norm UNet with Swin layers).

Written from the architecture so that ``state_dict()`` carries exactly the official keys and
shapes (564 for the realsr configs) and official checkpoints load with ``strict=True``.
``forward(x, timesteps, lq=None)``: ``x`` [B, in_channels, H, W], ``timesteps`` a [B] float
tensor (the chain index; fractional values are the continuous clock s = T t - 1), ``lq``
the conditioning image, concatenated to ``x`` (or first reduced by a small conv stack when
``lq_size != image_size``).
"""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from .swin import GroupNorm32, SwinLayer

__all__ = ["UNetModelSwin", "timestep_embedding", "small_pixel_config", "count_parameters"]


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [cos | sin] of (possibly fractional) timesteps, [B] -> [B, dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half)
    args = timesteps[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, the time embedding entering as FiLM scale/shift on the second norm."""

    def __init__(self, channels: int, emb_channels: int, out_channels: int, dropout: float = 0.0,
                 scale_shift: bool = True) -> None:
        super().__init__()
        self.scale_shift = scale_shift
        self.in_layers = nn.Sequential(GroupNorm32(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, (2 if scale_shift else 1) * out_channels))
        self.out_layers = nn.Sequential(GroupNorm32(out_channels), nn.SiLU(), nn.Dropout(dropout),
                                        nn.Conv2d(out_channels, out_channels, 3, padding=1))
        nn.init.zeros_(self.out_layers[3].weight)
        nn.init.zeros_(self.out_layers[3].bias)
        self.skip_connection = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x)
        e = self.emb_layers(emb).type(h.dtype)[..., None, None]
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + e)
        return self.skip_connection(x) + h


class Downsample(nn.Module):
    """Stride-2 3x3 convolution (``op``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Nearest x2 then a 3x3 convolution (``conv``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class EmbedSequential(nn.Sequential):
    """A Sequential that passes the time embedding to the blocks that take it."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class UNetModelSwin(nn.Module):
    """ResShift's Swin-UNet, accepting the official ``model.params`` unchanged."""

    def __init__(self, image_size: int, in_channels: int, model_channels: int, out_channels: int,
                 num_res_blocks: Union[int, Sequence[int]], attention_resolutions: Sequence[int],
                 dropout: float = 0.0, channel_mult: Sequence[int] = (1, 2, 4, 8), conv_resample: bool = True,
                 dims: int = 2, use_fp16: bool = False, num_heads: int = 1, num_head_channels: int = -1,
                 use_scale_shift_norm: bool = False, resblock_updown: bool = False, swin_depth: int = 2,
                 swin_embed_dim: int = 96, window_size: int = 8, mlp_ratio: float = 2.0, patch_norm: bool = False,
                 cond_lq: bool = True, cond_mask: bool = False, lq_size: int = 256, **unused: Any) -> None:
        super().__init__()
        if dims != 2 or not conv_resample or resblock_updown or patch_norm:
            raise ValueError("UNetModelSwin supports the official settings: dims=2, conv_resample=True, "
                             "resblock_updown=False, patch_norm=False")
        if unused:
            raise ValueError(f"unknown UNetModelSwin parameters: {', '.join(sorted(unused))}")
        levels = len(channel_mult)
        blocks = [num_res_blocks] * levels if isinstance(num_res_blocks, int) else list(num_res_blocks)
        if len(blocks) != levels:
            raise ValueError(f"num_res_blocks has {len(blocks)} entries for {levels} levels")
        heads = num_heads if num_head_channels == -1 else swin_embed_dim // num_head_channels
        self.image_size, self.model_channels, self.out_channels = image_size, model_channels, out_channels
        self.cond_lq, self.cond_mask = cond_lq, cond_mask
        self.window_size, self.levels = window_size, levels
        self.dtype = torch.float16 if use_fp16 else torch.float32
        emb_dim = 4 * model_channels
        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

        # Conditioning on the LR image: concatenated as is, or reduced by stride-2 convolutions.
        lq_chn = 4 if cond_mask else 3
        if cond_lq and lq_size == image_size:
            self.feature_extractor: nn.Module = nn.Identity()
            extra = lq_chn
        else:
            layers: list[nn.Module] = []
            cin, width = lq_chn, 16
            for _ in range(int(math.log2(lq_size / image_size))):
                layers += [nn.Conv2d(cin, width, 3, padding=1), nn.SiLU(), _DownsampleTo(width, 2 * width)]
                width *= 2
                cin = width
            self.feature_extractor = nn.Sequential(*layers)
            extra = width

        def swin(ch: int, res: int) -> SwinLayer:
            return SwinLayer(ch, swin_embed_dim, heads, window_size, swin_depth, res, mlp_ratio)

        # Encoder.
        ch = input_ch = int(channel_mult[0] * model_channels)
        self.input_blocks = nn.ModuleList([EmbedSequential(nn.Conv2d(in_channels + extra, ch, 3, padding=1))])
        skip_chans = [ch]
        res = image_size
        for level, mult in enumerate(channel_mult):
            for j in range(blocks[level]):
                layers = [ResBlock(ch, emb_dim, int(mult * model_channels), dropout, use_scale_shift_norm)]
                ch = int(mult * model_channels)
                if res in attention_resolutions and j == 0:
                    layers.append(swin(ch, res))
                self.input_blocks.append(EmbedSequential(*layers))
                skip_chans.append(ch)
            if level != levels - 1:
                self.input_blocks.append(EmbedSequential(Downsample(ch)))
                skip_chans.append(ch)
                res //= 2

        # Bottleneck.
        self.middle_block = EmbedSequential(ResBlock(ch, emb_dim, ch, dropout, use_scale_shift_norm), swin(ch, res),
                                            ResBlock(ch, emb_dim, ch, dropout, use_scale_shift_norm))

        # Decoder.
        self.output_blocks = nn.ModuleList()
        for level, mult in list(enumerate(channel_mult))[::-1]:
            for i in range(blocks[level] + 1):
                layers = [ResBlock(ch + skip_chans.pop(), emb_dim, int(model_channels * mult), dropout,
                                   use_scale_shift_norm)]
                ch = int(model_channels * mult)
                if res in attention_resolutions and i == 0:
                    layers.append(swin(ch, res))
                if level and i == blocks[level]:
                    layers.append(Upsample(ch))
                    res *= 2
                self.output_blocks.append(EmbedSequential(*layers))

        self.out = nn.Sequential(GroupNorm32(ch), nn.SiLU(), nn.Conv2d(input_ch, out_channels, 3, padding=1))

    @property
    def size_multiple(self) -> int:
        """Input sides must be multiples of this (window size at the coarsest level)."""
        return self.window_size * 2 ** (self.levels - 1)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, lq: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.cond_lq and lq is None:
            raise ValueError("this network is conditioned on the LR image: pass lq=")
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels)).type(self.dtype)
        if lq is not None:
            x = torch.cat([x, self.feature_extractor(lq.type(self.dtype))], dim=1)
        h = x.type(self.dtype)
        skips = []
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h.type(x.dtype))


class _DownsampleTo(nn.Module):
    """Stride-2 conv changing the width (the official lq feature extractor's Downsample)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.op = nn.Conv2d(cin, cout, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


def small_pixel_config(**overrides: Any) -> dict[str, Any]:
    """``model.params`` of the small pixel-space x4 SR network the bundled models use (CPU-trainable).

    x and lq are both at HR size (lq = bicubic-upsampled LR, concatenated: 6 input channels);
    three levels (64, 32, 16 px for a 64 px crop), Swin layers at the coarsest level only.
    """
    cfg: dict[str, Any] = dict(
        image_size=64, in_channels=3, model_channels=32, out_channels=3, attention_resolutions=[16],
        dropout=0.0, channel_mult=[1, 2, 2], num_res_blocks=[1, 2, 2], conv_resample=True, dims=2,
        use_fp16=False, num_head_channels=16, use_scale_shift_norm=True, resblock_updown=False, swin_depth=2,
        swin_embed_dim=64, window_size=8, mlp_ratio=2, cond_lq=True, lq_size=64)
    cfg.update(overrides)
    return cfg


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
