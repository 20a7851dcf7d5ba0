"""Unified fine-tuning of M3-layout models (BGE-M3's recipe: InfoNCE per mode + self-distillation)."""

from m3_rag.train.config import TrainConfig
from m3_rag.train.data import DataError, TrainExample, load_jsonl
from m3_rag.train.losses import LossWeights, M3Loss, m3_loss
from m3_rag.train.trainer import Trainer, TrainResult, train

__all__ = [
    "TrainConfig",
    "TrainExample",
    "DataError",
    "load_jsonl",
    "LossWeights",
    "M3Loss",
    "m3_loss",
    "Trainer",
    "TrainResult",
    "train",
]
