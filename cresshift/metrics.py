"""Image quality metrics with the ResShift conventions (design §8).

PSNR and SSIM are computed on the Y channel of YCbCr (MATLAB/BasicSR coefficients
65.481/128.553/24.966, +16) of uint8-rounded images, no border crop; RGB PSNR too. SSIM uses
``pytorch_msssim`` (Gaussian window 11, sigma 1.5, data range 255). LPIPS uses the ``lpips``
package and needs the backbone's torchvision weights on disk: offline and uncached it reports
itself unavailable with the reason, and never produces a number.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional

import torch

__all__ = ["quantize", "rgb_to_y", "psnr_y", "psnr_rgb", "ssim_y", "LPIPSMetric", "evaluate_pair"]

_Y = torch.tensor([65.481, 128.553, 24.966], dtype=torch.float64) / 255.0
_BACKBONE_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}


def quantize(img: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> float64 values in {0..255} (round, clip), as saving to uint8 would."""
    return ((img.detach().double().clamp(-1, 1) + 1) * 127.5).round()


def rgb_to_y(img: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] in [-1, 1] -> [B, H, W] Y in [16, 235] (from uint8-rounded RGB)."""
    q = quantize(img)
    return torch.einsum("bchw,c->bhw", q, _Y.to(q.device)) + 16.0


def _psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    mse = ((a - b) ** 2).flatten(1).mean(1)
    return torch.where(mse == 0, torch.full_like(mse, math.inf), 10 * torch.log10(255.0 ** 2 / mse.clamp_min(1e-300)))


def psnr_y(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (dB) on Y, [B] float64; identical images give inf."""
    return _psnr(rgb_to_y(sr), rgb_to_y(hr))


def psnr_rgb(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (dB) on uint8-rounded RGB, [B] float64."""
    return _psnr(quantize(sr), quantize(hr))


def ssim_y(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM on Y (pytorch_msssim, window 11, sigma 1.5, data range 255), [B] float64."""
    from pytorch_msssim import ssim

    if min(sr.shape[-2:]) < 11:
        raise ValueError(f"SSIM needs images of at least 11x11 px, got {sr.shape[-1]}x{sr.shape[-2]}")
    a, b = rgb_to_y(sr)[:, None], rgb_to_y(hr)[:, None]
    return ssim(a, b, data_range=255.0, size_average=False, win_size=11, win_sigma=1.5).double()


class LPIPSMetric:
    """LPIPS (``lpips`` package) with an honest offline fallback.

    ``available`` is False, with a one-line ``reason``, when the torchvision backbone weights
    are not on disk (looked up in ``$CRESSHIFT_LPIPS_BACKBONE``, the ``backbone`` argument, or
    torch hub's checkpoint cache under ``$TORCH_HOME``). ``backbone="random"`` builds a
    randomly initialised backbone to exercise the code path in tests; its ``name`` says so and
    its values mean nothing.
    """

    def __init__(self, net: str = "alex", *, backbone: Optional[str] = None, device: str | torch.device = "cpu") -> None:
        if net not in _BACKBONE_FILES:
            raise ValueError(f"LPIPS backbone must be 'alex' or 'vgg', got {net!r}")
        self.net_name = net
        self.name = f"LPIPS-{net}"
        self.available = False
        self.reason = ""
        self.model = None
        fname = _BACKBONE_FILES[net]
        if backbone != "random":
            path = self._find(fname, backbone)
            if path is None:
                hub = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch")) / "hub" / "checkpoints"
                self.reason = (f"LPIPS n/a: the {net} backbone weights ({fname}) are not on disk; put the file in "
                               f"{hub} (torch hub cache, TORCH_HOME) or point CRESSHIFT_LPIPS_BACKBONE at it")
                return
        try:
            self.model = self._build(net, None if backbone == "random" else path).to(device).eval()
        except Exception as err:  # a broken lpips install, a corrupt file
            self.reason = f"LPIPS n/a: {str(err).splitlines()[0][:160]}"
            return
        if backbone == "random":
            self.name = f"LPIPS-{net} (random backbone: not meaningful)"
        self.available = True

    @staticmethod
    def _find(fname: str, explicit: Optional[str]) -> Optional[Path]:
        cands = [explicit, os.environ.get("CRESSHIFT_LPIPS_BACKBONE")]
        hub_root = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
        cands.append(str(hub_root / "hub" / "checkpoints" / fname))
        for c in cands:
            if c and Path(c).is_file():
                return Path(c)
        return None

    @staticmethod
    def _build(net: str, backbone_path: Optional[Path]) -> torch.nn.Module:
        import lpips
        import torchvision

        # Build with pretrained=False (no download), then load the backbone ourselves, weights only.
        model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
        if backbone_path is not None:
            sd = torch.load(backbone_path, map_location="cpu", weights_only=True)
            tv = torchvision.models.alexnet() if net == "alex" else torchvision.models.vgg16()
            tv.load_state_dict(sd)
            feats = tv.features
            target = model.net
            # lpips slices torchvision's `features` into consecutive slices: copy by position.
            layers = [m for s in (target.slice1, target.slice2, target.slice3, target.slice4, target.slice5) for m in s]
            for mine, theirs in zip(layers, feats):
                mine.load_state_dict(theirs.state_dict())
        return model

    @torch.no_grad()
    def __call__(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        """Per-image LPIPS, [B] float64 (inputs in [-1, 1])."""
        if not self.available or self.model is None:
            raise RuntimeError(self.reason)
        dev = next(self.model.parameters()).device
        return self.model(sr.to(dev).float(), hr.to(dev).float()).flatten().double().cpu()


def evaluate_pair(sr: torch.Tensor, hr: torch.Tensor, lpips: Optional[LPIPSMetric] = None) -> dict[str, torch.Tensor]:
    """Per-image psnr_y, psnr_rgb, ssim_y (and lpips when available) for a batch."""
    out = {"psnr_y": psnr_y(sr, hr), "psnr_rgb": psnr_rgb(sr, hr), "ssim_y": ssim_y(sr, hr)}
    if lpips is not None and lpips.available:
        out["lpips"] = lpips(sr, hr)
    return out
