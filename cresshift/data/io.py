"""Image I/O and resizing: files to [-1, 1] tensors and back, robustly and atomically.

Reading (``load_image``) uses Pillow for every format, with two exceptions that keep 16-bit
colour precise where Pillow would silently truncate it to 8 bits: 16-bit PNGs are decoded by
``torchvision.io.decode_png`` and 16-bit multi-channel TIFFs by ``tifffile``. Conventions:
grayscale is replicated to RGB, palette/CMYK/YCbCr/LAB/HSV are converted by Pillow (CMYK
without colour management), alpha is composited over **white**, the EXIF orientation is
applied, and 16-bit values are scaled by 65535 (8-bit by 255).

Resizing (``imresize``, ``bicubic_down``, ``bicubic_up``) is an independent torch
implementation of MATLAB's ``imresize(..., 'bicubic')``: Keys cubic kernel with a = -0.5,
antialiasing (kernel stretched by 1/scale) when shrinking, output pixel centres mapped by
``u = x/scale + (1 - 1/scale)/2`` (1-based), symmetric (half-sample) border padding and
per-pixel weight normalisation. ResShift builds the LR of its bicubic test sets with it.

Writing: every file cresshift writes goes through ``atomic_write`` (temp file in the same
folder, fsync, rename; no-clobber unless asked; mode kept; symlinks followed; read-only
targets refused). ``lock_folder`` keeps two runs from writing into one folder at once,
``remove_stale_temps`` clears the temp files of killed runs, and ``strict_json`` writes JSON
without NaN/Infinity tokens.
"""
from __future__ import annotations

import contextlib
import errno
import glob
import json
import math
import os
import re
import stat
import struct
import tempfile
import warnings
import zlib
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..runtime import first_line

__all__ = ["ImageReadError", "IMAGE_EXTENSIONS", "load_image", "save_image", "list_images", "to_uint8",
           "imresize", "bicubic_down", "bicubic_up", "OutputError", "atomic_write", "writable_mode",
           "remove_stale_temps", "lock_folder", "strict_json", "restore_nonfinite"]

PathLike = Union[str, os.PathLike]

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp"})
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_DENSE_MAX_LEN = 512  # imresize: sides up to this use a dense matrix product, longer ones a sparse one


class ImageReadError(ValueError):
    """An input file is not a readable image, or is smaller than the minimum size."""


# --------------------------------------------------------------------------------------------
# Reading


def load_image(path: PathLike, *, min_size: int = 8) -> torch.Tensor:
    """Read an image file as a float32 [3, H, W] tensor in [-1, 1] (see the module docstring)."""
    path = Path(path)
    try:
        arr = _read_array(path)
    except ImageReadError:
        raise
    except FileNotFoundError:
        raise ImageReadError(f"cannot read image {path}: no such file") from None
    except IsADirectoryError:
        raise ImageReadError(f"cannot read image {path}: it is a directory") from None
    except Exception as err:  # Pillow, torchvision and tifffile raise many types for broken files
        raise ImageReadError(f"cannot read image {path}: {_reason(err)}") from None
    h, w = arr.shape[:2]
    if min(h, w) < min_size:
        raise ImageReadError(f"cannot read image {path}: it is {w}x{h} px, "
                             f"the minimum is {min_size}x{min_size} px")
    rgb = _to_rgb(arr)
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float().mul_(2).sub_(1)


def _reason(err: BaseException) -> str:
    from PIL import UnidentifiedImageError

    if isinstance(err, UnidentifiedImageError):
        return "not an image (unrecognised format)"
    text = first_line(err)
    if "truncated" in text.lower() or isinstance(err, (EOFError, zlib.error)):
        return f"truncated or corrupt file ({text})"
    return text[:200]


def _read_array(path: Path) -> np.ndarray:
    """[H, W, C] float64 in [0, 1]; C = 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA)."""
    from PIL import Image

    with Image.open(path) as im:
        orientation = int(im.getexif().get(0x0112, 1) or 1)
        if im.format == "PNG" and _png_bit_depth(path) == 16:
            arr = _read_png16(path)
        elif im.format == "TIFF" and _is_tiff16_multichannel(im):
            arr = _read_tiff16(path, im)
        else:
            im.load()
            arr = _pil_to_array(im)
    if arr.ndim == 2:
        arr = arr[..., None]
    return _orient(arr, orientation)


