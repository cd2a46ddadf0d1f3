"""The real photographs cresshift trains and tests on: shipped inside scikit-image and scikit-learn.

No downloads: every image here is inside the installed wheels. Sources and licences are in
``PHOTOS.md`` beside this file. Three whole photographs are held out as the test set.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

__all__ = ["Photo", "photo_catalog", "training_photos", "validation_photos", "test_photos", "make_test_tiles",
           "write_test_tiles", "TEST_SET", "VALIDATION_SET"]


@dataclass(frozen=True)
class Photo:
    """One photograph: name, loader (-> HxW or HxWx3 uint8), source package, licence, split."""

    name: str
    load: Callable[[], np.ndarray]
    source: str
    licence: str
    split: str


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        return getattr(skimage.data, name)()
    return load


def _sklearn(filename: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image

        return load_sample_image(filename)
    return load


TEST_SET = ("chelsea", "astronaut", "flower")
VALIDATION_SET = ("coffee",)


def photo_catalog() -> list[Photo]:
    """Every photograph with its split (``train`` / ``validation`` / ``test``)."""
    sk = "scikit-image (skimage.data)"
    entries = [
        ("astronaut", _skimage("astronaut"), sk, "public domain (NASA)"),
        ("chelsea", _skimage("chelsea"), sk, "CC0 (Stefan van der Walt)"),
        ("coffee", _skimage("coffee"), sk, "CC0 (Rachel Michetti)"),
        ("rocket", _skimage("rocket"), sk, "public domain (SpaceX)"),
        ("hubble_deep_field", _skimage("hubble_deep_field"), sk, "public domain (NASA)"),
        ("immunohistochemistry", _skimage("immunohistochemistry"), sk, "no known copyright restrictions (CMMI)"),
        ("retina", _skimage("retina"), sk, "CC0 (Mikael Häggström)"),
        ("camera", _skimage("camera"), sk, "CC0 (Lav Varshney); grayscale"),
        ("grass", _skimage("grass"), sk, "CC0 (linolafett, DeviantArt); grayscale"),
        ("gravel", _skimage("gravel"), sk, "CC0 (CC0Textures); grayscale"),
        ("brick", _skimage("brick"), sk, "CC0 (CC0Textures); grayscale"),
        ("china", _sklearn("china.jpg"), "scikit-learn (load_sample_image)", "CC BY 2.0 (danielbuechele, Flickr)"),
        ("flower", _sklearn("flower.jpg"), "scikit-learn (load_sample_image)", "CC BY 2.0 (vultilion, Flickr)"),
    ]
    return [Photo(n, f, s, lic, "test" if n in TEST_SET else "validation" if n in VALIDATION_SET else "train")
            for n, f, s, lic in entries]


def _to_tensor(arr: np.ndarray) -> torch.Tensor:
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    return torch.from_numpy(arr[..., :3].astype(np.float32) / 127.5 - 1).permute(2, 0, 1).contiguous()


def training_photos() -> list[tuple[str, torch.Tensor]]:
    """(name, [3, H, W] in [-1, 1]) for every training photograph (grayscale ones replicated to RGB)."""
    return [(p.name, _to_tensor(p.load())) for p in photo_catalog() if p.split == "train"]


def validation_photos() -> list[tuple[str, torch.Tensor]]:
    """(name, [3, H, W] in [-1, 1]) for the validation photograph (model selection, never the test set)."""
    return [(p.name, _to_tensor(p.load())) for p in photo_catalog() if p.split == "validation"]


def test_photos() -> list[tuple[str, torch.Tensor]]:
    """(name, [3, H, W] in [-1, 1]) for the three held-out photographs."""
    return [(p.name, _to_tensor(p.load())) for p in photo_catalog() if p.split == "test"]


def make_test_tiles(size: int = 64, per_image: int = 6, min_std: float = 0.04,
                    photos: list[tuple[str, torch.Tensor]] | None = None) -> list[tuple[str, torch.Tensor]]:
    """Deterministic non-overlapping HR tiles from the test photographs (or ``photos``), skipping flat ones.

    Tiles come from a regular grid; the ``per_image`` with the most structure (std) are kept,
    in grid order, named ``<photo>_<row>_<col>``.
    """
    tiles = []
    for name, img in (test_photos() if photos is None else photos):
        _, H, W = img.shape
        cands = []
        for r in range(H // size):
            for c in range(W // size):
                t = img[:, r * size:(r + 1) * size, c * size:(c + 1) * size]
                if float(t.std()) >= min_std:
                    cands.append((float(t.std()), r, c, t))
        # Keep a spread of structure: every k-th candidate by std, so smooth and busy tiles both appear.
        cands.sort(key=lambda x: x[0])
        step = max(1, len(cands) // per_image)
        chosen = sorted(cands[::step][:per_image], key=lambda x: (x[1], x[2]))
        tiles += [(f"{name}_{r}_{c}", t.clone()) for _, r, c, t in chosen]
    return tiles


def write_test_tiles(folder: str | Path, **kwargs: object) -> list[Path]:
    """Write ``make_test_tiles`` as PNGs into ``folder``."""
    from .io import save_image

    paths = []
    for name, t in make_test_tiles(**kwargs):  # type: ignore[arg-type]
        p = Path(folder) / f"{name}.png"
        save_image(t, p)
        paths.append(p)
    return paths
