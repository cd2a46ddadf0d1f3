"""What the demo's HTTP endpoints do, without the web framework: validate a request, run it, encode PNGs.

``parse_request`` turns form fields into an ``SRRequest`` (or a ``RequestError`` with an HTTP
status and one line), ``decode_image`` reads an uploaded image within the pixel limit,
``ModelStore`` loads each offered model once, and ``super_resolve`` runs the pipeline with
progress and cancellation through the solver callback.
"""
from __future__ import annotations

import io
import math
import os
import tempfile
import threading
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import torch

from ..grids import GRID_FAMILIES
from .jobs import Job, RequestError

__all__ = ["ModelChoice", "ModelStore", "SRRequest", "SROutcome", "parse_request", "decode_image", "encode_png",
           "super_resolve", "demo_solvers", "DEFAULT_MAX_PIXELS", "MAX_NFE", "MAX_UPLOAD_BYTES", "DEFAULTS"]

#: the largest LR image (width x height) run without tiling; with a tile size the limit is 4x this
DEFAULT_MAX_PIXELS = 1024 * 1024
MAX_NFE = 100
MAX_UPLOAD_BYTES = 64 * 1024 * 1024
DEFAULTS = {"solver": "heun", "nfe": 5, "rho": 4.0, "grid": "rho", "seed": 0}
# "rho": the rho field's grid in t; the others: cresshift.grids families ("auto": the solver's measured best)
GRIDS = ("rho", "auto", *(g for g in GRID_FAMILIES if g != "rho"))


def demo_solvers() -> tuple[str, ...]:
    """The solvers the demo offers: every registered one with an NFE budget (not ``adaptive``)."""
    from ..solvers import SOLVERS

    return tuple(name for name in SOLVERS if name != "adaptive")


@dataclass(frozen=True)
class ModelChoice:
    """A model the demo offers: its name on the page and what ``load_pipeline`` needs."""

    name: str
    source: str
    preset: Optional[str] = None
    autoencoder: Optional[str] = None


class ModelStore:
    """Loads each offered model on first use and keeps it (one lock: loads never race)."""

    def __init__(self, choices: Sequence[ModelChoice], *, device: Any = "cpu", dtype: Optional[torch.dtype] = None):
        if not choices:
            raise ValueError("the demo needs at least one model")
        self.choices = {c.name: c for c in choices}
        self.device, self.dtype = device, dtype
        self._loaded: dict[str, Any] = {}
        self._lock = threading.Lock()

    @property
    def names(self) -> list[str]:
        return list(self.choices)

    def get(self, name: str) -> Any:
        """The SRPipeline called ``name``."""
        from ..models.pipeline import load_pipeline

        with self._lock:
            if name not in self._loaded:
                c = self.choices[name]
                self._loaded[name] = load_pipeline(c.source, preset=c.preset, autoencoder=c.autoencoder,
                                                   device=self.device, dtype=self.dtype)
            return self._loaded[name]


@dataclass(frozen=True)
class SRRequest:
    """A validated super-resolution request (form fields of ``POST /api/super-resolve``)."""

    model: str
    solver: str
    nfe: int
    rho: float
    seed: int
    tile: Optional[int] = None
    grid: str = "rho"

    def grid_args(self) -> dict[str, Any]:
        """``rho`` / ``grid`` as ``SRPipeline.run`` takes them."""
        return {"rho": self.rho, "grid": None} if self.grid == "rho" else {"rho": None, "grid": self.grid}


