"""The bundled held-out photographs (the first run, the demo's picks) and the labelled comparison figure.

The photographs are crops of the held-out *test* photographs of ``cresshift/data/PHOTOS.md``
(never trained or validated on), shipped as HR PNGs in ``cresshift/bundled/photos``; the LR
input is ``bicubic_down(HR, 4)``, as for the bundled test tiles.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

__all__ = ["BundledPhoto", "BUNDLED_PHOTOS", "EXAMPLE_PHOTO", "EXAMPLE_SETTINGS", "photos_dir", "find_photo",
           "Panel", "comparison_panels", "side_by_side", "write_comparison", "example_lpips"]

#: the sampler settings of ``cresshift sample --example`` (a 128x128 LR in under a minute on 2 CPU cores)
EXAMPLE_SETTINGS = {"solver": "dpmpp-2m", "nfe": 3, "rho": 4.0}


@dataclass(frozen=True)
class BundledPhoto:
    """One shipped HR crop of a held-out test photograph: name, file, title, credit, and where it was cut."""

    name: str
    file: str
    title: str
    credit: str
    source: str  # the test photograph in cresshift.data.photos
    top: int = 0
    left: int = 0

    @property
    def path(self) -> Path:
        return photos_dir() / self.file

    def hr(self) -> torch.Tensor:
        """The HR crop as [3, H, W] in [-1, 1]."""
        from ..data.io import load_image

        return load_image(self.path)


BUNDLED_PHOTOS = (
    BundledPhoto("astronaut", "astronaut.png", "astronaut, 512x512 (LR 128x128)",
                 "NASA (Eileen Collins), public domain; scikit-image 'astronaut'", "astronaut"),
    BundledPhoto("chelsea", "chelsea_face.png", "cat's face, 256x256 (LR 64x64)",
                 "Stefan van der Walt, CC0; scikit-image 'chelsea', cropped", "chelsea", 20, 60),
    BundledPhoto("china", "china_tower.png", "temple tower, 256x256 (LR 64x64)",
                 "danielbuechele on Flickr, CC BY 2.0; scikit-learn 'china.jpg', cropped", "china", 60, 120),
)
EXAMPLE_PHOTO = "astronaut"


def photos_dir() -> Path:
    """``cresshift/bundled/photos``: the shipped HR crops."""
    return Path(__file__).resolve().parent.parent / "bundled" / "photos"


def find_photo(name: str) -> BundledPhoto:
    """The bundled photograph called ``name``; ValueError naming the valid ones otherwise."""
    for photo in BUNDLED_PHOTOS:
        if photo.name == name:
            return photo
    raise ValueError(f"unknown bundled photograph {name!r}; valid: {', '.join(p.name for p in BUNDLED_PHOTOS)}")


@dataclass(frozen=True)
class Panel:
    """One column of the comparison figure: a title above the image, caption lines below it."""

    title: str
    image: torch.Tensor  # [3, H, W] in [-1, 1]
    captions: tuple[str, ...] = ()


def comparison_panels(lr: torch.Tensor, sr: torch.Tensor, hr: torch.Tensor, *, sf: int, label: str = "cresshift",
                      lpips: Any = None) -> list[Panel]:
    """LR nearest-upsampled | bicubic | ``label`` | HR, with PSNR-Y (and LPIPS if ``lpips`` is available) under each."""
    import torch.nn.functional as F

    from ..metrics import psnr_y
    from ..models.pipeline import upsample_lr

    nearest = F.interpolate(lr[None], scale_factor=sf, mode="nearest")[0]
    bicubic = upsample_lr(lr[None], sf)[0].clamp(-1, 1)
    panels = []
    for title, img in (("LR (nearest x%d)" % sf, nearest), ("bicubic", bicubic), (label, sr), ("HR", hr)):
        captions: tuple[str, ...] = ()
        if title != "HR":
            captions = (f"PSNR-Y {float(psnr_y(img[None], hr[None])):.2f} dB",)
            if lpips is not None and getattr(lpips, "available", False):
                captions += (f"{lpips.name} {float(lpips(img[None], hr[None])):.3f}",)
        panels.append(Panel(title, img, captions))
    return panels


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


def side_by_side(panels: Sequence[Panel], *, pad: int = 12, font_size: int = 20) -> Any:
    """The panels left to right on white, each titled above and captioned below (a PIL image)."""
    from PIL import Image, ImageDraw

    from ..data.io import to_uint8

    font = _font(font_size)
    line = font_size + 6
    width = max(p.image.shape[-1] for p in panels)
    height = max(p.image.shape[-2] for p in panels)
    n_captions = max((len(p.captions) for p in panels), default=0)
    canvas = Image.new("RGB", (pad + len(panels) * (width + pad), pad + line + height + n_captions * line + pad),
                       "white")
    draw = ImageDraw.Draw(canvas)
    for j, panel in enumerate(panels):
        left = pad + j * (width + pad)
        draw.text((left, pad), panel.title, fill="black", font=font)
        canvas.paste(Image.fromarray(to_uint8(panel.image)), (left, pad + line))
        for k, text in enumerate(panel.captions):
            draw.text((left, pad + line + height + 4 + k * line), text, fill="black", font=font)
    return canvas


def write_comparison(path: Path, panels: Sequence[Panel], *, overwrite: bool = True) -> Path:
    """Write ``side_by_side(panels)`` as a PNG atomically (``save_image``'s temp file, fsync, rename)."""
    import numpy as np

    from ..data.io import save_image

    pixels = torch.from_numpy(np.asarray(side_by_side(panels), dtype=np.float32)).permute(2, 0, 1)
    return save_image(pixels / 127.5 - 1, path, overwrite=overwrite)


def example_lpips() -> Optional[Any]:
    """LPIPS-alex for the example figure if its backbone weights are on this machine, else None (omitted)."""
    from ..metrics import LPIPSMetric

    metric = LPIPSMetric("alex")
    return metric if metric.available else None
