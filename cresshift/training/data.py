"""Training data: random HR crops with flips/rot90, LR by bicubic downscaling, y = upsampled LR."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from ..data.io import bicubic_down, list_images, load_image

__all__ = ["CropSampler", "load_folder", "load_paired", "Degradation"]


@dataclass(frozen=True)
class Degradation:
    """A light second-order degradation of the LR (Real-ESRGAN's recipe, milder): ``rounds`` times,
    each step with probability ``p`` and its parameter drawn uniformly from the range given here:

    blur (Gaussian, sigma in LR px), resize (down/up by ``scale``, then back to the LR size,
    bilinear or bicubic), noise (Gaussian sigma on the [-1, 1] scale, or Poisson with ``peak``
    photons at white), JPEG (quality). All draws come from the sampler's generator (resumable).
    """

    rounds: int = 2
    p: float = 0.5
    blur_sigma: tuple[float, float] = (0.2, 1.2)
    scale: tuple[float, float] = (0.75, 1.25)
    noise_sigma: tuple[float, float] = (0.0, 0.02)
    poisson_peak: tuple[float, float] = (200.0, 2000.0)
    jpeg_quality: tuple[int, int] = (60, 95)

    def __call__(self, lr: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """[n, 3, h, w] in [-1, 1] -> the same shape, each sample degraded independently."""
        return torch.stack([self._one(x, g) for x in lr])

    def _one(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        def coin() -> bool:
            return float(torch.rand((), generator=g)) < self.p

        def uniform(lo: float, hi: float) -> float:
            return lo + (hi - lo) * float(torch.rand((), generator=g))
        h, w = x.shape[-2:]
        x = x[None]
        for _ in range(self.rounds):
            if coin():  # Gaussian blur
                x = _gaussian_blur(x, uniform(*self.blur_sigma))
            if coin():  # resize and back
                f = uniform(*self.scale)
                size = (max(2, round(h * f)), max(2, round(w * f)))
                mode = "bilinear" if coin() else "bicubic"
                x = F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=f < 1)
                x = F.interpolate(x, size=(h, w), mode=mode, align_corners=False, antialias=f > 1)
            if coin():  # noise: Gaussian or Poisson
                if coin():
                    x = x + uniform(*self.noise_sigma) * torch.randn(x.shape, generator=g, dtype=x.dtype)
                else:
                    peak = uniform(*self.poisson_peak)
                    level = ((x.clamp(-1, 1) + 1) / 2 * peak)
                    x = torch.poisson(level, generator=g) / peak * 2 - 1
            if coin():  # JPEG
                x = _jpeg(x[0], int(round(uniform(*self.jpeg_quality))))[None]
            x = x.clamp(-1, 1)
        return x[0]


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    r = max(1, min(int(3 * sigma + 0.5), (min(x.shape[-2:]) - 1)))
    t = torch.arange(-r, r + 1, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def _jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """JPEG round trip of a [3, h, w] image in [-1, 1] (Pillow, 4:2:0)."""
    import io

    import numpy as np
    from PIL import Image

    from ..data.io import to_uint8

    buf = io.BytesIO()
    Image.fromarray(to_uint8(x)).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    arr = np.asarray(Image.open(buf).convert("RGB"), dtype=np.float32)
    return torch.from_numpy(arr / 127.5 - 1).permute(2, 0, 1).to(x.dtype)


class CropSampler:
    """Draws batches (hr, lr) of random crops with flips/rot90; deterministic given its torch.Generator.

    ``images`` are [3, H, W] HR tensors in [-1, 1]; ``lrs`` optional paired LR tensors (sf
    times smaller). The generator's state is the whole data-order state (saved on resume).

    ``min_scale`` < 1 turns on scale augmentation: each crop draws s ~ U(min_scale, 1), cuts a
    square of round(crop / s) px and shrinks it to ``crop`` px (antialiased bicubic), i.e. the
    photograph as if taken at s times the resolution: more distinct content from few
    photographs. 1 (the default) draws nothing extra, so runs without it are unchanged.
    """

    def __init__(self, images: Sequence[torch.Tensor], *, crop: int, sf: int, lrs: Optional[Sequence[torch.Tensor]] = None,
                 degradation: Optional[Degradation] = None, seed: int = 0, min_scale: float = 1.0) -> None:
        if crop % sf:
            raise ValueError(f"the crop size {crop} is not divisible by the scale factor {sf}")
        if not images:
            raise ValueError("no training images")
        if not 0 < min_scale <= 1:
            raise ValueError(f"the scale augmentation's smallest scale must be in (0, 1], got {min_scale}")
        if min_scale < 1 and lrs is not None:
            raise ValueError("scale augmentation needs HR-only data: paired LR images cannot be rescaled with their HR")
        small = [i for i, im in enumerate(images) if min(im.shape[-2:]) < crop]
        if small:
            raise ValueError(f"{len(small)} training image(s) are smaller than the crop size {crop} px "
                             f"(e.g. number {small[0]}, {tuple(images[small[0]].shape[-2:])}); lower --crop")
        self.images, self.lrs, self.crop, self.sf = list(images), lrs, crop, sf
        self.degradation, self.min_scale = degradation, min_scale
        # Sample images in proportion to their area, so every pixel is equally likely.
        areas = torch.tensor([float(im.shape[-1] * im.shape[-2]) for im in images])
        self.weights = areas / areas.sum()
        self.generator = torch.Generator().manual_seed(seed)

    def _one(self) -> tuple[torch.Tensor, torch.Tensor]:
        g = self.generator
        i = int(torch.multinomial(self.weights, 1, generator=g))
        im = self.images[i]
        c, sf = self.crop, self.sf
        H, W = im.shape[-2:]
        if self.min_scale < 1:
            s = self.min_scale + (1 - self.min_scale) * float(torch.rand((), generator=g, dtype=torch.float64))
            r = min(round(c / s), H, W)
            y0 = int(torch.randint(0, H - r + 1, (), generator=g))
            x0 = int(torch.randint(0, W - r + 1, (), generator=g))
            hr = im[:, y0:y0 + r, x0:x0 + r]
            if r != c:
                hr = F.interpolate(hr[None], size=(c, c), mode="bicubic", antialias=True, align_corners=False)[0].clamp(-1, 1)
        else:
            y0 = int(torch.randint(0, (H - c) // sf + 1, (), generator=g)) * sf
            x0 = int(torch.randint(0, (W - c) // sf + 1, (), generator=g)) * sf
            hr = im[:, y0:y0 + c, x0:x0 + c]
        lr = self.lrs[i][:, y0 // sf:(y0 + c) // sf, x0 // sf:(x0 + c) // sf] if self.lrs is not None else None
        # Random flips and rot90 (the same for HR and LR).
        k = int(torch.randint(0, 8, (), generator=g))
        def aug(t: torch.Tensor) -> torch.Tensor:
            t = torch.rot90(t, k % 4, dims=(-2, -1))
            return t.flip(-1) if k >= 4 else t
        hr = aug(hr)
        lr = aug(lr) if lr is not None else None
        return hr.contiguous(), (lr.contiguous() if lr is not None else None)  # type: ignore[return-value]

    def batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(hr [n, 3, c, c], lr [n, 3, c/sf, c/sf]): LR paired, or bicubic_down(hr) (then degraded)."""
        pairs = [self._one() for _ in range(n)]
        hr = torch.stack([p[0] for p in pairs])
        if pairs[0][1] is not None:
            lr = torch.stack([p[1] for p in pairs])
        else:
            lr = bicubic_down(hr, self.sf)
        if self.degradation is not None:
            lr = self.degradation(lr, self.generator)
        return hr, lr


def load_folder(folder: str | Path) -> list[torch.Tensor]:
    """All images under ``folder`` (recursive) as [3, H, W] tensors; clear errors for empty/unreadable."""
    p = Path(folder)
    if not p.is_dir():
        raise ValueError(f"training data folder not found: {p}")
    try:
        paths = list_images([p])
    except ValueError:
        raise ValueError(f"no images (png/jpg/webp/tiff/bmp) under {p}") from None
    return [load_image(q) for q in paths]


def load_paired(hr_folder: str | Path, lr_folder: str | Path, sf: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """HR/LR pairs matched by file stem; LR must be exactly sf times smaller."""
    hrs = {q.stem: q for q in list_images([hr_folder])}
    lrs = {q.stem: q for q in list_images([lr_folder])}
    common = sorted(set(hrs) & set(lrs))
    if not common:
        raise ValueError(f"no file names in common between {hr_folder} and {lr_folder}")
    H, L = [], []
    for s in common:
        h, l = load_image(hrs[s]), load_image(lrs[s], min_size=2)
        if (h.shape[-2] // sf, h.shape[-1] // sf) != tuple(l.shape[-2:]):
            raise ValueError(f"{lrs[s]} is {tuple(l.shape[-2:])}, expected HR/{sf} = "
                             f"{(h.shape[-2] // sf, h.shape[-1] // sf)}")
        H.append(h[:, : l.shape[-2] * sf, : l.shape[-1] * sf])
        L.append(l)
    return H, L
