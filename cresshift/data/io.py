"""Image I/O and resizing: files to [-1, 1] tensors and back, robustly and atomically."""
from __future__ import annotations

import glob
import os
import tempfile
from pathlib import Path
from typing import Iterable, Union

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["ImageReadError", "load_image", "save_image", "list_images", "bicubic_down", "to_uint8",
           "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp"}


class ImageReadError(ValueError):
    """An input file is not a readable image (or is too small)."""


def load_image(path: Union[str, os.PathLike], *, min_size: int = 8) -> torch.Tensor:
    """Read an image as a float32 [3, H, W] tensor in [-1, 1].

    8- and 16-bit files keep their precision; grayscale is replicated to RGB; palette and CMYK
    images are converted; alpha is composited over white; EXIF orientation is applied.
    """
    from PIL import Image, ImageOps

    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.float64)
                arr = arr / (65535.0 if arr.max() > 255 or im.mode.startswith("I;16") else 255.0)
                arr = np.repeat(arr[..., None], 3, axis=2)
            else:
                if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                    im = im.convert("RGBA")
                    white = Image.new("RGBA", im.size, (255, 255, 255, 255))
                    im = Image.alpha_composite(white, im)
                arr = np.asarray(im.convert("RGB"), dtype=np.float64) / 255.0
    except FileNotFoundError:
        raise ImageReadError(f"cannot read image {path}: no such file") from None
    except Exception as err:  # PIL raises many types for broken files
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ImageReadError(f"cannot read image {path}: {msg}") from None
    h, w = arr.shape[:2]
    if min(h, w) < min_size:
        raise ImageReadError(f"cannot read image {path}: it is {w}x{h} px, the minimum is {min_size}x{min_size}")
    return torch.from_numpy(arr).permute(2, 0, 1).float() * 2 - 1


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """[3, H, W] in [-1, 1] -> [H, W, 3] uint8 (rounded, clipped)."""
    x = ((img.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round()
    return x.permute(1, 2, 0).to(torch.uint8).numpy()


def save_image(img: torch.Tensor, path: Union[str, os.PathLike]) -> None:
    """Write a [3, H, W] tensor in [-1, 1] as an 8-bit PNG, atomically (temp file, fsync, rename)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(to_uint8(img))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        im.save(tmp, format="PNG")
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def list_images(inputs: Iterable[Union[str, os.PathLike]]) -> list[Path]:
    """Expand files, folders (recursively, sorted) and glob patterns into image paths."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_EXTENSIONS and q.is_file())
        elif p.is_file():
            found = [p]
        else:
            found = sorted(Path(q) for q in glob.glob(str(item), recursive=True)
                           if Path(q).suffix.lower() in IMAGE_EXTENSIONS and Path(q).is_file())
        if not found:
            raise ValueError(f"no images found for input {str(item)!r} (files, folders or globs of "
                             f"{', '.join(sorted(IMAGE_EXTENSIONS))})")
        out.extend(found)
    return out


def bicubic_down(hr: torch.Tensor, sf: int) -> torch.Tensor:
    """Antialiased bicubic downscaling by ``sf`` ([.., 3, H, W] in [-1, 1]; H, W divisible by sf).

    Uses torch's antialiased bicubic (the same kernel family as MATLAB's imresize, a = -0.75
    instead of MATLAB's -0.5); the LR of the bundled training data and of ``cresshift bench --hr``.
    """
    if hr.shape[-1] % sf or hr.shape[-2] % sf:
        raise ValueError(f"HR size {hr.shape[-1]}x{hr.shape[-2]} is not divisible by the scale factor {sf}")
    squeeze = hr.ndim == 3
    x = hr[None] if squeeze else hr
    lr = F.interpolate(x, scale_factor=1 / sf, mode="bicubic", antialias=True, align_corners=False).clamp(-1, 1)
    return lr[0] if squeeze else lr
