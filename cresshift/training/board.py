"""TensorBoard output of a training run (``cresshift finetune --tensorboard``): scalars and validation images.

Written under ``OUT/tensorboard`` by rank 0: ``train/loss``, ``train/lr``, ``train/grad_norm``,
``loss_per_t/bin_<b>`` (the t bins of ``t_sampler``), ``t_sampler/p_<b>`` (loss-aware sampling
only), ``val/<metric>`` and ``val/images`` (a few validation tiles: SR above HR).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import torch

__all__ = ["tensorboard_available", "Board"]


def tensorboard_available() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


class Board:
    """A TensorBoard SummaryWriter behind three calls; every call is a no-op when ``out`` is None."""

    def __init__(self, out: Optional[Path]) -> None:
        self.writer: Any = None
        if out is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(out))

    def scalars(self, step: int, values: Mapping[str, Optional[float]]) -> None:
        """One scalar per name (None values are skipped)."""
        if self.writer is None:
            return
        for name, value in values.items():
            if value is not None:
                self.writer.add_scalar(name, float(value), step)

    def series(self, step: int, prefix: str, values: Sequence[Optional[float]]) -> None:
        """``prefix/bin_<b>`` for every bin b with a value."""
        self.scalars(step, {f"{prefix}/bin_{b:02d}": v for b, v in enumerate(values)})

    def images(self, step: int, tag: str, sr: torch.Tensor, hr: torch.Tensor) -> None:
        """SR tiles (top row) over their HR tiles (bottom row), [-1, 1] NCHW in, one image out."""
        if self.writer is None:
            return
        grid = torch.cat([torch.cat(list(sr), dim=-1), torch.cat(list(hr), dim=-1)], dim=-2)
        self.writer.add_image(tag, ((grid.float().cpu() + 1) / 2).clamp(0, 1), step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
