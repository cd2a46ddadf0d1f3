"""Checkpoint I/O: official .pth files (never executing code) and cresshift's safetensors format.

cresshift's own format is one ``.safetensors`` file: tensors ``model.<key>`` (and optionally
``autoencoder.<key>``) plus a JSON config in the metadata under ``cresshift_config``:
``{"format": "cresshift", "version": 1, "model": {"class": ..., "params": ...},
"autoencoder": {...} | null, "diffusion": {official diffusion.params}, "schedule": {...} | null,
"training": {...}}``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ..data.io import atomic_write
from ..runtime import first_line

__all__ = ["CheckpointError", "load_official_state_dict", "check_state_dict", "load_into",
           "save_cresshift", "load_cresshift", "is_cresshift_file", "atomic_write", "torch_load_reason"]

FORMAT_VERSION = 1
_PREFIXES = ("module.", "_orig_mod.", "model.", "ema_model.")


class CheckpointError(ValueError):
    """A checkpoint cannot be read or does not fit the network."""


def torch_load_reason(err: BaseException) -> str:
    """One line on why ``torch.load(weights_only=True)`` refused a file (never torch's advice to unpickle it)."""
    text = str(err).strip()
    if "Weights only load failed" in text:
        detail = next((ln.strip() for ln in text.splitlines()
                       if ln.strip().startswith(("Trying to load unsupported", "Unsupported", "Could not find"))), "")
        detail = f" ({detail.rstrip('.')[:160]})" if detail else ""
        return (f"it holds Python objects other than tensors{detail}; cresshift loads weights only and never "
                f"runs code from a checkpoint")
    return text.splitlines()[0][:200] if text else type(err).__name__


def _strip(sd: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        for p in _PREFIXES:
            while k.startswith(p):
                k = k[len(p):]
        out[k] = v
    return out


def load_official_state_dict(path: str | os.PathLike, *, prefer_ema: bool = True) -> dict[str, torch.Tensor]:
    """Read an official ResShift/VQ checkpoint with ``weights_only=True`` and unwrap it.

    Accepts a bare state dict, ``{'state_dict': ...}`` / ``{'model': ...}`` / ``{'ema': ...}``
    wrappers, and ``module.`` / ``_orig_mod.`` prefixes (DDP, torch.compile).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors, code-executing payloads, truncated files
        raise CheckpointError(f"cannot read {path} as a weights-only torch checkpoint: {torch_load_reason(err)}") from None
    if isinstance(obj, Mapping):
        keys = ["ema", "ema_state_dict", "params_ema", "state_dict", "model"] if prefer_ema else \
               ["state_dict", "model", "ema", "ema_state_dict", "params_ema"]
        for k in keys:
            if k in obj and isinstance(obj[k], Mapping):
                obj = obj[k]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return _strip(obj)


def check_state_dict(model: nn.Module, sd: Mapping[str, torch.Tensor], *, what: str = "network",
                     hint: str = "") -> None:
    """Raise one readable CheckpointError naming missing, unexpected and wrong-shaped keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if not (missing or unexpected or shapes):
        return

    def few(xs: list[str]) -> str:
        return ", ".join(xs[:3]) + (f" (+{len(xs) - 3} more)" if len(xs) > 3 else "")
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing [{few(missing)}]")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected [{few(unexpected)}]")
    if shapes:
        parts.append(f"{len(shapes)} wrong-shaped [{few(shapes)}]")
    raise CheckpointError(f"the checkpoint does not fit the {what}: " + "; ".join(parts) + (f". {hint}" if hint else ""))


def load_into(model: nn.Module, sd: Mapping[str, torch.Tensor], *, what: str = "network", hint: str = "") -> nn.Module:
    """Check then load with strict=True."""
    check_state_dict(model, sd, what=what, hint=hint)
    model.load_state_dict(sd, strict=True)
    return model


# --- cresshift's own format -------------------------------------------------------------------
def is_cresshift_file(path: str | os.PathLike) -> bool:
    return str(path).endswith(".safetensors")


def save_cresshift(path: str | os.PathLike, tensors: Mapping[str, Mapping[str, torch.Tensor]],
                   config: Mapping[str, Any]) -> None:
    """Write ``{"model": sd, "autoencoder": sd?}`` and the JSON config into one safetensors file, atomically."""
    from safetensors.torch import save

    flat: dict[str, torch.Tensor] = {}
    for group, sd in tensors.items():
        for k, v in sd.items():
            flat[f"{group}.{k}"] = v.detach().to("cpu").contiguous()
    cfg = dict(config)
    cfg.setdefault("format", "cresshift")
    cfg.setdefault("version", FORMAT_VERSION)
    meta = {"cresshift_config": json.dumps(cfg)}
    atomic_write(path, save(flat, metadata=meta))  # bytes first: Python's write reports a full disk


def load_cresshift(path: str | os.PathLike) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, Any]]:
    """Read a cresshift safetensors file: ({"model": sd, "autoencoder": sd?}, config)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            groups: dict[str, dict[str, torch.Tensor]] = {}
            for k in f.keys():
                group, _, key = k.partition(".")
                groups.setdefault(group, {})[key] = f.get_tensor(k)
    except Exception as err:
        raise CheckpointError(f"cannot read {path} as a safetensors file: {first_line(err, 200)}") from None
    if "cresshift_config" not in meta:
        raise CheckpointError(f"{path} is a safetensors file without a cresshift config; "
                              f"for official weights pass --preset and the .pth files")
    config = _check_config(path, meta["cresshift_config"])
    return groups, config


def _check_config(path: Path, text: str) -> dict[str, Any]:
    """The embedded cresshift config, parsed and checked for the keys every reader needs (CheckpointError)."""
    try:
        config = json.loads(text)
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: its cresshift config is not valid JSON ({err.msg})") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: its cresshift config is not a JSON object")
    if config.get("format") != "cresshift" or not isinstance(config.get("version", 0), int) \
            or config.get("version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{path}: unsupported cresshift format {config.get('format')} v{config.get('version')}")
    model = config.get("model")
    if not (isinstance(model, dict) and isinstance(model.get("params"), dict)):
        raise CheckpointError(f"{path}: its cresshift config is malformed: 'model' must be an object with 'params'")
    for key in ("diffusion", "autoencoder", "schedule", "sampling"):
        if config.get(key) is not None and not isinstance(config[key], dict):
            raise CheckpointError(f"{path}: its cresshift config is malformed: {key!r} must be an object or null")
    return config
