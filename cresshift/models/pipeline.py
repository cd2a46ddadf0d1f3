"""SRPipeline: LR image in, SR image out, with any solver from the core registry (design §5)."""
from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..schedules import (ContinuousSchedule, ExactSchedule, ExpAlphaSchedule, ResShiftSchedule,
                         schedule_from_config)
from ..solvers import SampleResult, sample
from .checkpoints import (CheckpointError, check_state_dict, load_cresshift, load_official_state_dict,
                          save_cresshift)
from .denoiser import NetworkDenoiser
from .fastpath import BF16_PARTS, CompiledOrEager, StaticShapeCall, as_channels_last, bf16_copy, weights_version
from .presets import AUTOENCODER_FACTOR, OFFICIAL_PRESETS, official_config
from .tiling import tiled_apply

__all__ = ["SRPipeline", "SRResult", "load_pipeline", "build_pipeline", "BUNDLED", "bundled_path", "upsample_lr",
           "CheckpointContents", "read_cresshift_file", "read_official_files"]

BUNDLED = {"bundled": "continuous.safetensors", "bundled-continuous": "continuous.safetensors",
           "bundled-discrete": "discrete.safetensors"}
SCHEDULE_CHOICES = ("default", "discrete", "exact", "exp", "paper")


def bundled_path(name: str) -> Path:
    """Path of a bundled model file inside the package."""
    return Path(str(resources.files("cresshift") / "bundled" / BUNDLED[name]))


@dataclass
class SRResult:
    """What one pipeline run produced: the SR batch, the NFE used, the grid and a time split."""

    sr: torch.Tensor
    nfe: int
    ts: np.ndarray
    seconds: dict[str, float] = field(default_factory=dict)
    sample: Optional[SampleResult] = None


def upsample_lr(lr: torch.Tensor, sf: int) -> torch.Tensor:
    """The shift target's pixels: bicubic x sf of the LR (as the official sampler does). Training uses it too."""
    return F.interpolate(lr, scale_factor=sf, mode="bicubic", align_corners=False)


#: The parts the CPU fast path runs in bfloat16 unless ``cpu_bf16=`` says otherwise, for pixel-space and latent
#: models: those whose outputs stayed >= 45 dB PSNR from the float32 eager ones on photographs (README, Speed):
#: the bundled pixel network 72-74 dB; the realsr-x4 VQ-f4 encoder + decoder 45.2-46.8 dB; the realsr-x4 network
#: with its full-resolution blocks in float32 (``BF16_KEEP_FLOAT32["latent_network"]``) 45.2 dB (random codebook) /
#: 45.5 dB (photograph latents as codebook) with encoder + decoder, 2.22-2.64x CPU vs eager at NFE 5. The whole
#: latent network in bfloat16 flips codebook entries at decoding (40.2 dB with a dense codebook).
DEFAULT_CPU_BF16: dict[str, tuple[str, ...]] = {"pixel": ("network",), "latent": ("network", "encoder", "decoder")}
#: Submodules of each part that keep float32 weights inside its bfloat16 copy, as (keep_float32, float32_tail
#: [, bf16_inputs]) of ``fastpath.bf16_copy``; "latent_network" is the network of latent models, whose
#: full-resolution blocks (``full_resolution_blocks``) join its float32_tail and whose other blocks get bf16_inputs.
BF16_KEEP_FLOAT32: dict[str, tuple[tuple[str, ...], ...]] = {
    "network": (("time_embed",), ("out",)), "encoder": ((), ("quant_conv",)),
    # the decoder's middle (ResnetBlock, 4096-token attention, ResnetBlock at 1/4 size) in float32: +1.5 dB
    "decoder": (("decoder.mid",), ("decoder.conv_out",)),
    # realsr-x4: the full-resolution stretch (input blocks 0-2, output blocks 9-11) in float32 with float32
    # activations (its input, its skips, its output): per-call relative error of x0_hat 3.4e-4 (3.7e-3 all bfloat16)
    "latent_network": ((), ("time_embed", "out"))}


def full_resolution_blocks(net: nn.Module) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(full-resolution blocks, the other blocks) of a ``UNetModelSwin``: the input blocks before the first
    Downsample and the output blocks after the last Upsample; the others are the rest of its blocks, in order."""
    from . import unet

    def has(block: nn.Module, kind: type) -> bool:
        return any(isinstance(m, kind) for m in block.modules())

    first_down = next((i for i, b in enumerate(net.input_blocks) if has(b, unet.Downsample)), len(net.input_blocks))
    last_up = max((i for i, b in enumerate(net.output_blocks) if has(b, unet.Upsample)), default=-1)
    blocks = ([f"input_blocks.{i}" for i in range(len(net.input_blocks))] + ["middle_block"]
              + [f"output_blocks.{i}" for i in range(len(net.output_blocks))])
    full = [f"input_blocks.{i}" for i in range(first_down)] + [
        f"output_blocks.{i}" for i in range(last_up + 1, len(net.output_blocks))]
    return tuple(full), tuple(b for b in blocks if b not in full)


def _bf16_keep(part: str, base: nn.Module, latent: bool) -> tuple[tuple[str, ...], ...]:
    """``bf16_copy``'s keep arguments for ``part`` (its module ``base``)."""
    if part != "network" or not latent:
        return BF16_KEEP_FLOAT32[part]
    keep, tail = BF16_KEEP_FLOAT32["latent_network"]
    full, rest = full_resolution_blocks(base)
    return keep, (*tail, *full), rest


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX); elsewhere bfloat16 is emulated and slow."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):
        return False


