"""Image I/O, MATLAB-compatible resizing, and the shipped photographs."""
import math
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from cresshift.data import io as io_mod
from cresshift.data import (ImageReadError, bicubic_down, bicubic_up, imresize, list_images, load_image,
                            save_image)
from cresshift.data import photos as photos_mod


def _levels(x: torch.Tensor) -> np.ndarray:
    """[3, H, W] in [-1, 1] -> [H, W, 3] uint8 levels."""
    return ((x.double() + 1) * 127.5).round().clamp(0, 255).permute(1, 2, 0).numpy().astype(np.uint8)


# --- reading ----------------------------------------------------------------------------------


def test_16bit_png_round_trip_keeps_16bit_precision(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 19, 23, generator=g, dtype=torch.float64) * 2 - 1
    path = save_image(x, tmp_path / "a.png", bits=16)
    y = load_image(path).double()
    step = 2 / 65535  # one 16-bit level in [-1, 1] units
    assert float((y - x).abs().max()) <= 0.5 * step + 1e-7  # rounding only (+ float32 storage)
    assert float((y - x).abs().max()) < 0.01 * (2 / 255)    # far below one 8-bit level
    assert load_image(path).dtype == torch.float32 and load_image(path).shape == (3, 19, 23)


def test_16bit_grayscale_png_and_tiff(tmp_path):
    rng = np.random.default_rng(1)
    g16 = rng.integers(0, 65536, (12, 14), dtype=np.uint16)
    expected = torch.from_numpy(g16 / 65535.0) * 2 - 1
    Image.fromarray(g16).save(tmp_path / "g.png")
    Image.fromarray(g16).save(tmp_path / "g.tif")
    for name in ("g.png", "g.tif"):
        x = load_image(tmp_path / name)
        assert x.shape == (3, 12, 14) and torch.equal(x[0], x[1]) and torch.equal(x[0], x[2])
        torch.testing.assert_close(x[0].double(), expected, rtol=0, atol=1e-7)