def _png_bit_depth(path: Path) -> int:
    with open(path, "rb") as fh:
        head = fh.read(26)
    if len(head) < 26 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        return 0
    return head[24]


def _read_png16(path: Path) -> np.ndarray:
    # Pillow truncates 16-bit colour PNGs to 8 bits; torchvision's libpng decoder keeps them.
    # (torchvision 0.29 deprecates its image decoders in favour of torchcodec: revisit then.)
    try:
        from torchvision.io import ImageReadMode, decode_png, read_file
    except ImportError:
        raise ImageReadError(f"cannot read image {path}: 16-bit PNG needs torchvision's decode_png, "
                             "which is not available; convert the file to 16-bit TIFF") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        t = decode_png(read_file(str(path)), mode=ImageReadMode.UNCHANGED)  # [C, H, W] uint16
    if t.dtype != torch.uint16:  # e.g. a palette image cannot be 16-bit; be safe anyway
        return t.permute(1, 2, 0).numpy().astype(np.float64) / 255.0
    return t.permute(1, 2, 0).numpy().astype(np.float64) / 65535.0


def _is_tiff16_multichannel(im: "object") -> bool:
    bits = getattr(im, "tag_v2", {}).get(258)  # BitsPerSample
    bits = tuple(bits) if isinstance(bits, (tuple, list)) else (bits,)
    return len(bits) > 1 and all(b == 16 for b in bits)


def _read_tiff16(path: Path, im: "object") -> np.ndarray:
    try:
        import tifffile
    except ImportError:
        raise ImageReadError(f"cannot read image {path}: 16-bit colour TIFF needs the 'tifffile' package "
                             f"(pip install tifffile); Pillow would truncate it to 8 bits") from None
    arr = np.asarray(tifffile.imread(str(path), key=0))
    if arr.ndim == 3 and arr.shape[0] in (2, 3, 4) and arr.shape[-1] not in (2, 3, 4):  # planar
        arr = arr.transpose(1, 2, 0)
    photometric = getattr(im, "tag_v2", {}).get(262)
    if photometric not in (None, 1, 2):  # only gray and RGB(A) are unambiguous at 16 bits
        raise ImageReadError(f"cannot read image {path}: 16-bit TIFF with photometric {photometric} "
                             "is not supported")
    return arr.astype(np.float64) / 65535.0


def _pil_to_array(im: "object") -> np.ndarray:
    from PIL import Image

    assert isinstance(im, Image.Image)
    mode = im.mode
    if mode.startswith("I;16"):
        return np.asarray(im, dtype=np.float64) / 65535.0
    if mode == "I":  # 32-bit signed integer; Pillow uses it for some 16-bit files
        arr = np.asarray(im, dtype=np.float64)
        bits = _declared_bits(im)
        if bits != 16:
            raise ValueError(f"{bits or 32}-bit integer images are not supported")
        return np.clip(arr / 65535.0, 0.0, 1.0)
    if mode == "F":  # 32-bit float: taken as already in [0, 1]
        return np.clip(np.asarray(im, dtype=np.float64), 0.0, 1.0)
    if mode in ("1", "L"):
        return np.asarray(im.convert("L"), dtype=np.float64) / 255.0
    if mode in ("LA", "La"):
        return np.asarray(im.convert("LA"), dtype=np.float64) / 255.0
    has_alpha = mode in ("RGBA", "RGBa", "PA") or (mode == "P" and "transparency" in im.info)
    if has_alpha:
        return np.asarray(im.convert("RGBA"), dtype=np.float64) / 255.0
    return np.asarray(im.convert("RGB"), dtype=np.float64) / 255.0


def _declared_bits(im: "object") -> Optional[int]:
    bits = getattr(im, "tag_v2", {}).get(258)
    if isinstance(bits, (tuple, list)):
        bits = bits[0]
    return int(bits) if bits else None


