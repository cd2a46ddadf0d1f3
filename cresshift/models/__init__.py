"""Networks (official UNetModelSwin, VQ-f4 autoencoder), the network denoiser, checkpoints, pipeline."""
from __future__ import annotations

from typing import Any

from .denoiser import PREDICT_TYPES, NetworkDenoiser

__all__ = ["NetworkDenoiser", "PREDICT_TYPES", "UNetModelSwin", "VQModelTorch"]


def __getattr__(name: str) -> Any:  # lazy: importing the networks is not needed for the math core
    if name == "UNetModelSwin":
        from .unet import UNetModelSwin
        return UNetModelSwin
    if name == "VQModelTorch":
        from .vq import VQModelTorch
        return VQModelTorch
    raise AttributeError(name)
