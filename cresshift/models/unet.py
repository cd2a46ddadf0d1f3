"""UNetModelSwin: ResShift's denoising network (a scale-shift-norm UNet with Swin layers).

Written from the architecture so that ``state_dict()`` carries exactly the official keys and
shapes (564 for the realsr configs) and official checkpoints load with ``strict=True``; the
computation follows the official one operation by operation (including its shifted-window
mask, see ``swin.py``).

``forward(x, timesteps, lq=None, mask=None)``: ``x`` [B, in_channels, H, W]; ``timesteps`` a [B]
(or scalar) tensor holding the chain index, fractional values being the continuous clock
``s = T t - 1``; ``lq`` the conditioning image, concatenated to ``x`` as is when
``lq_size == image_size``, otherwise first reduced by a small stride-2 conv stack; ``mask`` the
extra conditioning channel of ``cond_mask`` models. H and W must be multiples of
``2 ** (levels - 1)``; multiples of ``window_size * 2 ** (levels - 1)`` avoid the Swin layers'
internal padding (the official network accepts only those).
"""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from .swin import MASK_LAYOUTS, GroupNorm32, SwinLayer

__all__ = ["UNetModelSwin", "ResBlock", "Downsample", "Upsample", "TimestepEmbedSequential",
           "timestep_embedding", "small_pixel_config", "count_parameters"]


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [cos | sin] of (possibly fractional) timesteps: [B] -> [B, dim] float32."""
    half = dim // 2
    steps = torch.arange(half, dtype=torch.float32, device=timesteps.device)  # made on the device: no host copy
    freqs = torch.exp(-math.log(max_period) * steps / half)
    args = timesteps[:, None].float() * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding


class ResBlock(nn.Module):
    """Norm-SiLU-conv twice with a skip; the time embedding enters as FiLM scale/shift (or a bias)."""

    def __init__(self, channels: int, emb_channels: int, out_channels: Optional[int] = None, dropout: float = 0.0,
                 use_scale_shift_norm: bool = False, norm_groups: int = 32) -> None:
        super().__init__()
        out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(GroupNorm32(channels, groups=norm_groups), nn.SiLU(),
                                       nn.Conv2d(channels, out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(),
                                        nn.Linear(emb_channels, (2 if use_scale_shift_norm else 1) * out_channels))
        self.out_layers = nn.Sequential(GroupNorm32(out_channels, groups=norm_groups), nn.SiLU(), nn.Dropout(dropout),
                                        nn.Conv2d(out_channels, out_channels, 3, padding=1))
        # The residual branch starts at zero (official zero_module).
        nn.init.zeros_(self.out_layers[3].weight)
        nn.init.zeros_(self.out_layers[3].bias)
        self.skip_connection = (nn.Identity() if out_channels == channels
                                else nn.Conv2d(channels, out_channels, 1))

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x)
        emb_out = self.emb_layers(emb).type(h.dtype)[:, :, None, None]
        if self.use_scale_shift_norm:
            # Scale-shift norm: GroupNorm(h) * (1 + scale) + shift, then the rest of the branch.
            scale, shift = emb_out.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


class Downsample(nn.Module):
    """Halve the resolution: stride-2 3x3 convolution ``op`` (or 2x2 average pooling)."""

    def __init__(self, channels: int, use_conv: bool = True, out_channels: Optional[int] = None) -> None:
        super().__init__()
        out_channels = out_channels or channels
        if use_conv:
            self.op: nn.Module = nn.Conv2d(channels, out_channels, 3, stride=2, padding=1)
        else:
            if out_channels != channels:
                raise ValueError("average-pool downsampling cannot change the width")
            self.op = nn.AvgPool2d(kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Double the resolution: nearest neighbour, then (optionally) a 3x3 convolution ``conv``."""

    def __init__(self, channels: int, use_conv: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1) if use_conv else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.conv is not None else x