def _orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1..8) to an [H, W, C] array, as ``ImageOps.exif_transpose`` does."""
    if orientation == 2:
        return arr[:, ::-1]
    if orientation == 3:
        return arr[::-1, ::-1]
    if orientation == 4:
        return arr[::-1]
    if orientation == 5:
        return arr.transpose(1, 0, 2)
    if orientation == 6:
        return np.rot90(arr, -1)
    if orientation == 7:
        return arr[::-1, ::-1].transpose(1, 0, 2)
    if orientation == 8:
        return np.rot90(arr, 1)
    return arr


def _to_rgb(arr: np.ndarray) -> np.ndarray:
    """[H, W, 1|2|3|4] in [0, 1] -> [H, W, 3]: gray replicated, alpha composited over white."""
    c = arr.shape[2]
    if c in (2, 4):
        alpha = arr[..., -1:]
        arr = arr[..., :-1] * alpha + (1.0 - alpha)
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    return arr


# --------------------------------------------------------------------------------------------
# Writing


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """[3, H, W] in [-1, 1] -> [H, W, 3] uint8 (rounded, clipped)."""
    x = ((img.detach().double().cpu().clamp(-1, 1) + 1) * 127.5).round()
    return x.permute(1, 2, 0).to(torch.uint8).numpy()


def _to_uint16(img: torch.Tensor) -> np.ndarray:
    x = ((img.detach().double().cpu().clamp(-1, 1) + 1) * 32767.5).round()
    return x.permute(1, 2, 0).numpy().astype(np.uint16)


def _png16_bytes(arr: np.ndarray) -> bytes:
    """A 16-bit RGB PNG (colour type 2, no interlace, filter 0 on every row) of an [H, W, 3] uint16 array."""
    h, w, _ = arr.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = np.zeros((h, 1 + w * 6), dtype=np.uint8)  # one filter byte (0 = none) per row
    rows[:, 1:] = np.ascontiguousarray(arr, dtype=">u2").view(np.uint8).reshape(h, w * 6)
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return (_PNG_SIGNATURE + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
            + chunk(b"IEND", b""))


_PIL_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP",
                ".tif": "TIFF", ".tiff": "TIFF"}


def save_image(img: torch.Tensor, path: PathLike, *, bits: int = 8, overwrite: bool = True) -> Path:
    """Write a [3, H, W] tensor in [-1, 1] through ``atomic_write`` (temp file, fsync, rename).

    PNG is written 8- or 16-bit (``bits=16``); the other extensions Pillow knows (jpg 95 %,
    lossless webp, bmp, tif) 8-bit only. Parent folders are created. ``overwrite=False``
    refuses a file that exists at the moment of the write. Returns the path.
    """
    path = Path(path)
    if img.ndim != 3 or img.shape[0] != 3:
        raise ValueError(f"save_image expects a [3, H, W] tensor, got shape {tuple(img.shape)}")
    fmt = _PIL_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"cannot save {path}: unknown image extension {path.suffix!r} "
                         f"(use one of {', '.join(sorted(IMAGE_EXTENSIONS))})")
    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, got {bits}")
    if bits == 16 and fmt != "PNG":
        raise ValueError(f"16-bit output is only written as PNG, not {path.suffix}")

    def encode(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            if bits == 16:
                fh.write(_png16_bytes(_to_uint16(img)))
            else:
                from PIL import Image

                options = {"quality": 95} if fmt == "JPEG" else {"lossless": True} if fmt == "WEBP" else {}
                Image.fromarray(to_uint8(img)).save(fh, format=fmt, **options)
    atomic_write(path, encode, overwrite=overwrite)
    return path


class OutputError(ValueError):
    """An output cannot be written: it exists (and overwriting was not asked for) or it is read-only."""


_TMP_SUFFIX = ".cresshift-tmp"
_TMP_NAME = re.compile(r"^\..+\.(\d+)-[a-z0-9_]+" + re.escape(_TMP_SUFFIX) + "$")


def atomic_write(path: PathLike, write: Union[Callable[[str], None], bytes, str], *, overwrite: bool = True) -> Path:
    """Write a file atomically: ``write(tmp)`` (or the bytes / text) in the target's folder, fsync, rename.

    Symlinks are followed: the file a link points to is replaced and the link stays. An
    existing target keeps its mode (a new file gets 0666 & ~umask); a read-only target is
    refused. Without ``overwrite`` the finished file is hard-linked onto the target, which
    fails if the name exists at that moment (no-clobber at the write, not only when checked
    earlier). The temp file is ``.<name>.<pid>-<random>.cresshift-tmp``; ``remove_stale_temps``
    deletes those of dead processes. Returns the path written (a symlink's target).
    """
    target = Path(os.path.realpath(path))
    mode = writable_mode(path, overwrite=overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}-", suffix=_TMP_SUFFIX, dir=target.parent)
    os.close(fd)
    try:
        if callable(write):
            write(tmp)
        else:
            with open(tmp, "wb") as fh:
                fh.write(write.encode("utf-8") if isinstance(write, str) else write)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        _commit(tmp, target, overwrite, path)
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT) and not err.filename:
            err.filename = str(path)  # torch.save and friends lose the name
        raise
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
    _fsync_dir(target.parent)
    return target


def writable_mode(path: PathLike, *, overwrite: bool = True) -> int:
    """The mode ``atomic_write`` gives ``path``; OutputError if it exists (without overwrite) or is read-only."""
    target = Path(os.path.realpath(path))
    try:
        st = target.stat()
    except FileNotFoundError:
        return 0o666 & ~_umask()
    if not overwrite:
        raise OutputError(f"{path} exists; pass --overwrite to replace it")
    mode = stat.S_IMODE(st.st_mode)
    if not mode & 0o222 or not os.access(target, os.W_OK):
        raise OutputError(f"{path} is read-only; make it writable (chmod u+w) or write elsewhere")
    return mode


def _commit(tmp: str, target: Path, overwrite: bool, shown: PathLike) -> None:
    """Rename the finished temp file onto the target; without overwrite only if the name is free now."""
    if overwrite:
        os.replace(tmp, target)
        return
    try:
        os.link(tmp, target)  # atomic, and fails if the target exists
        return
    except FileExistsError:
        raise OutputError(f"{shown} exists; pass --overwrite to replace it") from None
    except OSError as err:
        if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS):
            raise
    try:  # a filesystem without hard links: claim the name exclusively, then rename onto it
        os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        raise OutputError(f"{shown} exists; pass --overwrite to replace it") from None
    os.replace(tmp, target)


def remove_stale_temps(folder: PathLike, *, recursive: bool = False) -> list[Path]:
    """Delete ``atomic_write`` temp files under ``folder`` whose writing process is gone (killed mid-write)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for p in (folder.rglob(f".*{_TMP_SUFFIX}") if recursive else folder.glob(f".*{_TMP_SUFFIX}")):
        match = _TMP_NAME.match(p.name)
        if match and not _process_alive(int(match.group(1))):
            try:
                p.unlink()
                removed.append(p)
            except FileNotFoundError:
                pass
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


@contextlib.contextmanager
def lock_folder(folder: PathLike) -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` (created) while writing into it; OutputError if another run holds it.

    The lock is ``flock`` on the folder itself: the kernel drops it when the process ends, so
    a killed run never leaves a stale lock. Without ``fcntl`` (Windows) it is a no-op. Folders
    this call created and that are still empty at the end (a run that failed before writing)
    are removed again.
    """
    folder = Path(folder)
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    try:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            yield folder
            return
        fd = os.open(folder, os.O_RDONLY)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise OutputError(f"another cresshift run is writing into {folder}; wait for it to finish "
                                  f"or choose another output folder") from None
            yield folder
        finally:
            os.close(fd)  # releases the lock
    finally:
        for path in created:  # deepest first
            try:
                path.rmdir()
            except OSError:
                break  # not empty (or not ours to remove): keep it and its parents


def strict_json(obj: Any, **dumps_options: Any) -> str:
    """JSON that strict parsers accept: a non-finite float becomes null (design: no NaN/Infinity tokens).

    A dict value that was non-finite gets a flag beside it, ``"<key>_nonfinite": "inf" | "-inf" |
    "nan"`` (``restore_nonfinite`` reads it back); a list element just becomes null.
    """
    return json.dumps(_finite(obj), allow_nan=False, **dumps_options)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out[k] = _finite(v)
            if isinstance(v, float) and not math.isfinite(v):
                out[f"{k}_nonfinite"] = "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
        return out
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def restore_nonfinite(obj: Any) -> Any:
    """Undo ``strict_json``'s flags: ``{"x": null, "x_nonfinite": "inf"}`` -> ``{"x": inf}`` (recursively)."""
    if isinstance(obj, list):
        return [restore_nonfinite(v) for v in obj]
    if not isinstance(obj, dict):
        return obj
    out = {k: restore_nonfinite(v) for k, v in obj.items()}
    for k, v in obj.items():
        base = k[:-len("_nonfinite")]
        if k.endswith("_nonfinite") and base in obj and obj[base] is None and v in ("inf", "-inf", "nan"):
            out[base] = float(v)
            del out[k]
    return out


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # not supported on every platform / filesystem
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------
# Listing


def list_images(inputs: Iterable[PathLike]) -> list[Path]:
    """Expand files, folders (recursive, sorted, hidden entries skipped) and globs into image paths.

    Only the extensions in ``IMAGE_EXTENSIONS`` count (case-insensitive). Every input must yield
    at least one image, else ValueError naming it. Duplicates are dropped, first occurrence kept.
    """
    out: list[Path] = []
    seen: set[Path] = set()
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if _is_image_file(q)
                           and not any(part.startswith(".") for part in q.relative_to(p).parts))
        elif p.is_file():
            if p.suffix.lower() not in IMAGE_EXTENSIONS:
                raise ValueError(f"input {str(item)!r} is not an image file (extensions: "
                                 f"{', '.join(sorted(IMAGE_EXTENSIONS))})")
            found = [p]
        else:
            found = sorted(Path(q) for q in glob.glob(str(item), recursive=True) if _is_image_file(Path(q)))
        if not found:
            what = "folder" if p.is_dir() else "pattern or path"
            raise ValueError(f"no images found for input {str(item)!r} ({what}; extensions: "
                             f"{', '.join(sorted(IMAGE_EXTENSIONS))})")
        for q in found:
            key = q.resolve()
            if key not in seen:
                seen.add(key)
                out.append(q)
    return out


def _is_image_file(q: Path) -> bool:
    return q.suffix.lower() in IMAGE_EXTENSIONS and q.is_file()


# --------------------------------------------------------------------------------------------
# Resizing: MATLAB-compatible bicubic


def _cubic(x: torch.Tensor) -> torch.Tensor:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's ``cubic``)."""
    ax = x.abs()
    ax2, ax3 = ax * ax, ax * ax * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return near + far


def _contributions(in_len: int, out_len: int, scale: float, antialias: bool,
                   device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """MATLAB's weights/indices for one dimension: ([out_len, P] float64 weights, [out_len, P] 0-based indices)."""
    if scale < 1 and antialias:
        kernel_width = 4.0 / scale
        def kernel(x: torch.Tensor) -> torch.Tensor:
            return scale * _cubic(scale * x)
    else:
        kernel_width = 4.0
        kernel = _cubic
    x = torch.arange(1, out_len + 1, dtype=torch.float64, device=device)  # 1-based output pixels
    u = x / scale + 0.5 * (1 - 1 / scale)                                  # their centres, input space
    left = torch.floor(u - kernel_width / 2)
    taps = int(math.ceil(kernel_width)) + 2
    idx = left[:, None] + torch.arange(taps, dtype=torch.float64, device=device)[None]
    w = kernel(u[:, None] - idx)
    w = w / w.sum(dim=1, keepdim=True)
    # Symmetric padding: 1-based index i maps into [1..n, n..1] repeated.
    m = torch.remainder(idx - 1, 2 * in_len).long()
    src = torch.where(m < in_len, m, 2 * in_len - 1 - m)
    return w, src


def _resize_dim(x: torch.Tensor, dim: int, out_len: int, scale: float, antialias: bool) -> torch.Tensor:
    in_len = x.shape[dim]
    w, src = _contributions(in_len, out_len, scale, antialias, x.device)
    # The resize is one [out, in] matrix with a few taps per row (repeated mirrored indices add up).
    matrix = torch.zeros(out_len, in_len, dtype=x.dtype, device=x.device).scatter_add_(1, src, w)
    if in_len <= _DENSE_MAX_LEN or x.device.type != "cpu":
        return (x.movedim(dim, -1) @ matrix.T).movedim(-1, dim)
    # Long sides: a sparse product costs taps x out instead of in x out.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
        cols = x.movedim(dim, 0)
        out = matrix.to_sparse_csr() @ cols.reshape(in_len, -1)
    return out.reshape(out_len, *cols.shape[1:]).movedim(0, dim)


def imresize(img: torch.Tensor, scale: Optional[float] = None, size: Optional[Sequence[int]] = None, *,
             antialias: bool = True) -> torch.Tensor:
    """MATLAB ``imresize(img, scale | [h w], 'bicubic')`` on [..., H, W] (computed in float64, no clamping).

    With ``scale``, the output is ``ceil(scale * in)`` per side and the kernel uses ``scale``
    itself (as MATLAB does); with ``size = (h, w)`` each side uses ``out / in``. The side
    shrunk most is resized first, the height first on a tie (MATLAB's order).
    """
    if (scale is None) == (size is None):
        raise ValueError("give exactly one of scale or size")
    in_h, in_w = img.shape[-2:]
    if scale is not None:
        if not scale > 0:
            raise ValueError(f"scale must be positive, got {scale}")
        sh = sw = float(scale)
        out_h, out_w = (int(math.ceil(scale * n - 1e-9)) for n in (in_h, in_w))
    else:
        out_h, out_w = (int(s) for s in size)  # type: ignore[union-attr]
        if out_h < 1 or out_w < 1:
            raise ValueError(f"output size must be positive, got {tuple(size)}")  # type: ignore[arg-type]
        sh, sw = out_h / in_h, out_w / in_w
    if img.ndim < 2:
        raise ValueError(f"imresize expects [..., H, W], got shape {tuple(img.shape)}")
    x = img.to(torch.float64)
    steps = [(-2, out_h, sh), (-1, out_w, sw)]
    if sw < sh:
        steps.reverse()
    for dim, n, s in steps:
        x = _resize_dim(x, dim, n, s, antialias)
    return x.to(img.dtype) if img.is_floating_point() else x


def bicubic_down(hr: torch.Tensor, sf: int) -> torch.Tensor:
    """LR from HR: MATLAB antialiased bicubic downscaling by ``sf``, clamped to [-1, 1] ([..., H, W], sides divisible by sf).

    The clamp mirrors ResShift's data code, which clips the LR to the valid range (as saving
    it to uint8 would).
    """
    if int(sf) != sf or sf < 1:
        raise ValueError(f"scale factor must be a positive integer, got {sf}")
    sf = int(sf)
    if hr.shape[-1] % sf or hr.shape[-2] % sf:
        raise ValueError(f"HR size {hr.shape[-1]}x{hr.shape[-2]} is not divisible by the scale factor {sf}")
    lr = imresize(hr, size=(hr.shape[-2] // sf, hr.shape[-1] // sf))
    return lr.clamp(-1, 1)


def bicubic_up(lr: torch.Tensor, sf: int, method: Literal["matlab", "torch"] = "matlab") -> torch.Tensor:
    """Bicubic upscaling by ``sf`` ([..., H, W]; not clamped).

    ``matlab`` (default): ``imresize`` (Keys a = -0.5; no antialiasing acts when enlarging).
    ``torch``: ``F.interpolate(mode='bicubic', align_corners=False)`` (a = -0.75), which is
    what the official ResShift sampler uses for its shift target y; use it with official
    checkpoints.
    """
    if int(sf) != sf or sf < 1:
        raise ValueError(f"scale factor must be a positive integer, got {sf}")
    sf = int(sf)
    if method == "matlab":
        return imresize(lr, size=(lr.shape[-2] * sf, lr.shape[-1] * sf))
    if method == "torch":
        x = lr[None] if lr.ndim == 3 else lr
        y = F.interpolate(x, scale_factor=sf, mode="bicubic", align_corners=False)
        return y[0] if lr.ndim == 3 else y
    raise ValueError(f"method must be 'matlab' or 'torch', got {method!r}")
