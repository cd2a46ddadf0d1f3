"""The real photographs cresshift trains and tests on: shipped inside scikit-image and scikit-learn.

No downloads: every image here is a file inside the installed wheels (scikit-image's
``skimage.data`` images that need ``pooch`` are left out). Sources and licences, as the
packages document them, are in ``PHOTOS.md`` beside this file (``photos_markdown()``
regenerates its table). The split is fixed:

- ``test``: three whole photographs, never trained or validated on: ``chelsea`` (smooth),
  ``china`` (textured), ``astronaut`` (portrait);
- ``validation``: ``coffee``, for model selection during training;
- ``train``: the other colour photographs, plus grayscale photographs (``grayscale=True``)
  that training replicates to three channels.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional

import numpy as np
import torch

__all__ = ["Photo", "photo_catalog", "training_photos", "validation_photos", "test_photos", "make_test_tiles",
           "validation_tiles", "write_test_tiles", "bundled_testset", "photos_markdown", "TEST_SET", "VALIDATION_SET"]

TEST_SET = ("chelsea", "china", "astronaut")
VALIDATION_SET = ("coffee",)


@dataclass(frozen=True)
class Photo:
    """One photograph: name, loader (-> uint8 [H, W] or [H, W, 3]), source, licence/credit, split, grayscale."""

    name: str
    load: Callable[[], np.ndarray]
    source: str
    licence: str
    split: str
    grayscale: bool = False
    note: str = ""

    def tensor(self) -> torch.Tensor:
        """The photograph as a float32 [3, H, W] tensor in [-1, 1] (grayscale replicated)."""
        return _to_tensor(self.load())


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        return np.asarray(getattr(skimage.data, name)())
    return load


def _sklearn(filename: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image

        return np.asarray(load_sample_image(filename))
    return load


_SK = "scikit-image `skimage.data`"
_SL = "scikit-learn `load_sample_image`"

# (name, loader, source, licence/credit as the package documents it, grayscale, note)
_ENTRIES = [
    ("astronaut", _skimage("astronaut"), _SK,
     "Public domain: no known copyright restrictions (NASA Great Images; Eileen Collins)", False, "portrait"),
    ("chelsea", _skimage("chelsea"), _SK,
     "CC0 by the photographer (Stefan van der Walt)", False, "cat; smooth fur and background"),
    ("coffee", _skimage("coffee"), _SK,
     "CC0 by the photographer (Rachel Michetti); courtesy of Pikolo Espresso Bar", False,
     "porcelain and wood grain"),
    ("rocket", _skimage("rocket"), _SK,
     "Public domain (SpaceX photos, released into the public domain)", False, "launch, sky, smoke"),
    ("china", _sklearn("china.jpg"), _SL,
     "CC BY 2.0, danielbuechele on Flickr (photo 6061409035); retrieved by Robert Layton", False,
     "temple roof and foliage; textured"),
    ("flower", _sklearn("flower.jpg"), _SL,
     "CC BY 2.0, vultilion on Flickr (photo 6056698931); retrieved by Robert Layton", False,
     "close-up, soft background"),
    ("hubble_deep_field", _skimage("hubble_deep_field"), _SK,
     "Public domain (NASA; HubbleSite release 2012-37)", False, "galaxies on a dark, nearly flat sky"),
    ("immunohistochemistry", _skimage("immunohistochemistry"), _SK,
     "No known copyright restrictions (Center for Microscopy And Molecular Imaging)", False,
     "stained tissue, microscope"),
    ("retina", _skimage("retina"), _SK,
     "CC0 1.0 (Mikael Haggstrom, Wikimedia Commons 'Fundus photograph of normal left eye')", False,
     "fundus photograph; smooth gradients, flat black surround"),
    ("camera", _skimage("camera"), _SK,
     "CC0 by the photographer (Lav Varshney)", True, "person with a camera, outdoors"),
    ("coins", _skimage("coins"), _SK,
     "No known copyright restrictions (Brooklyn Museum Collection)", True, "Greek coins from Pompeii"),
    ("grass", _skimage("grass"), _SK,
     "CC0 (linolafett on DeviantArt, 'Grass 01'); cropped, converted to gray", True, "texture"),
    ("gravel", _skimage("gravel"), _SK,
     "CC0 (CC0Textures 'Gravel04'); rescaled, cropped, converted to gray", True, "texture"),
    ("brick", _skimage("brick"), _SK,
     "CC0 (CC0Textures 'Bricks25'); perspective-corrected, rotated, cropped, scaled", True, "texture"),
]


def _split(name: str) -> str:
    return "test" if name in TEST_SET else "validation" if name in VALIDATION_SET else "train"


def photo_catalog(*, grayscale: Optional[bool] = None) -> list[Photo]:
    """Every photograph with its split; ``grayscale`` True/False keeps only that group (None: all)."""
    photos = [Photo(n, f, s, lic, _split(n), g, note) for n, f, s, lic, g, note in _ENTRIES]
    return [p for p in photos if grayscale is None or p.grayscale == grayscale]


def _to_tensor(arr: np.ndarray) -> torch.Tensor:
    if arr.dtype != np.uint8:
        raise TypeError(f"expected a uint8 photograph, got {arr.dtype}")
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    x = torch.from_numpy(np.array(arr[..., :3], dtype=np.float64)).permute(2, 0, 1)
    return (x / 127.5 - 1).float().contiguous()


def _load(split: str, include_grayscale: bool) -> list[tuple[str, torch.Tensor]]:
    return [(p.name, p.tensor()) for p in photo_catalog()
            if p.split == split and (include_grayscale or not p.grayscale)]


def training_photos(*, include_grayscale: bool = True) -> list[tuple[str, torch.Tensor]]:
    """(name, [3, H, W] in [-1, 1]) for every training photograph; grayscale ones replicated to RGB."""
    return _load("train", include_grayscale)


def validation_photos() -> list[tuple[str, torch.Tensor]]:
    """(name, [3, H, W] in [-1, 1]) for the validation photograph (model selection; never the test set)."""
    return _load("validation", True)


def test_photos() -> list[tuple[str, torch.Tensor]]:
    """(name, [3, H, W] in [-1, 1]) for the three held-out test photographs."""
    return _load("test", True)


test_photos.__test__ = False  # type: ignore[attr-defined]  # not a pytest test when imported into one


def validation_tiles(size: int = 64, photos: Optional[Iterable[tuple[str, torch.Tensor]]] = None) -> list[torch.Tensor]:
    """The HR tiles the trainer validates on: 8 per photograph (``make_test_tiles``), by default
    from the validation photograph."""
    return [t for _, t in make_test_tiles(size=size, per_image=8,
                                          photos=validation_photos() if photos is None else photos)]


def make_test_tiles(size: int = 64, per_image: int = 6, *, min_std: float = 0.04,
                    photos: Optional[Iterable[tuple[str, torch.Tensor]]] = None) -> list[tuple[str, torch.Tensor]]:
    """Deterministic non-overlapping ``size`` x ``size`` HR tiles from the test photographs (or ``photos``).

    The grid is centred in each photograph; tiles whose std (in [-1, 1] units) is below
    ``min_std`` (0.04 is about 5 grey levels) are skipped as nearly flat; of the rest,
    ``per_image`` tiles evenly spaced in std order are kept (smooth to busy), listed in grid
    order and named ``<photo>_y<top>_x<left>``.
    """
    if size < 1 or per_image < 1:
        raise ValueError(f"size and per_image must be positive, got {size}, {per_image}")
    tiles: list[tuple[str, torch.Tensor]] = []
    for name, img in (test_photos() if photos is None else photos):
        _, H, W = img.shape
        rows, cols = H // size, W // size
        top0, left0 = (H - rows * size) // 2, (W - cols * size) // 2
        candidates = []
        for r in range(rows):
            for c in range(cols):
                top, left = top0 + r * size, left0 + c * size
                tile = img[:, top:top + size, left:left + size]
                std = float(tile.double().std())
                if std >= min_std:
                    candidates.append((std, top, left))
        if not candidates:
            continue
        candidates.sort()
        picks = sorted({int(round(i)) for i in np.linspace(0, len(candidates) - 1, min(per_image, len(candidates)))})
        chosen = sorted((candidates[i] for i in picks), key=lambda t: (t[1], t[2]))
        tiles += [(f"{name}_y{top:04d}_x{left:04d}", img[:, top:top + size, left:left + size].clone())
                  for _, top, left in chosen]
    return tiles


def write_test_tiles(folder: str | Path, **kwargs: object) -> list[Path]:
    """Write ``make_test_tiles(**kwargs)`` as 8-bit PNGs ``<name>.png`` into ``folder``; returns the paths."""
    from .io import save_image

    return [save_image(tile, Path(folder) / f"{name}.png")
            for name, tile in make_test_tiles(**kwargs)]  # type: ignore[arg-type]


def bundled_testset() -> Path:
    """The held-out HR tiles shipped with cresshift (``cresshift/bundled/testset``, from ``write_test_tiles``)."""
    return Path(__file__).resolve().parent.parent / "bundled" / "testset"


def photos_markdown() -> str:
    """The table of PHOTOS.md (name, size, source, licence/credit, split), from the catalog itself."""
    lines = ["| name | size (W x H) | channels | source | licence / credit | split |",
             "|---|---|---|---|---|---|"]
    for p in photo_catalog():
        arr = p.load()
        h, w = arr.shape[:2]
        chans = "gray" if p.grayscale else "RGB"
        lines.append(f"| {p.name} | {w} x {h} | {chans} | {p.source} | {p.licence} | {p.split} |")
    return "\n".join(lines)
