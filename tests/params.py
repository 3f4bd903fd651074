"""Params sections for tests: the validated models the trainers take, with small test values."""

from __future__ import annotations

from typing import Any

from agedistill.config import AgesParams, DistillParams, ModelParams, TrainParams

AGES = AgesParams(min_age=0, max_age=100)  # 101 classes


def train_params(epochs: int, batch_size: int = 32, **change: Any) -> TrainParams:
    """A short, single-threaded schedule."""
    base = {"lr": 3e-3, "weight_decay": 0.0, "seed": 0, "max_shift": 2, "flip": True, "threads": 1}
    return TrainParams(epochs=epochs, batch_size=batch_size, **{**base, **change})


def distill_params(train: TrainParams, **change: Any) -> DistillParams:
    """Every term on (soft targets at temperature 2, hints at student stage 1), mixup off, unless
    changed."""
    return DistillParams(
        train=train, **{"temperature": 2.0, "hint_stage": 1, "mixup": 0.0, **change}
    )


def model_params(arch: dict[str, Any]) -> ModelParams:
    return ModelParams(**arch)