def _field(form: Mapping[str, Any], name: str, cast: Any, default: Any, what: str) -> Any:
    raw = form.get(name)
    if raw is None or (isinstance(raw, str) and raw.strip() == ""):
        return default
    if not isinstance(raw, str):
        raise RequestError(f"the form field '{name}' must be text ({what}), not a file")
    try:
        value = cast(raw.strip())
    except ValueError:
        raise RequestError(f"'{name}' must be {what}, got {raw.strip()[:40]!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise RequestError(f"'{name}' must be {what}, got {raw.strip()[:40]!r}")
    return value


def parse_request(form: Mapping[str, Any], models: Sequence[str]) -> SRRequest:
    """Validate the form fields ``model``, ``solver``, ``nfe``, ``rho``, ``grid``, ``seed``, ``tile`` (RequestError: 400)."""
    model = _field(form, "model", str, models[0], "a model name")
    if model not in models:
        raise RequestError(f"unknown model {model!r}; this demo offers: {', '.join(models)}")
    solvers = demo_solvers()
    solver = _field(form, "solver", str, DEFAULTS["solver"], "a solver name")
    if solver not in solvers:
        raise RequestError(f"unknown solver {solver!r}; valid: {', '.join(solvers)}")
    nfe = _field(form, "nfe", int, DEFAULTS["nfe"], "a whole number of network calls")
    if not 1 <= nfe <= MAX_NFE:
        raise RequestError(f"nfe must be between 1 and {MAX_NFE}, got {nfe}")
    rho = _field(form, "rho", float, DEFAULTS["rho"], "a non-zero number")
    if rho == 0:
        raise RequestError("rho must be non-zero (1 is uniform, > 1 crowds steps near the image end, < 0 near the LR end)")
    grid = _field(form, "grid", str, DEFAULTS["grid"], "a grid family")
    if grid not in GRIDS:
        raise RequestError(f"unknown grid {grid!r}; valid: {', '.join(GRIDS)}")
    seed = _field(form, "seed", int, DEFAULTS["seed"], "a whole number")
    if not 0 <= seed < 2 ** 63:
        raise RequestError(f"seed must be between 0 and 2^63 - 1, got {seed}")
    tile = _field(form, "tile", int, 0, "a tile size in LR pixels (0: no tiling)")
    if tile != 0 and not 16 <= tile <= 4096:
        raise RequestError(f"tile must be 0 (no tiling) or between 16 and 4096 LR pixels, got {tile}")
    return SRRequest(model=model, solver=solver, nfe=nfe, rho=rho, seed=seed, tile=tile or None, grid=grid)


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, tiled: bool = False) -> torch.Tensor:
    """An uploaded image as [3, h, w] in [-1, 1]; RequestError 415 if it is not one, 413 if it is too large.

    The limit is ``max_pixels`` LR pixels (w x h) without tiling and ``4 * max_pixels`` with it;
    the size is read from the header before the pixels are decoded.
    """
    from PIL import Image

    from ..data.io import ImageReadError, load_image

    if not data:
        raise RequestError("the uploaded image is empty", status=415)
    limit = max_pixels * (4 if tiled else 1)
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
    except Image.DecompressionBombError:
        raise RequestError(f"the image is too large; the limit is {limit} LR pixels", status=413) from None
    except Exception:
        raise RequestError("the upload is not an image Pillow can read (PNG, JPEG, WebP, BMP, TIFF)",
                           status=415) from None
    if min(w, h) < 8:
        raise RequestError(f"the image is {w}x{h} px; cresshift needs at least 8x8")
    if w * h > limit:
        hint = "" if tiled else " (or 4x that with a tile size)"
        raise RequestError(f"the image is {w}x{h} px; this demo takes at most {limit} LR pixels"
                           f" (e.g. {math.isqrt(limit)}x{math.isqrt(limit)}){hint}", status=413)
    fd, tmp = tempfile.mkstemp(prefix="cresshift-demo-", suffix=".img")  # load_image reads files (16-bit, EXIF)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return load_image(tmp)
    except ImageReadError as err:
        raise RequestError(str(err).replace(f" {tmp}", "").splitlines()[0], status=415) from None
    finally:
        os.unlink(tmp)


def encode_png(img: torch.Tensor) -> bytes:
    """A [3, H, W] tensor in [-1, 1] as 8-bit PNG bytes."""
    from PIL import Image

    from ..data.io import to_uint8

    buf = io.BytesIO()
    Image.fromarray(to_uint8(img)).save(buf, format="PNG")
    return buf.getvalue()


@dataclass(frozen=True)
class SROutcome:
    """What one run produced, ready to send: PNGs of the result, bicubic and LR; NFE, grid, seconds."""

    sr_png: bytes
    bicubic_png: bytes
    lr_png: bytes
    nfe: int
    grid: tuple[float, ...]
    seconds: float
    width: int
    height: int
    psnr_y: Optional[float] = None
    bicubic_psnr_y: Optional[float] = None


def super_resolve(store: ModelStore, req: SRRequest, lr: torch.Tensor, job: Job,
                  hr: Optional[torch.Tensor] = None) -> SROutcome:
    """Run ``req`` on ``lr`` ([3, h, w] in [-1, 1]) reporting solver steps to ``job`` (which may cancel it).

    NFE as the pipeline reports it (design §7); PSNR-Y against ``hr`` when one is given.
    """
    import time

    from ..metrics import psnr_y
    from ..models.pipeline import upsample_lr
    from ..solvers import grid_for

    pipe = store.get(req.model)
    grid = grid_for(req.solver, pipe.schedule, req.nfe, **req.grid_args())  # ValueError (400) on an impossible budget
    total = max(1, len(grid) - (req.solver != "markov"))
    steps = 0

    def on_step(_: dict[str, Any]) -> None:
        nonlocal steps
        steps += 1
        job.progress(steps, total)
    job.progress(0, total)
    t0 = time.perf_counter()
    res = pipe.run(lr[None], solver=req.solver, nfe=req.nfe, seed=req.seed, tile=req.tile, **req.grid_args(),
                   callback=on_step)
    seconds = time.perf_counter() - t0
    job.progress(total, total)
    sr = res.sr[0].float().cpu()
    bicubic = upsample_lr(lr[None], pipe.sf)[0].clamp(-1, 1)
    scores = (float(psnr_y(sr[None], hr[None])), float(psnr_y(bicubic[None], hr[None]))) if hr is not None else (None, None)
    return SROutcome(sr_png=encode_png(sr), bicubic_png=encode_png(bicubic), lr_png=encode_png(lr), nfe=res.nfe,
                     grid=tuple(float(t) for t in res.ts), seconds=seconds, width=sr.shape[-1], height=sr.shape[-2],
                     psnr_y=scores[0], bicubic_psnr_y=scores[1])