class TimestepEmbedSequential(nn.Sequential):
    """A Sequential that hands the time embedding to the blocks that take it (the ResBlocks)."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class UNetModelSwin(nn.Module):
    """ResShift's Swin-UNet; takes the official ``model.params`` unchanged.

    ``norm_groups`` is not an official key: every GroupNorm has 32 groups unless it is set (the
    official networks, 160 channels wide, have 5 channels per group; at width 32 it is one
    channel per group). The state-dict keys and shapes do not depend on it.
    """

    def __init__(self, image_size: int, in_channels: int, model_channels: int, out_channels: int,
                 num_res_blocks: Union[int, Sequence[int]], attention_resolutions: Sequence[int],
                 dropout: float = 0.0, channel_mult: Sequence[int] = (1, 2, 4, 8), conv_resample: bool = True,
                 dims: int = 2, use_fp16: bool = False, num_heads: int = 1, num_head_channels: int = -1,
                 use_scale_shift_norm: bool = False, resblock_updown: bool = False, swin_depth: int = 2,
                 swin_embed_dim: int = 96, window_size: int = 8, mlp_ratio: float = 2.0, patch_norm: bool = False,
                 cond_lq: bool = True, cond_mask: bool = False, lq_size: int = 256,
                 shift_mask_layout: str = "official", norm_groups: int = 32) -> None:
        super().__init__()
        # Settings the official realsr/bicsr networks never use and this port does not implement.
        if dims != 2:
            raise ValueError("UNetModelSwin supports dims=2 only")
        if resblock_updown:
            raise ValueError("resblock_updown=True is not supported (the official configs use False)")
        if use_fp16:
            raise ValueError("use_fp16=True is not supported: run the float32 weights under autocast instead")
        if shift_mask_layout not in MASK_LAYOUTS:
            raise ValueError(f"shift_mask_layout must be one of {MASK_LAYOUTS}")
        levels = len(channel_mult)
        widths = sorted({int(m * model_channels) for m in channel_mult} | {swin_embed_dim})
        if norm_groups < 1 or any(w % norm_groups for w in widths):
            raise ValueError(f"norm_groups {norm_groups} must divide every width of the network {widths}")
        blocks_per_level = [num_res_blocks] * levels if isinstance(num_res_blocks, int) else list(num_res_blocks)
        if len(blocks_per_level) != levels:
            raise ValueError(f"num_res_blocks has {len(blocks_per_level)} entries for {levels} levels")
        if num_head_channels == -1:
            swin_heads = num_heads
        elif num_head_channels <= 0 or swin_embed_dim % num_head_channels:
            raise ValueError(f"swin_embed_dim {swin_embed_dim} is not a multiple of num_head_channels "
                             f"{num_head_channels}")
        else:
            swin_heads = swin_embed_dim // num_head_channels
        self.image_size, self.in_channels, self.out_channels = image_size, in_channels, out_channels
        self.model_channels, self.levels, self.window_size = model_channels, levels, window_size
        self.cond_lq, self.cond_mask = cond_lq, cond_mask
        attention_resolutions = {int(r) for r in attention_resolutions}

        # Time embedding MLP.
        emb_dim = 4 * model_channels
        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

        # LR conditioning: concatenated as is at the same size, else reduced by stride-2 conv stages
        # (conv 3x3 -> SiLU -> stride-2 conv doubling the width, starting at 16 channels).
        lq_channels = 4 if cond_mask else 3
        if not cond_lq:
            # The official code adds 16 phantom input channels here (a network it cannot run);
            # an unconditioned network simply takes x.
            self.feature_extractor: nn.Module = nn.Identity()
            cond_channels = 0
        elif lq_size == image_size:
            self.feature_extractor = nn.Identity()
            cond_channels = lq_channels
        else:
            stages = int(math.log(lq_size / image_size) / math.log(2))
            if stages < 1 or image_size * 2 ** stages != lq_size:
                raise ValueError(f"lq_size {lq_size} must be image_size {image_size} times a power of two")
            layers: list[nn.Module] = []
            width_in, width = lq_channels, 16
            for _ in range(stages):
                layers += [nn.Conv2d(width_in, width, 3, padding=1), nn.SiLU(),
                           Downsample(width, use_conv=True, out_channels=2 * width)]
                width *= 2
                width_in = width
            self.feature_extractor = nn.Sequential(*layers)
            cond_channels = width

        def swin_layer(channels: int, resolution: int) -> SwinLayer:
            return SwinLayer(channels, swin_embed_dim, swin_heads, window_size, swin_depth, resolution, mlp_ratio,
                             drop=dropout, patch_norm=patch_norm, mask_layout=shift_mask_layout,
                             norm_groups=norm_groups)

        def res_block(channels: int, out: int) -> ResBlock:
            return ResBlock(channels, emb_dim, out, dropout, use_scale_shift_norm, norm_groups)

        # Encoder: per level, num_res_blocks ResBlocks (a Swin layer after the first one at the
        # attention resolutions), then a downsample except at the last level.
        ch = first_ch = int(channel_mult[0] * model_channels)
        self.input_blocks = nn.ModuleList(
            [TimestepEmbedSequential(nn.Conv2d(in_channels + cond_channels, ch, 3, padding=1))])
        skip_channels = [ch]
        resolution = image_size
        for level, mult in enumerate(channel_mult):
            for j in range(blocks_per_level[level]):
                width = int(mult * model_channels)
                layers = [res_block(ch, width)]
                ch = width
                if resolution in attention_resolutions and j == 0:
                    layers.append(swin_layer(ch, resolution))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                skip_channels.append(ch)
            if level != levels - 1:
                self.input_blocks.append(TimestepEmbedSequential(Downsample(ch, conv_resample)))
                skip_channels.append(ch)
                resolution //= 2

        # Bottleneck: ResBlock, Swin layer (always), ResBlock.
        self.middle_block = TimestepEmbedSequential(res_block(ch, ch), swin_layer(ch, resolution), res_block(ch, ch))

        # Decoder: per level, num_res_blocks + 1 ResBlocks on [h, skip] (a Swin layer after the
        # first one at the attention resolutions), the last one followed by an upsample.
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(blocks_per_level[level] + 1):
                width = int(model_channels * mult)
                layers = [res_block(ch + skip_channels.pop(), width)]
                ch = width
                if resolution in attention_resolutions and i == 0:
                    layers.append(swin_layer(ch, resolution))
                if level and i == blocks_per_level[level]:
                    layers.append(Upsample(ch, conv_resample))
                    resolution *= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))

        # Output head (not zero-initialised, as in the official network).
        self.out = nn.Sequential(GroupNorm32(ch, groups=norm_groups), nn.SiLU(), nn.Conv2d(first_ch, out_channels, 3, padding=1))

    @property
    def size_multiple(self) -> int:
        """Input sides must be multiples of this (one factor 2 per downsampling)."""
        return 2 ** (self.levels - 1)

    @property
    def window_multiple(self) -> int:
        """Sides that are multiples of this need no padding inside the Swin layers (the official rule)."""
        return self.window_size * 2 ** (self.levels - 1)

    def _condition(self, x: torch.Tensor, lq: Optional[torch.Tensor], mask: Optional[torch.Tensor]) -> torch.Tensor:
        """Concatenate the (reduced) LR image, and the mask for cond_mask models, to x."""
        if not self.cond_lq:
            if lq is not None or mask is not None:
                raise ValueError("this network is not conditioned on an LR image (cond_lq=False): drop lq=/mask=")
            return x
        if lq is None:
            raise ValueError("this network is conditioned on the LR image: pass lq=")
        if self.cond_mask != (mask is not None):
            raise ValueError("this network needs mask=" if self.cond_mask else "this network takes no mask=")
        if mask is not None:
            lq = torch.cat([lq, mask.to(lq.dtype)], dim=1)
        cond = self.feature_extractor(lq.to(self.compute_dtype))
        if cond.shape[-2:] != x.shape[-2:]:
            raise ValueError(f"lq of size {tuple(lq.shape[-2:])} gives {tuple(cond.shape[-2:])} features for "
                             f"x of size {tuple(x.shape[-2:])}")
        return torch.cat([x, cond.to(x.dtype)], dim=1)

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype the torso runs in: that of its weights (float32 for the official models)."""
        return self.input_blocks[0][0].weight.dtype

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, lq: Optional[torch.Tensor] = None,
                mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Predict from x [B, C, H, W] at (fractional) chain index ``timesteps`` [B], given lq."""
        if x.shape[-1] % self.size_multiple or x.shape[-2] % self.size_multiple:
            raise ValueError(f"input sides {tuple(x.shape[-2:])} must be multiples of {self.size_multiple}")
        timesteps = torch.as_tensor(timesteps, device=x.device)
        if timesteps.ndim == 0 or timesteps.numel() == 1:
            timesteps = timesteps.reshape(1).expand(x.shape[0])
        if timesteps.shape != (x.shape[0],):
            raise ValueError(f"timesteps must have shape [{x.shape[0]}], got {tuple(timesteps.shape)}")
        dtype = self.compute_dtype
        t_emb = timestep_embedding(timesteps, self.model_channels).to(self.time_embed[0].weight.dtype)
        emb = self.time_embed(t_emb).to(dtype)

        h = self._condition(x, lq, mask).to(dtype)
        skips = []
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h.to(self.out[2].weight.dtype)).to(x.dtype)


def small_pixel_config(**overrides: Any) -> dict[str, Any]:
    """``model.params`` of a small, CPU-trainable pixel-space x4 SR network of the same class.

    x and lq both at HR size (lq = the bicubic-upsampled LR, concatenated: 6 input channels);
    three levels (64, 32, 16 px on a 64 px crop) with Swin layers (4 heads of 16, window 8)
    at the coarsest level only. About 1.4 M parameters.
    """
    config: dict[str, Any] = dict(
        image_size=64, in_channels=3, model_channels=32, out_channels=3, attention_resolutions=[16],
        dropout=0.0, channel_mult=[1, 2, 2], num_res_blocks=[1, 1, 1], conv_resample=True, dims=2,
        use_fp16=False, num_head_channels=16, use_scale_shift_norm=True, resblock_updown=False, swin_depth=2,
        swin_embed_dim=64, window_size=8, mlp_ratio=2, cond_lq=True, lq_size=64)
    config.update(overrides)
    return config


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (buffers excluded)."""
    return sum(p.numel() for p in module.parameters())
