"""Bench settings (what defines a sweep besides its rows), the metric columns, and the merged result."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .data import Item, weights_digest
from .rows import Row

#: (key, column heading, higher is better, digits)
METRICS = (("lpips", "LPIPS", False, 3), ("ssim_y", "SSIM-Y", True, 4), ("psnr_y", "PSNR-Y", True, 2),
           ("psnr_rgb", "PSNR-RGB", True, 2))


@dataclass(frozen=True)
class BenchSettings:
    """Everything that defines a sweep except its rows (stored in results.json and run.json)."""

    model: str = "bundled"
    preset: Optional[str] = None
    autoencoder: Optional[str] = None
    baseline_model: str = "auto"       # auto | same | PATH (auto: bundled-discrete for the bundled model)
    hr: Optional[str] = None           # None: the bundled held-out tiles
    lr: Optional[str] = None
    limit: Optional[int] = None
    seed: int = 0
    seeds: int = 1                     # noise draws per image (K); not part of the identity: more draws extend a run
    schedule: str = "default"
    lpips_net: str = "alex"
    lpips_backbone: Optional[str] = None
    crop_border: int = 0               # px shaved from every side before PSNR / SSIM (LPIPS: whole image)
    device: str = "auto"
    dtype: Optional[str] = None
    tile: Optional[int] = None
    context_pad: Optional[int] = None  # mirrored border context (network px); None: each model's own
    grid: Optional[str] = None         # --grid of the non-baseline rows (None: rho grids)
    out: Optional[str] = None
    fresh: bool = False
    command: str = ""

    def identity(self) -> dict[str, Any]:
        """What must match for a rerun to reuse results in ``out``."""
        keys = ("model", "preset", "autoencoder", "baseline_model", "hr", "lr", "seed", "schedule", "lpips_net",
                "lpips_backbone", "crop_border", "dtype", "tile", "context_pad")
        out = {k: getattr(self, k) for k in keys}
        for k in ("model", "autoencoder", "baseline_model", "hr", "lr", "lpips_backbone"):
            if out[k] is not None and Path(out[k]).exists():  # the same files, wherever the run starts from
                out[k] = str(Path(out[k]).resolve())
        for k in ("model", "autoencoder", "baseline_model"):  # the same weights: a file replaced in place is another run
            out[f"{k}_sha256"] = weights_digest(getattr(self, k))
        if self.grid is not None:  # the grid's content: a grid file, or the model's grids sidecar
            from ..models.stored_grids import model_file, sidecar_path

            source = sidecar_path(model_file(self.model)) if self.grid == "optimized" else Path(self.grid)
            out["grid"] = self.grid
            out["grid_sha256"] = weights_digest(str(source)) if source.is_file() else None
        return out



@dataclass
class BenchResult:
    """The merged sweep: one summary dict per row, every per-image record, notes, run metadata."""

    table: list[dict[str, Any]]
    records: list[dict[str, Any]]
    items: list[Item]
    rows: list[Row]
    notes: list[str]
    meta: dict[str, Any]
    lpips_name: str
    computed: int = 0                  # (row, image) results computed by this run (not reused)
    outputs: list[str] = field(default_factory=list)

