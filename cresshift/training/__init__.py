"""Fine-tuning with discrete or continuous time (``cresshift finetune``); imported lazily."""
from __future__ import annotations

from typing import Any

__all__ = ["TrainSettings", "Trainer", "train"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import trainer

        return getattr(trainer, name)
    raise AttributeError(name)
