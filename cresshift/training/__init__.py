"""Fine-tuning with discrete or continuous time (``cresshift finetune``)."""
from .trainer import Trainer, TrainSettings, train

__all__ = ["TrainSettings", "Trainer", "train"]