def cpu_bf16_parts(value: Union[None, bool, str, Iterable[str]], latent: bool) -> frozenset[str]:
    """``cpu_bf16`` as a set of parts: None or "default" -> the default (none on a CPU without native
    bfloat16), True / False -> all / none, "a,b" or a list of parts, "all", "none"."""
    if isinstance(value, str) and value.strip() == "default":
        value = None
    if value is None:
        return frozenset(DEFAULT_CPU_BF16["latent" if latent else "pixel"] if cpu_has_native_bf16() else ())
    if isinstance(value, bool):
        return frozenset(BF16_PARTS if value else ())
    parts = [p.strip() for p in value.split(",")] if isinstance(value, str) else list(value)
    parts = [p for p in parts if p and p != "none"]
    if "all" in parts:
        parts = list(BF16_PARTS)
    unknown = set(parts) - set(BF16_PARTS)
    if unknown:
        raise ValueError(f"cpu_bf16 parts must be among {', '.join(BF16_PARTS)} (or all / none / default), got {sorted(unknown)}")
    return frozenset(parts)


#: the autoencoder's encode (encoder, then quant_conv) and decode after quantisation (post_quant_conv, then
#: decoder) as chains of its own submodules, under their own names (what the bfloat16 copies are made of)
_AE_STAGES = {"encoder": ("encoder", "quant_conv"), "decoder": ("post_quant_conv", "decoder")}


