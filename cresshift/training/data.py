"""Training data: random HR crops with flips/rot90, LR by bicubic downscaling, y = upsampled LR."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from ..data.io import bicubic_down, list_images, load_image
from ..models.pipeline import upsample_lr

__all__ = ["CropSampler", "load_folder", "load_paired", "Degradation"]


class Degradation:
    """A light second-order degradation of the LR: Gaussian blur sigma in [0.2, 1.2] px, then Gaussian
    noise sigma in [0, 0.02] (on the [-1, 1] scale), each applied with probability 0.5."""

    def __call__(self, lr: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        if float(torch.rand((), generator=g)) < 0.5:
            sigma = 0.2 + 1.0 * float(torch.rand((), generator=g))
            r = 3
            x = torch.arange(-r, r + 1, dtype=lr.dtype)
            k = torch.exp(-0.5 * (x / sigma) ** 2)
            k = k / k.sum()
            c = lr.shape[1]
            lr = F.conv2d(F.pad(lr, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
            lr = F.conv2d(F.pad(lr, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
        if float(torch.rand((), generator=g)) < 0.5:
            sigma = 0.02 * float(torch.rand((), generator=g))
            lr = lr + sigma * torch.randn(lr.shape, generator=g, dtype=lr.dtype)
        return lr.clamp(-1, 1)


class CropSampler:
    """Draws batches (hr, y, lq) of random crops; deterministic given its torch.Generator.

    ``images`` are [3, H, W] HR tensors in [-1, 1]; ``lrs`` optional paired LR tensors (sf
    times smaller). The generator's state is the whole data-order state (saved on resume).
    """

    def __init__(self, images: Sequence[torch.Tensor], *, crop: int, sf: int, lrs: Optional[Sequence[torch.Tensor]] = None,
                 degradation: Optional[Degradation] = None, seed: int = 0) -> None:
        if crop % sf:
            raise ValueError(f"the crop size {crop} is not divisible by the scale factor {sf}")
        if not images:
            raise ValueError("no training images")
        small = [i for i, im in enumerate(images) if min(im.shape[-2:]) < crop]
        if small:
            raise ValueError(f"{len(small)} training image(s) are smaller than the crop size {crop} px "
                             f"(e.g. number {small[0]}, {tuple(images[small[0]].shape[-2:])}); lower --crop")
        self.images, self.lrs, self.crop, self.sf = list(images), lrs, crop, sf
        self.degradation = degradation
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
        """(hr [n, 3, c, c], y [n, 3, c, c]) with y = bicubic x sf of the (degraded) LR."""
        pairs = [self._one() for _ in range(n)]
        hr = torch.stack([p[0] for p in pairs])
        if pairs[0][1] is not None:
            lr = torch.stack([p[1] for p in pairs])
        else:
            lr = bicubic_down(hr, self.sf)
        if self.degradation is not None:
            lr = self.degradation(lr, self.generator)
        return hr, upsample_lr(lr, self.sf).clamp(-1, 1)


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
