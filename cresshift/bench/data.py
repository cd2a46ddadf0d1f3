"""Bench data: the dataset listing (HR images, or HR/LR pairs), the bundled held-out tiles, per-image seeds, weight hashes."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..data.photos import bundled_testset

__all__ = ["Item", "dataset", "draw_seed", "load_item", "weights_digest", "bundled_testset"]


@dataclass(frozen=True)
class Item:
    """One test image: its index in the sorted dataset, name, HR file, paired LR file (or None), seed."""

    index: int
    name: str
    hr: str
    lr: Optional[str]
    seed: int


def _named(inputs: str) -> list[tuple[str, Path]]:
    from ..data.io import list_images

    root = Path(inputs)
    files = list_images([inputs])
    if root.is_dir():
        return [(p.relative_to(root).as_posix(), p) for p in files]
    return [(p.name, p) for p in files]


def dataset(hr: str, lr: Optional[str] = None, *, limit: Optional[int] = None, seed: int = 0) -> list[Item]:
    """HR images (sorted; LR made by bicubic x sf) or HR/LR pairs matched by relative name without extension."""
    hrs = _named(hr)
    lrs: dict[str, Path] = {}
    if lr is not None:
        for name, p in _named(lr):
            lrs[str(Path(name).with_suffix(""))] = p
    items = []
    for i, (name, p) in enumerate(hrs):
        lr_path = None
        if lr is not None:
            stem = str(Path(name).with_suffix(""))
            if stem not in lrs:
                raise ValueError(f"no LR image for HR {name!r} in {lr} (pairs match by file name, any extension)")
            lr_path = str(lrs[stem])
        items.append(Item(i, name, str(p), lr_path, draw_seed(seed, i, 0)))
    if limit is not None:
        if limit < 1:
            raise ValueError(f"--limit must be at least 1, got {limit}")
        items = items[:limit]
    return items


def draw_seed(seed: int, index: int, draw: int) -> int:
    """Noise seed of draw ``draw`` of image ``index``: seed + index for draw 0, else a 63-bit hash of all three.

    It depends on nothing else (not the row, the limit or the process), so rows stay paired.
    """
    if draw == 0:
        return int(seed) + int(index)
    digest = hashlib.sha256(f"cresshift-bench:{int(seed)}:{int(index)}:{int(draw)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def load_item(item: Item, sf: int) -> tuple[Any, Any]:
    """(lr [3, h, w], hr [3, sf h, sf w]) in [-1, 1]; --hr-only data: HR cropped to a multiple of sf, LR by bicubic."""
    from ..data.io import bicubic_down, load_image

    hr = load_image(item.hr)
    if item.lr is None:
        H, W = hr.shape[-2] // sf * sf, hr.shape[-1] // sf * sf
        hr = hr[:, :H, :W]
        return bicubic_down(hr, sf), hr
    lr = load_image(item.lr)
    if tuple(hr.shape[-2:]) != (lr.shape[-2] * sf, lr.shape[-1] * sf):
        raise ValueError(f"HR {item.name} is {hr.shape[-1]}x{hr.shape[-2]} px but its LR x{sf} is "
                         f"{lr.shape[-1] * sf}x{lr.shape[-2] * sf} px")
    return lr, hr



def weights_digest(name: Optional[str]) -> Optional[str]:
    """sha256 of a weights file (``bundled`` / ``bundled-discrete`` resolved to the package's file); None if there is none."""
    if name is None:
        return None
    path = Path(name)
    if not path.is_file():
        from ..models.pipeline import BUNDLED, bundled_path

        if name not in BUNDLED or not bundled_path(name).is_file():
            return None
        path = bundled_path(name)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