def _ae_stages(ae: nn.Module, part: str) -> nn.Sequential:
    return nn.Sequential(OrderedDict((name, getattr(ae, name)) for name in _AE_STAGES[part]))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _same_layout(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return t


class _TimedNet(nn.Module):
    """Wraps the network: tiles its calls and accumulates the time spent in it.

    ``layout`` maps the network's inputs to the memory order it runs in (outputs come back
    contiguous); ``call`` replaces ``net(x, s, lq)`` (a ``StaticShapeCall``); ``timed=False`` skips
    the device synchronisation around every call, and ``seconds`` stays 0.
    """

    def __init__(self, net: nn.Module, tile: Optional[int], overlap: int, multiple: int, context: int = 0, *,
                 layout: Callable[[Optional[torch.Tensor]], Optional[torch.Tensor]] = _same_layout,
                 call: Optional[Callable[..., torch.Tensor]] = None, timed: bool = True) -> None:
        super().__init__()
        self.net, self.tile, self.overlap, self.multiple = net, tile, overlap, multiple
        self.context = context
        self.layout, self.call, self.timed = layout, call, timed
        self.seconds = 0.0

    def _net(self, x: torch.Tensor, s: torch.Tensor, lq: Optional[torch.Tensor]) -> torch.Tensor:
        x, lq = self.layout(x), self.layout(lq)
        if self.call is not None and lq is not None:
            return self.call(x, s, lq).contiguous()
        return (self.net(x, s, lq=lq) if lq is not None else self.net(x, s)).contiguous()

    def forward(self, x: torch.Tensor, s: torch.Tensor, lq: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.timed:
            _sync(x.device)
        t0 = time.perf_counter()
        H, W = x.shape[-2:]
        if self.context:  # mirrored context around the image, kept at the network's multiple
            c = self.context
            pads = (c, c + (-(W + 2 * c)) % self.multiple, c, c + (-(H + 2 * c)) % self.multiple)
            x = _mirror_pad(x, pads)
            if lq is not None:
                r = lq.shape[-1] // W
                lq = _mirror_pad(lq, tuple(p * r for p in pads))

        out = tiled_apply(lambda xt, lqt: self._net(xt, s, lqt), x, tile=self.tile, overlap=self.overlap,
                          side_inputs=(lq,), multiple=self.multiple)
        if self.context:
            out = out[..., self.context:self.context + H, self.context:self.context + W]
        if self.timed:
            _sync(x.device)
            self.seconds += time.perf_counter() - t0
        return out


def _check_lr(lr: Any) -> None:
    """Refuse anything but a finite [B, 3, h, w] tensor of at least 8x8 pixels."""
    if not isinstance(lr, torch.Tensor) or lr.ndim != 4 or lr.shape[1] != 3:
        got = tuple(lr.shape) if isinstance(lr, torch.Tensor) else type(lr).__name__
        raise ValueError(f"lr must be a [B, 3, h, w] tensor in [-1, 1], got {got}")
    if min(lr.shape[-2:]) < 8:
        raise ValueError(f"the LR image is {lr.shape[-1]}x{lr.shape[-2]} px; cresshift needs at least 8x8")
    if not bool(torch.isfinite(lr).all()):
        raise ValueError("the LR input contains NaN/Inf")


def _mirror_pad(t: torch.Tensor, pads: tuple[int, ...]) -> torch.Tensor:
    """Reflect padding (left, right, top, bottom); edge replication where the image is too small to mirror."""
    mode = "reflect" if max(pads[:2]) < t.shape[-1] and max(pads[2:]) < t.shape[-2] else "replicate"
    return F.pad(t, pads, mode=mode)


class SRPipeline:
    """ResShift super-resolution: bicubic x sf, encode (latent mode), prior, solver, decode, clamp.

    ``pipe(lr, solver="heun", nfe=15, rho=-8.0, seed=0, **options)`` maps a [B, 3, h, w] LR
    batch in [-1, 1] to [B, 3, sf h, sf w] in [-1, 1]. Sides are reflect-padded to what the
    network needs (multiples of 64 in the official latent setting) and cropped back. ``tile``
    (in LR pixels) bounds peak memory: the solver runs on the whole image (so the noise per
    pixel does not depend on tiling) while every network / autoencoder call is evaluated on
    overlapping tiles blended with raised-cosine weights that sum to one.

    ``context_pad`` (network pixels; default: the model config's ``sampling.context_pad``, 0 for
    the official models) mirrors that much of the image around it at every network call and
    crops it off again, so the pixels at the image border are predicted from content on both
    sides as everywhere else, not next to the network's zero padding. The bundled models use 16:
    without it they leave a faint rim along the border of flat tiles.

    ``fast`` (default True; ``run(fast=False)`` for one run) selects the fast execution path. On
    a GPU it is equal to the plain eager one within float round-off: the sampling loop makes no host
    synchronisation per step (NaN/Inf are checked once at the end, and ``seconds["network"]`` then
    holds the whole loop, solver arithmetic included); ``cuda_graphs=True`` (GPU, fast path) also
    replays every network call of one input shape from a CUDA graph captured on first use
    (``fastpath.StaticShapeCall``; off a GPU the same static-buffer replay runs eagerly). On the
    CPU the network and the autoencoder run on channels-last activations, and the parts named in
    ``cpu_bf16`` ("network", "encoder", "decoder"; a list, a comma string, True for all, False /
    () for none) run as bfloat16 copies (oneDNN, AMX where the CPU has it; normalisations, the
    codebook look-up and the last layers stay float32). That changes results beyond round-off, so
    the default (None) takes only what stayed >= 45 dB PSNR from float32 eager on photographs:
    the network of pixel-space models (the bundled ones: about 73 dB) and, of latent ones, the
    VQ-f4 encoder and decoder (the decoder's middle block stays float32) and the network but its
    full-resolution blocks (45.2-45.5 dB; ``DEFAULT_CPU_BF16``, ``BF16_KEEP_FLOAT32``; README, Speed).
    On a CPU without native bfloat16 (``cpu_has_native_bf16``) the default is none: emulated
    bfloat16 is slower than float32.
    """

    def __init__(self, net: nn.Module, schedule: Union[ResShiftSchedule, ContinuousSchedule], *,
                 autoencoder: Optional[nn.Module] = None, sf: int = 4, predict: str = "xstart",
                 normalize_input: bool = True, config: Optional[dict[str, Any]] = None,
                 device: Union[str, torch.device] = "cpu", dtype: Optional[torch.dtype] = None,
                 fast: bool = True, cuda_graphs: bool = False,
                 cpu_bf16: Union[None, bool, str, Iterable[str]] = None) -> None:
        self.device = torch.device(device)
        self.fast, self.cuda_graphs = bool(fast), bool(cuda_graphs)
        self._graphed: Optional[StaticShapeCall] = None  # the network's captured calls, per input shape
        self._graphed_net: Optional[nn.Module] = None  # the module those calls run
        self.net = net.to(self.device).eval()
        self._forward: Callable[..., torch.Tensor] = self.net  # what run() calls: the network, or its compiled wrapper
        self._compile_kwargs: Optional[dict[str, Any]] = None  # set by compile()
        self._compiled_copies: dict[str, CompiledOrEager] = {}  # part -> its compiled bfloat16 copy
        self.autoencoder = autoencoder.to(self.device).eval() if autoencoder is not None else None
        self.cpu_bf16 = cpu_bf16  # normalised by the property setter
        self._bf16_cache: dict[str, tuple[tuple, nn.Module]] = {}  # part -> (weights version, bfloat16 copy)
        self.schedule = schedule
        self.sf = int(sf)
        self.predict = predict
        self.normalize_input = normalize_input
        self.config = config or {}
        if dtype in (torch.float16, torch.bfloat16) and self.device.type != "cuda":
            raise ValueError(f"{dtype} autocast is for GPUs; on CPU use float32")
        self.autocast_dtype = dtype if dtype in (torch.float16, torch.bfloat16) else None
        params = self.config.get("model", {}).get("params", {})
        levels = len(params.get("channel_mult", (1, 2, 2, 4)))
        window = int(params.get("window_size", 8))
        self.net_multiple = window * 2 ** (levels - 1)  # at the network's resolution
        self.context_pad = _check_context_pad(self.config.get("sampling", {}).get("context_pad", 0))

    def compile(self, **kwargs: Any) -> "SRPipeline":
        """Run the network through ``torch.compile(net, **kwargs)`` (e.g. ``mode="max-autotune"``); returns self.

        Applies to the fast path only (``run(fast=False)`` stays plain eager). The first call of each
        input shape compiles (slow: about a minute for the realsr-x4 network on 2 CPU cores); later
        calls reuse it (``torch._inductor.config.freezing = True`` lets inductor prepack the CPU
        convolution weights). On the CPU fast
        path with a bfloat16 network (``cpu_bf16``) its bfloat16 copy is what gets compiled. Where
        compiling fails (no C++ compiler ...) the network runs eagerly, with a warning
        (``fastpath.CompiledOrEager``). Saving keeps the plain weights. ``compile(disable=True)``
        goes back to eager.
        """
        disable = bool(kwargs.get("disable"))
        self._compile_kwargs = None if disable else dict(kwargs)
        self._forward = self.net if disable else CompiledOrEager(self.net, **kwargs)
        self._compiled_copies = {}
        self._graphed = None
        return self

    def _compiled_part(self, part: str, low: nn.Module) -> Callable[..., torch.Tensor]:
        """``low`` (the bfloat16 copy of ``part``) through ``torch.compile`` when ``compile()`` was called."""
        if self._compile_kwargs is None:
            return low
        wrapped = self._compiled_copies.get(part)
        if wrapped is None or wrapped.module is not low:
            wrapped = self._compiled_copies[part] = CompiledOrEager(low, **self._compile_kwargs)
        return wrapped

    @property
    def cpu_bf16(self) -> frozenset[str]:
        """The parts (network / encoder / decoder) the CPU fast path runs in bfloat16."""
        return self._cpu_bf16

    @cpu_bf16.setter
    def cpu_bf16(self, value: Union[None, bool, str, Iterable[str]]) -> None:
        self._cpu_bf16 = cpu_bf16_parts(value, self.autoencoder is not None)

    def _bf16_part(self, part: str, fast: bool) -> Optional[nn.Module]:
        """The bfloat16 copy of ``part`` when the CPU fast path runs it in bfloat16, else None.

        Made on first use and remade when the float32 weights change (``fastpath.weights_version``).
        """
        if not (fast and self.device.type == "cpu" and part in self.cpu_bf16):
            return None
        if part != "network" and self.autoencoder is None:
            return None
        if part == "network" and not isinstance(self.net, _swin_unet()):
            return None  # other networks (tests' stand-ins) may not cast their inputs to their weights' dtype
        source = self.net if part == "network" else self.autoencoder
        version = weights_version(source)
        cached = self._bf16_cache.get(part)
        if cached is None or cached[0] != version:
            base = source if part == "network" else _ae_stages(source, part)
            cached = self._bf16_cache[part] = (version, bf16_copy(base, *_bf16_keep(part, base, self.latent)))
        return cached[1]

    def _network(self, fast: bool) -> nn.Module:
        """What the network calls run: on the fast path the (compiled) bfloat16 copy on the CPU when chosen, else
        ``_forward`` (the network, or its compiled wrapper); on the eager path the plain network."""
        if not fast:  # the plain eager path: the float32 network, not compiled
            return self.net
        low = self._bf16_part("network", fast)
        return self._forward if low is None else self._compiled_part("network", low)

    @property
    def latent(self) -> bool:
        return self.autoencoder is not None

    @property
    def lr_multiple(self) -> int:
        """LR sides are padded to a multiple of this (64 for the official latent models)."""
        per_lr = 1 if self.latent else self.sf  # network pixels per LR pixel
        return max(1, math.ceil(self.net_multiple / per_lr))

    def schedule_for(self, name: Optional[str]) -> Union[ResShiftSchedule, ContinuousSchedule]:
        """The pipeline's schedule, or a named variant: discrete | exact | exp | paper."""
        if name in (None, "default"):
            return self.schedule
        discrete = self.discrete_schedule
        if name == "discrete":
            return discrete
        if name == "exact":
            return ExactSchedule(discrete)
        if name == "exp":
            if isinstance(self.schedule, ExpAlphaSchedule):
                return self.schedule
            stored = self.config.get("fitted_schedule")
            return schedule_from_config(stored) if stored else ExpAlphaSchedule.fit(discrete)
        if name == "paper":
            return ExpAlphaSchedule.paper()
        raise ValueError(f"unknown schedule {name!r}; valid: {', '.join(SCHEDULE_CHOICES)}")

    @property
    def discrete_schedule(self) -> ResShiftSchedule:
        diffusion = self.config.get("diffusion")
        if diffusion:
            return ResShiftSchedule.from_config(diffusion)
        if isinstance(self.schedule, ResShiftSchedule):
            return self.schedule
        raise ValueError("this pipeline carries no discrete schedule")

    # --- autoencoder ---------------------------------------------------------------------
    def _layout(self, fast: bool) -> Callable[[Optional[torch.Tensor]], Optional[torch.Tensor]]:
        """The activations' memory order on the chosen path: channels-last on the fast CPU path."""
        return as_channels_last if fast and self.device.type == "cpu" else _same_layout

    def _encode(self, img: torch.Tensor, tile: Optional[int], overlap: int, fast: bool = False) -> torch.Tensor:
        assert self.autoencoder is not None
        layout = self._layout(fast)
        low = self._bf16_part("encoder", fast)
        if low is not None:
            low = self._compiled_part("encoder", low)

            def encode(t: torch.Tensor) -> torch.Tensor:
                return low(t.to(torch.bfloat16, memory_format=torch.channels_last)).float()
        else:
            def encode(t: torch.Tensor) -> torch.Tensor:
                return self.autoencoder.encode(layout(t))
        with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
            z = tiled_apply(encode, img, tile=tile, overlap=overlap, out_scale=1 / AUTOENCODER_FACTOR,
                            multiple=AUTOENCODER_FACTOR)
        return z.float().contiguous()

    def _decode(self, z: torch.Tensor, tile: Optional[int], overlap: int, fast: bool = False) -> torch.Tensor:
        assert self.autoencoder is not None
        layout = self._layout(fast)
        low = self._bf16_part("decoder", fast)
        if low is not None:  # the codebook look-up stays float32
            low = self._compiled_part("decoder", low)

            def decode(t: torch.Tensor) -> torch.Tensor:
                q = self.autoencoder.quantize(t.float())
                return low(q.to(torch.bfloat16, memory_format=torch.channels_last)).float()
        else:
            def decode(t: torch.Tensor) -> torch.Tensor:
                return self.autoencoder.decode(layout(t))
        with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
            img = tiled_apply(decode, z, tile=tile, overlap=overlap, out_scale=float(AUTOENCODER_FACTOR))
        return img.float().contiguous()

    def decode(self, x: torch.Tensor, tile: Optional[int] = None, tile_overlap: int = 16,
               fast: Optional[bool] = None) -> torch.Tensor:
        """Network-space samples (e.g. a step's x0_hat) as image pixels: the autoencoder's decode for latent
        models, tiled as in ``run`` (``tile`` in latent pixels) and on its path (``fast``: None = the
        pipeline's); pixel models return ``x`` unchanged."""
        fast = self.fast if fast is None else bool(fast)
        return self._decode(x, tile, tile_overlap, fast) if self.latent else x

    # --- the run -------------------------------------------------------------------------
    @torch.no_grad()
    def run(self, lr: torch.Tensor, *, solver: str = "heun", nfe: int = 15, rho: Optional[float] = None,
            grid: Any = None, seed: Optional[int] = 0, generator: Optional[torch.Generator] = None, schedule: Optional[str] = None,
            tile: Optional[int] = None, tile_overlap: int = 16, callback: Optional[Callable] = None,
            context_pad: Optional[int] = None, fast: Optional[bool] = None, **options: Any) -> SRResult:
        """Super-resolve ``lr`` and report NFE, grid and seconds (network / solver / autoencoder).

        ``rho`` / ``grid`` choose the time grid as in ``cresshift.sample`` (neither: ``grid="auto"``);
        ``fast``: the fast path (None: the pipeline's ``fast``) or the plain eager one (False).
        """
        _check_lr(lr)
        sched = self.schedule_for(schedule)
        context = self.context_pad if context_pad is None else _check_context_pad(context_pad)
        fast = self.fast if fast is None else bool(fast)
        h, w = lr.shape[-2:]
        if generator is None and seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(int(seed))
        y, lq, ae_seconds = self.shift_target(lr, tile=tile, tile_overlap=tile_overlap, fast=fast)
        secs = {"autoencoder": ae_seconds}
        tile_net = None if tile is None else (tile if self.latent else tile * self.sf)
        overlap_net = tile_overlap if self.latent else tile_overlap * self.sf

        denoiser = self.network_denoiser(y, lq, schedule=sched, tile=tile_net, tile_overlap=overlap_net,
                                         context_pad=context, fast=fast)
        timed = denoiser.net
        no_sync = fast and self.device.type == "cuda"
        _sync(self.device)
        t0 = time.perf_counter()
        res = sample(denoiser, y, sched, solver=solver, nfe=nfe, rho=rho, grid=grid, generator=generator,
                     callback=callback, defer_finite_check=no_sync, **options)
        _sync(self.device)
        total = time.perf_counter() - t0
        secs["network"] = total if no_sync else timed.seconds
        secs["solver"] = 0.0 if no_sync else max(0.0, total - timed.seconds)

        out = res.x
        if self.latent:
            t0 = time.perf_counter()
            out = self._decode(out, tile_net, tile_overlap, fast)
            _sync(self.device)
            secs["autoencoder"] += time.perf_counter() - t0
        sr = out.clamp(-1, 1)[..., : h * self.sf, : w * self.sf]
        return SRResult(sr=sr, nfe=res.nfe, ts=res.ts, seconds=secs, sample=res)

    def shift_target(self, lr: torch.Tensor, *, tile: Optional[int] = None, tile_overlap: int = 16,
                     fast: bool = False) -> tuple[torch.Tensor, torch.Tensor, float]:
        """(y, lq, autoencoder seconds) of an LR batch reflect-padded to ``lr_multiple`` (the official rule).

        y is the bicubic x sf upsampled LR (latent models: its encoding, with lq the padded LR;
        pixel models: lq = y). ``tile`` / ``tile_overlap`` in LR pixels bound the encoder's memory;
        ``fast``: the encoder on the fast path's layout.
        """
        lr = lr.to(self.device, torch.float32)
        h, w = lr.shape[-2:]
        ph, pw = (-h) % self.lr_multiple, (-w) % self.lr_multiple
        if ph or pw:
            lr = F.pad(lr, (0, pw, 0, ph), mode="reflect" if ph < h and pw < w else "replicate")
        y_pix = upsample_lr(lr, self.sf)
        if not self.latent:
            return y_pix, y_pix, 0.0
        _sync(self.device)
        t0 = time.perf_counter()
        y = self._encode(y_pix, None if tile is None else tile * self.sf, tile_overlap * self.sf, fast)
        _sync(self.device)
        return y, lr, time.perf_counter() - t0

    def network_denoiser(self, y: torch.Tensor, lq: Optional[torch.Tensor], *,
                         schedule: Union[None, str, ResShiftSchedule, ContinuousSchedule] = None,
                         tile: Optional[int] = None, tile_overlap: int = 16,
                         context_pad: Optional[int] = None, fast: Optional[bool] = None) -> NetworkDenoiser:
        """This model's x0-predictor ``denoiser(x, t) -> x0_hat`` for one batch, as ``run`` samples with it.

        ``y`` is the shift target and ``lq`` the network's conditioning (pixel models: both the
        bicubic-upsampled LR, ``upsample_lr``; latent models: y the encoded upsampled LR, lq the
        LR); sizes must already be the network's multiple (``run`` pads). ``schedule``: a name
        for ``schedule_for`` or a schedule object; ``tile`` / ``tile_overlap`` in network pixels;
        ``fast`` (None: the pipeline's ``fast``, as ``run``): the fast path's layout, CUDA graphs
        (``cuda_graphs``) and no per-call timing on a GPU.
        """
        sched = self.schedule_for(schedule) if schedule is None or isinstance(schedule, str) else schedule
        context = self.context_pad if context_pad is None else _check_context_pad(context_pad)
        fast = self.fast if fast is None else bool(fast)
        on_cuda = self.device.type == "cuda"
        call = None
        network = self._network(fast)
        if fast and self.cuda_graphs:
            if self._graphed is None or self._graphed_net is not network:
                self._graphed = StaticShapeCall(lambda x, s, lq: network(x, s, lq=lq))
                self._graphed_net = network
            call = self._graphed
        timed = _TimedNet(network, tile, tile_overlap, self.net_multiple, context, layout=self._layout(fast),
                          call=call, timed=not (fast and on_cuda))
        return NetworkDenoiser(timed, sched, lq=lq, latent=self.latent, normalize_input=self.normalize_input,
                               predict=self.predict, y=y, autocast_dtype=self.autocast_dtype)

    def __call__(self, lr: torch.Tensor, solver: str = "heun", nfe: int = 15, rho: Optional[float] = None,
                 seed: Optional[int] = 0, grid: Any = None, **options: Any) -> torch.Tensor:
        """[B, 3, h, w] LR in [-1, 1] -> [B, 3, sf h, sf w] SR in [-1, 1]."""
        return self.run(lr, solver=solver, nfe=nfe, rho=rho, grid=grid, seed=seed, **options).sr

    def save(self, path: Union[str, Path], *, training: Optional[dict[str, Any]] = None) -> None:
        """Write the pipeline (network, autoencoder, configs, schedule) in cresshift's format, atomically."""
        tensors = {"model": self.net.state_dict()}
        if self.autoencoder is not None:
            tensors["autoencoder"] = self.autoencoder.state_dict()
        cfg = dict(self.config)
        cfg["schedule"] = self.schedule.to_config() if not isinstance(self.schedule, ResShiftSchedule) else None
        if training is not None:
            cfg["training"] = training
        save_cresshift(path, tensors, cfg)


# --- construction ---------------------------------------------------------------------------
def _swin_unet() -> type:
    from .unet import UNetModelSwin

    return UNetModelSwin


def _build_net(params: dict[str, Any]) -> nn.Module:
    from .unet import UNetModelSwin

    return UNetModelSwin(**params)


def _build_autoencoder(cfg: dict[str, Any]) -> nn.Module:
    from .vq import VQModelTorch

    return VQModelTorch(embed_dim=cfg["embed_dim"], n_embed=cfg["n_embed"], ddconfig=cfg["ddconfig"])


def _check_context_pad(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"context_pad must be a whole number of network pixels >= 0, got {value!r}")
    return value


def build_pipeline(config: dict[str, Any], *, model_sd: Optional[dict[str, torch.Tensor]] = None,
                   autoencoder_sd: Optional[dict[str, torch.Tensor]] = None, device: Union[str, torch.device] = "cpu",
                   dtype: Optional[torch.dtype] = None, hint: str = "", fast: bool = True,
                   cpu_bf16: Union[None, bool, str, Iterable[str]] = None) -> SRPipeline:
    """An SRPipeline from a cresshift config; weights are checked key by key (random if None).

    ``fast`` / ``cpu_bf16``: the execution path ``SRPipeline`` describes."""
    params = dict(config["model"]["params"])
    if isinstance(params.get("out_channels"), str):  # the journal configs' "${autoencoder.params.embed_dim}"
        params["out_channels"] = config["autoencoder"]["embed_dim"]
    net = _build_net(params)
    if model_sd is not None:
        check_state_dict(net, model_sd, what="network", hint=hint)
        net.load_state_dict(model_sd, strict=True)
    ae = None
    if config.get("autoencoder"):
        ae = _build_autoencoder(config["autoencoder"])
        if autoencoder_sd is not None:
            check_state_dict(ae, autoencoder_sd, what="VQ-f4 autoencoder",
                             hint="pass the official autoencoder_vq_f4.pth as the autoencoder")
            ae.load_state_dict(autoencoder_sd, strict=True)
        elif model_sd is not None:
            raise CheckpointError("this latent model needs its autoencoder weights (autoencoder_vq_f4.pth)")
    diffusion = config["diffusion"]
    schedule = schedule_from_config(config["schedule"]) if config.get("schedule") else \
        ResShiftSchedule.from_config(diffusion)
    return SRPipeline(net, schedule, autoencoder=ae, sf=int(diffusion.get("sf", 4)),
                      predict=diffusion.get("predict_type", "xstart"),
                      normalize_input=bool(diffusion.get("normalize_input", True)), config=config,
                      device=device, dtype=dtype, fast=fast, cpu_bf16=cpu_bf16)


def _looks_like(sd: dict[str, torch.Tensor]) -> str:
    if "encoder.conv_in.weight" in sd and "quantize.embedding.weight" in sd:
        return "this file is the VQ autoencoder, not the ResShift network"
    if "input_blocks.0.0.weight" in sd:
        w = sd["input_blocks.0.0.weight"]
        return f"this file is a UNet with model_channels={w.shape[0]}, {w.shape[1]} input channels"
    return "this file is not a ResShift network"


def load_pipeline(name_or_path: Union[str, Path] = "bundled", *, preset: Optional[str] = None,
                  autoencoder: Optional[Union[str, Path]] = None, device: Union[str, torch.device] = "cpu",
                  dtype: Optional[torch.dtype] = None, random_weights: bool = False,
                  compile: bool = False, fast: bool = True, cuda_graphs: bool = False,
                  cpu_bf16: Union[None, bool, str, Iterable[str]] = None) -> SRPipeline:
    """Load ``bundled`` / ``bundled-discrete``, a cresshift ``.safetensors`` file, or official weights.

    Official ``.pth`` files need ``preset=`` (realsr-x4-v1, realsr-x4-v2, realsr-x4-v3, bicsr-x4) and
    ``autoencoder=`` (autoencoder_vq_f4.pth). ``load_pipeline("realsr-x4-v1", random_weights=True)``
    builds the official architecture with random weights (benchmarks, tests); without
    ``random_weights`` a preset name loads the official files that ``cresshift fetch <preset>``
    put in the cache (``cresshift.weights.official_cache_path``), and says so when they are missing. ``compile=True``
    runs the network through ``torch.compile`` (``SRPipeline.compile``). ``fast`` / ``cuda_graphs`` /
    ``cpu_bf16``: the execution paths ``SRPipeline`` describes (``fast=False``: the plain eager path).
    """
    pipe = _load(name_or_path, preset=preset, autoencoder=autoencoder, device=device, dtype=dtype,
                 random_weights=random_weights)
    pipe.fast, pipe.cuda_graphs = bool(fast), bool(cuda_graphs)
    pipe.cpu_bf16 = cpu_bf16
    return pipe.compile() if compile else pipe


def _cached_official(name: str, preset: Optional[str],
                     autoencoder: Optional[Union[str, Path]]) -> tuple[str, str, Union[str, Path]]:
    """(checkpoint path, preset, autoencoder path) of a preset fetched into the cache by 'cresshift fetch'."""
    from ..weights import official_cache_path

    if preset is not None and preset != name:
        raise CheckpointError(f"model {name!r} is itself a preset; drop preset={preset!r}")
    needed = [official_cache_path(name)] + ([] if autoencoder is not None else [official_cache_path("autoencoder")])
    missing = [path for path in needed if not path.is_file()]
    if missing:
        raise CheckpointError(f"the official {name} weights are not in the cache ({missing[0]} is missing): run "
                              f"'cresshift fetch {name}', or pass the files ({OFFICIAL_PRESETS[name]['files']}) "
                              f"with preset={name!r}")
    return str(needed[0]), name, autoencoder if autoencoder is not None else needed[-1]


def _load(name_or_path: Union[str, Path], *, preset: Optional[str], autoencoder: Optional[Union[str, Path]],
          device: Union[str, torch.device], dtype: Optional[torch.dtype], random_weights: bool) -> SRPipeline:
    name = str(name_or_path)
    if name in BUNDLED:
        path = bundled_path(name)
        if not path.is_file():
            raise CheckpointError(f"the bundled model {name!r} is missing from this installation ({path})")
        name = str(path)
    if name in OFFICIAL_PRESETS and not random_weights:
        name, preset, autoencoder = _cached_official(name, preset, autoencoder)
    elif name in OFFICIAL_PRESETS:
        return build_pipeline(official_config(name), device=device, dtype=dtype)
    path = Path(name)
    if not path.exists():
        raise CheckpointError(f"no such model file or preset: {name!r} (presets: bundled, bundled-discrete, "
                              f"{', '.join(OFFICIAL_PRESETS)})")
    weights = read_cresshift_file(path) if path.suffix == ".safetensors" else read_official_files(path, preset, autoencoder)
    return weights.build(device=device, dtype=dtype)


@dataclass
class CheckpointContents:
    """What a checkpoint holds before a pipeline is built from it: the cresshift config, the weights, and the
    hint a weight mismatch names."""

    config: dict[str, Any]
    model_sd: dict[str, torch.Tensor]
    autoencoder_sd: Optional[dict[str, torch.Tensor]]
    hint: str

    def build(self, *, device: Union[str, torch.device] = "cpu", dtype: Optional[torch.dtype] = None) -> SRPipeline:
        """``build_pipeline`` over these weights."""
        return build_pipeline(self.config, model_sd=self.model_sd, autoencoder_sd=self.autoencoder_sd,
                              device=device, dtype=dtype, hint=self.hint)


def read_cresshift_file(path: Union[str, Path]) -> CheckpointContents:
    """The config and weights of a cresshift ``.safetensors`` file."""
    path = Path(path)
    groups, config = load_cresshift(path)
    return CheckpointContents(config, groups.get("model"), groups.get("autoencoder"),  # type: ignore[arg-type]
                              hint=f"{path.name} is corrupt or was written by another version")


def read_official_files(path: Union[str, Path], preset: Optional[str],
                        autoencoder: Optional[Union[str, Path]]) -> CheckpointContents:
    """An official ``.pth`` checkpoint of ``preset`` (official files carry no config), with the VQ-f4
    autoencoder's ``.pth`` for latent presets."""
    path = Path(path)
    if preset is None:
        raise CheckpointError(f"{path.name} is an official checkpoint: say which preset it is "
                              f"(preset= one of {', '.join(OFFICIAL_PRESETS)}); official files carry no config")
    config = official_config(preset)
    model_sd = load_official_state_dict(path)
    ae_sd = None
    if config["autoencoder"]:
        if autoencoder is None:
            raise CheckpointError(f"preset {preset!r} is a latent model: pass autoencoder=autoencoder_vq_f4.pth")
        ae_sd = load_official_state_dict(autoencoder)
    return CheckpointContents(config, model_sd, ae_sd,
                              hint=f"{_looks_like(model_sd)}; preset {preset!r} expects the official "
                                   f"{OFFICIAL_PRESETS[preset]['files'].split(' + ')[0]}")
