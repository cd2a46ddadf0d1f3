"""NetworkDenoiser: an official-convention ResShift network as a ``denoiser(x, t) -> x0_hat``."""
from __future__ import annotations

from typing import Optional, Union

import torch
from torch import nn

from ..converters import eps_to_x0
from ..schedules import ContinuousSchedule, ResShiftSchedule, as_continuous

__all__ = ["NetworkDenoiser", "PREDICT_TYPES", "scale_input"]

PREDICT_TYPES = ("xstart", "residual", "epsilon", "epsilon_scale")


def scale_input(x: torch.Tensor, eta: torch.Tensor, kappa: float, latent: bool) -> torch.Tensor:
    """The official input normalisation (design §5): latent x / sqrt(kappa^2 eta + 1), pixel x / (3 kappa sqrt(eta) + 1)."""
    if latent:
        return x / torch.sqrt(eta * kappa ** 2 + 1)
    return x / (torch.sqrt(eta) * kappa * 3 + 1)


class NetworkDenoiser:
    """Wraps ``net(x_scaled, s, lq=lq)`` into ``denoiser(x, t) -> x0_hat`` (design §4–5).

    The network's clock is the fractional chain index ``s = T t - 1`` (integer k - 1 at t = k/T,
    where the official network was trained); times within 1e-6 of a chain step are snapped to
    the integer so the Markov sampler reproduces the official one. The input is normalised as
    the official code does (``normalize_input``), and the four official output types are
    mapped to x0_hat: ``xstart``; ``residual`` x0 = y - out; ``epsilon``
    x0 = (x - kappa sqrt(eta) out - eta y)/(1 - eta); ``epsilon_scale`` x0 = (x - out - eta y)/(1 - eta).
    ``y`` (needed by residual/epsilon types) is taken from ``self.y``, set by the pipeline.
    Pixel-space x0_hat is clamped to [-1, 1] (``clip_denoised``, default: not latent), as the
    official sampler does.
    """

    def __init__(self, net: nn.Module, schedule: Union[ResShiftSchedule, ContinuousSchedule], *,
                 lq: Optional[torch.Tensor] = None, latent: bool = True, normalize_input: bool = True,
                 predict: str = "xstart", y: Optional[torch.Tensor] = None,
                 clip_denoised: Optional[bool] = None, autocast_dtype: Optional[torch.dtype] = None) -> None:
        if predict not in PREDICT_TYPES:
            raise ValueError(f"unknown predict type {predict!r}; valid: {', '.join(PREDICT_TYPES)}")
        self.net = net
        self.schedule = as_continuous(schedule)
        self.discrete = schedule if isinstance(schedule, ResShiftSchedule) else None
        self.lq = lq
        self.latent = latent
        self.normalize_input = normalize_input
        self.predict = predict
        self.y = y
        self.clip_denoised = (not latent) if clip_denoised is None else clip_denoised
        self.autocast_dtype = autocast_dtype
        self._tables: dict[torch.device, torch.Tensor] = {}  # the discrete eta table, per device

    def clock(self, t: torch.Tensor) -> torch.Tensor:
        """s = T t - 1 in float64, snapped to the integer chain index within 1e-6."""
        s = self.schedule.T * t.to(torch.float64) - 1
        snapped = torch.round(s)
        return torch.where((s - snapped).abs() < 1e-6, snapped, s)

    def eta_of_clock(self, s: torch.Tensor) -> torch.Tensor:
        """eta at clock s (the discrete table's exact value at integer s, if there is one)."""
        if self.discrete is not None:
            table = self._tables.get(s.device)
            if table is None:  # copied to the device once, not at every call
                table = self._tables[s.device] = torch.as_tensor(self.discrete.etas, dtype=torch.float64,
                                                                 device=s.device)
            is_int = (s == torch.round(s)) & (s >= 0) & (s <= self.discrete.T - 1)
            idx = torch.round(s).clamp(0, self.discrete.T - 1).long()
            return torch.where(is_int, table[idx], self.schedule.eta((s + 1) / self.schedule.T))
        return self.schedule.eta((s + 1) / self.schedule.T)

    def eta_at(self, t: torch.Tensor) -> torch.Tensor:
        """eta at times t in float64: the discrete table's exact value at a chain step t = k/T (as
        ``eta_of_clock``), with a continuous schedule its eta(t)."""
        if self.discrete is not None:
            return self.eta_of_clock(self.clock(t))
        return self.schedule.eta(t.to(torch.float64))

    def marginal(self, x0: torch.Tensor, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The forward marginal x_t = x0 + eta (y - x0) + kappa sqrt(eta) z at times t [B] (design §2), y = ``self.y``."""
        if self.y is None:
            raise ValueError("the forward marginal needs the shift target y (set NetworkDenoiser.y)")
        eta = self.eta_at(t).to(x0.device, x0.dtype).view(-1, *(1,) * (x0.ndim - 1))
        return x0 + eta * (self.y - x0) + self.schedule.kappa * eta.sqrt() * z

    def loss(self, x0: torch.Tensor, t: torch.Tensor, z: torch.Tensor, *,
             autocast_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """Per-sample MSE(x0_hat, x0) in float32 at x_t = ``marginal(x0, t, z)``: the training objective (design §5).

        ``t`` [B] in float64; the network sees it in x0's dtype, under autocast to ``autocast_dtype``
        on a GPU (None: none).
        """
        x_t = self.marginal(x0, t, z)
        on_gpu = x0.device.type == "cuda"
        with torch.autocast(x0.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None and on_gpu):
            x0_hat = self(x_t, t.to(x0.device, x0.dtype))
        return (x0_hat.float() - x0.float()).pow(2).flatten(1).mean(1)

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        s = self.clock(t)
        eta64 = self.eta_of_clock(s)
        shape = (-1,) + (1,) * (x.ndim - 1)
        eta = eta64.to(x.dtype).reshape(shape)
        kappa = self.schedule.kappa
        x_in = scale_input(x, eta64.reshape(shape), kappa, self.latent).to(x.dtype) if self.normalize_input else x
        lq = self.lq
        if lq is not None and lq.shape[0] != x.shape[0]:
            raise ValueError(f"lq has batch {lq.shape[0]} but x has {x.shape[0]}")
        with torch.autocast(x.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
            out = self.net(x_in, s.to(torch.float32), lq=lq) if lq is not None else self.net(x_in, s.to(torch.float32))
        out = out.to(x.dtype)
        if self.predict == "xstart":
            x0 = out
        else:
            if self.y is None:
                raise ValueError(f"predict={self.predict!r} needs the shift target y (set NetworkDenoiser.y)")
            if self.predict == "residual":
                x0 = self.y - out
            elif self.predict == "epsilon":
                x0 = eps_to_x0(x, out, self.y, eta, kappa)
            else:
                x0 = (x - out - eta * self.y) / (1 - eta)
        if self.clip_denoised:
            x0 = x0.clamp(-1, 1)
        return x0