def test_16bit_rgb_tiff(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    rng = np.random.default_rng(2)
    rgb16 = rng.integers(0, 65536, (10, 11, 3), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "c.tif", rgb16)
    x = load_image(tmp_path / "c.tif")
    expected = torch.from_numpy(rgb16 / 65535.0).permute(2, 0, 1) * 2 - 1
    torch.testing.assert_close(x.double(), expected, rtol=0, atol=1e-7)


def test_rgba_is_composited_over_white(tmp_path):
    rgba = np.zeros((8, 9, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[:, :3, 3] = 0      # transparent -> white
    rgba[:, 3:6, 3] = 255   # opaque -> the colour
    rgba[:, 6:, 3] = 51     # 20 % opaque -> 0.2 colour + 0.8 white
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    x = (load_image(tmp_path / "a.png").double() + 1) / 2 * 255
    torch.testing.assert_close(x[:, 0, 0], torch.tensor([255.0, 255, 255], dtype=torch.float64))
    torch.testing.assert_close(x[:, 0, 4], torch.tensor([200.0, 0, 0], dtype=torch.float64), atol=1e-4, rtol=0)
    a = 51 / 255
    mix = torch.tensor([a * 200 + (1 - a) * 255, (1 - a) * 255, (1 - a) * 255], dtype=torch.float64)
    torch.testing.assert_close(x[:, 0, 7], mix, atol=1e-4, rtol=0)


def test_grayscale_palette_and_cmyk_conversions(tmp_path):
    rng = np.random.default_rng(3)
    gray = rng.integers(0, 256, (9, 10), dtype=np.uint8)
    Image.fromarray(gray, "L").save(tmp_path / "g.png")
    x = load_image(tmp_path / "g.png")
    assert all(np.array_equal(_levels(x)[..., c], gray) for c in range(3))

    rgb = rng.integers(0, 256, (9, 10, 3), dtype=np.uint8)
    pal = Image.fromarray(rgb).quantize(colors=16)
    pal.save(tmp_path / "p.png")
    assert Image.open(tmp_path / "p.png").mode == "P"
    assert np.array_equal(_levels(load_image(tmp_path / "p.png")), np.asarray(pal.convert("RGB")))

    cmyk = Image.fromarray(rgb).convert("CMYK")
    cmyk.save(tmp_path / "c.tif")
    assert np.array_equal(_levels(load_image(tmp_path / "c.tif")), np.asarray(cmyk.convert("RGB")))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(tmp_path, orientation):
    rng = np.random.default_rng(4)
    rgb = rng.integers(0, 256, (8, 12, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(rgb).save(tmp_path / "o.png", exif=exif)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "o.png")).convert("RGB"))
    got = _levels(load_image(tmp_path / "o.png"))
    assert got.shape == expected.shape and np.array_equal(got, expected)
    assert (got.shape[:2] == (12, 8)) == (orientation >= 5)


def test_broken_files_raise_image_read_error_with_path(tmp_path):
    Image.fromarray(np.zeros((40, 40, 3), dtype=np.uint8) + 77).save(tmp_path / "ok.png")
    raw = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "text.png").write_text("this is not an image\n")
    for name in ("cut.png", "text.png", "missing.png"):
        with pytest.raises(ImageReadError) as info:
            load_image(tmp_path / name)
        msg = str(info.value)
        assert msg.startswith(f"cannot read image {tmp_path / name}: ") and "\n" not in msg
        assert isinstance(info.value, ValueError)


def test_too_small_image_is_rejected_with_the_minimum(tmp_path):
    Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(tmp_path / "s.png")
    with pytest.raises(ImageReadError, match=r"4x4 px, the minimum is 8x8"):
        load_image(tmp_path / "s.png")
    assert load_image(tmp_path / "s.png", min_size=4).shape == (3, 4, 4)


# --- writing ----------------------------------------------------------------------------------


def test_save_8bit_round_trip_and_no_temp_files(tmp_path):
    x = torch.rand(3, 10, 13) * 2 - 1
    out = tmp_path / "deep" / "er" / "x.png"
    assert save_image(x, out) == out
    assert sorted(p.name for p in out.parent.iterdir()) == ["x.png"]
    assert np.array_equal(_levels(load_image(out)), _levels(x))
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600


def test_failed_save_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "x.png"
    save_image(torch.zeros(3, 8, 8), target)
    before = target.read_bytes()

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(io_mod.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        save_image(torch.ones(3, 8, 8), target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]


def test_save_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match=r"\[3, H, W\]"):
        save_image(torch.zeros(1, 3, 8, 8), tmp_path / "a.png")
    with pytest.raises(ValueError, match="16-bit"):
        save_image(torch.zeros(3, 8, 8), tmp_path / "a.jpg", bits=16)
    with pytest.raises(ValueError, match="extension"):
        save_image(torch.zeros(3, 8, 8), tmp_path / "a.xyz")
    assert list(tmp_path.iterdir()) == []


# --- listing ----------------------------------------------------------------------------------


def test_list_images_folders_globs_and_errors(tmp_path):
    for rel in ["a/1.png", "a/b.TIFF", "a/sub/2.JPG", "a/sub/3.webp", "a/.hidden/4.png", "c/5.bmp"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    (tmp_path / "a/notes.txt").write_text("x")
    a = tmp_path / "a"
    assert list_images([a]) == [a / "1.png", a / "b.TIFF", a / "sub/2.JPG", a / "sub/3.webp"]
    assert list_images([str(tmp_path / "*/*.png")]) == [a / "1.png"]
    assert list_images([str(tmp_path / "**" / "*.bmp")]) == [tmp_path / "c/5.bmp"]
    # Files as given, folders expanded, duplicates dropped.
    assert list_images([tmp_path / "c/5.bmp", tmp_path / "c", a / "1.png"]) == [tmp_path / "c/5.bmp", a / "1.png"]
    for bad in [str(tmp_path / "nothing/*.png"), str(tmp_path / "missing.png")]:
        with pytest.raises(ValueError, match="no images found for input") as info:
            list_images([tmp_path / "c", bad])
        assert bad in str(info.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty"):
        list_images([tmp_path / "empty"])
    with pytest.raises(ValueError, match="not an image file"):
        list_images([a / "notes.txt"])


# --- MATLAB imresize --------------------------------------------------------------------------


def _cubic_ref(x: float) -> float:
    ax = abs(x)
    if ax <= 1:
        return 1.5 * ax ** 3 - 2.5 * ax ** 2 + 1
    if ax <= 2:
        return -0.5 * ax ** 3 + 2.5 * ax ** 2 - 4 * ax + 2
    return 0.0


def _mirror(k: int, n: int) -> int:
    """1-based index k (any integer) -> 0-based index into [1..n, n..1, 1..n, ...]."""
    m = (k - 1) % (2 * n)
    return m if m < n else 2 * n - 1 - m


def _imresize_bruteforce(img: np.ndarray, scale: float, out_shape: tuple[int, int]) -> np.ndarray:
    """MATLAB's formula evaluated pixel by pixel: normalised 2-D kernel sum over a mirrored image."""
    H, W = img.shape
    s = scale

    def h(x: float) -> float:
        return s * _cubic_ref(s * x) if s < 1 else _cubic_ref(x)

    reach = int(math.ceil(2 / min(s, 1))) + 2
    out = np.zeros(out_shape)
    for i in range(out_shape[0]):
        u = (i + 1) / s + 0.5 * (1 - 1 / s)   # 1-based centre in the input
        for j in range(out_shape[1]):
            v = (j + 1) / s + 0.5 * (1 - 1 / s)
            num = den = 0.0
            for k in range(math.floor(u) - reach, math.floor(u) + reach + 1):
                for l in range(math.floor(v) - reach, math.floor(v) + reach + 1):
                    w = h(u - k) * h(v - l)
                    num += w * img[_mirror(k, H), _mirror(l, W)]
                    den += w
            out[i, j] = num / den
    return out


@pytest.mark.parametrize("shape,scale", [((12, 10), 0.5), ((13, 16), 0.25), ((10, 9), 0.6), ((5, 4), 3.0),
                                         ((6, 7), 2.0), ((7, 5), 1.5)])
def test_imresize_matches_bruteforce_matlab_formula(shape, scale):
    rng = np.random.default_rng(5)
    img = rng.standard_normal(shape)
    out_shape = tuple(math.ceil(scale * n) for n in shape)
    ref = _imresize_bruteforce(img, scale, out_shape)
    got = imresize(torch.from_numpy(img), scale=scale)
    assert tuple(got.shape) == out_shape
    np.testing.assert_allclose(got.numpy(), ref, rtol=0, atol=1e-12)


def test_imresize_sparse_path_equals_dense(monkeypatch):
    x = torch.randn(2, 3, 40, 36, dtype=torch.float64)
    dense = imresize(x, scale=0.25)
    monkeypatch.setattr(io_mod, "_DENSE_MAX_LEN", 8)
    torch.testing.assert_close(imresize(x, scale=0.25), dense, rtol=0, atol=1e-12)


def test_downscale_keeps_constants_and_linear_ramps():
    const = torch.full((2, 3, 32, 48), 0.3, dtype=torch.float64)
    torch.testing.assert_close(bicubic_down(const, 4), torch.full((2, 3, 8, 12), 0.3, dtype=torch.float64),
                               rtol=0, atol=1e-12)
    # A ramp along either axis stays linear away from the borders: output pixel j is centred on
    # input position 4 j + 1.5 (0-based), so its value there is exact.
    ramp = torch.arange(64, dtype=torch.float64)
    for dim in (-1, -2):
        img = (ramp[None, :] if dim == -1 else ramp[:, None]).expand(64, 64) / 64
        out = imresize(img, scale=0.25)
        line = out[4] if dim == -1 else out[:, 4]
        interior = line[2:-2]
        expected = (4 * torch.arange(16, dtype=torch.float64) + 1.5)[2:-2] / 64
        torch.testing.assert_close(interior, expected, rtol=0, atol=1e-12)


def test_bicubic_up_reproduces_ramps_and_torch_option():
    lr = (torch.arange(12, dtype=torch.float64)[None, :].expand(10, 12) / 12)[None, None]
    up = bicubic_up(lr, 4)
    assert up.shape == (1, 1, 40, 48)
    # Output pixel j sits at LR position (j + 0.5) / 4 - 0.5 (0-based); exact in the interior.
    j = torch.arange(48, dtype=torch.float64)
    torch.testing.assert_close(up[0, 0, 5, 8:-8], ((j + 0.5) / 4 - 0.5)[8:-8] / 12, rtol=0, atol=1e-12)
    x = torch.rand(3, 8, 8)
    expected = torch.nn.functional.interpolate(x[None], scale_factor=4, mode="bicubic", align_corners=False)[0]
    assert torch.equal(bicubic_up(x, 4, method="torch"), expected)


def test_bicubic_down_checks_and_clamps():
    with pytest.raises(ValueError, match="divisible"):
        bicubic_down(torch.zeros(3, 30, 32), 4)
    step = torch.zeros(1, 3, 32, 32)
    step[..., 16:] = 1.0
    step[..., :16] = -1.0
    lr = bicubic_down(step, 4)
    assert float(lr.max()) <= 1 and float(lr.min()) >= -1   # the cubic overshoot is clipped
    assert float(imresize(step, scale=0.25).max()) > 1       # ... which imresize itself keeps


# --- photographs ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def catalog_arrays():
    pytest.importorskip("skimage")
    pytest.importorskip("sklearn")
    guard = pytest.MonkeyPatch()

    def no_network(*args, **kwargs):
        raise AssertionError("a photograph tried to use the network")

    guard.setattr(socket.socket, "connect", no_network)
    try:
        return {p.name: p.load() for p in photos_mod.photo_catalog()}
    finally:
        guard.undo()


def test_catalog_loads_offline_with_split(catalog_arrays):
    cat = photos_mod.photo_catalog()
    names = [p.name for p in cat]
    assert len(names) == len(set(names)) >= 8
    for p in cat:
        arr = catalog_arrays[p.name]
        assert arr.dtype == np.uint8 and min(arr.shape[:2]) >= 256
        assert (arr.ndim == 2) == p.grayscale and (p.grayscale or arr.shape[2] == 3)
        assert p.licence and p.source and p.split in {"train", "validation", "test"}
    test = {p.name for p in cat if p.split == "test"}
    train = {p.name for p in cat if p.split == "train"}
    val = {p.name for p in cat if p.split == "validation"}
    assert len(test) == 3 and not test & train and not test & val and not train & val
    assert all(not p.grayscale for p in cat if p.split == "test")
    assert {n for n, _ in photos_mod.test_photos()} == test


def test_training_photos_are_rgb_tensors(catalog_arrays):
    photos = photos_mod.training_photos()
    colour_only = photos_mod.training_photos(include_grayscale=False)
    assert {n for n, _ in colour_only} < {n for n, _ in photos}
    for name, t in photos:
        assert t.dtype == torch.float32 and t.shape[0] == 3 and float(t.min()) >= -1 and float(t.max()) <= 1
        arr = catalog_arrays[name]
        ref = arr if arr.ndim == 3 else np.repeat(arr[..., None], 3, axis=2)
        assert np.array_equal(_levels(t), ref)


def test_photos_md_matches_catalog(catalog_arrays):
    text = (Path(photos_mod.__file__).parent / "PHOTOS.md").read_text()
    assert photos_mod.photos_markdown() in text


def test_test_tiles_are_deterministic_64px_and_distinct(tmp_path):
    tiles = photos_mod.make_test_tiles(size=64, per_image=5)
    again = photos_mod.make_test_tiles(size=64, per_image=5)
    assert [n for n, _ in tiles] == [n for n, _ in again]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(tiles, again))
    assert len(tiles) == 15
    test_names = {n for n, _ in photos_mod.test_photos()}
    boxes: dict[str, list[tuple[int, int]]] = {}
    for name, t in tiles:
        photo, y, x = name.rsplit("_", 2)
        assert photo in test_names and t.shape == (3, 64, 64) and float(t.std()) >= 0.04
        boxes.setdefault(photo, []).append((int(y[1:]), int(x[1:])))
    for photo, tl in boxes.items():
        assert len(tl) == 5
        for i, (y0, x0) in enumerate(tl):  # non-overlapping
            for y1, x1 in tl[i + 1:]:
                assert abs(y0 - y1) >= 64 or abs(x0 - x1) >= 64
    paths = photos_mod.write_test_tiles(tmp_path / "tiles", size=64, per_image=5)
    assert sorted(p.name for p in (tmp_path / "tiles").iterdir()) == sorted(f"{n}.png" for n, _ in tiles)
    name, tile = tiles[0]
    assert np.array_equal(_levels(load_image(paths[0])), _levels(tile))  # 8-bit exact
