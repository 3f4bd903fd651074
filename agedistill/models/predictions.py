"""Batch prediction over a tensor of uint8 faces: logits, ages, flip TTA, MAE.

The age of a face is the median of its predicted age distribution
(:func:`agedistill.models.ordinal.median_age`): of all point estimates, the one with the least
expected absolute error, the error every MAE here measures.
"""

from __future__ import annotations

import torch
from torch import nn

from agedistill.models.inputs import normalize
from agedistill.models.ordinal import age_std, median_age, mixture_logits

# model config key: the factor on the distribution's spread that calibrates ``age_std``
# (agedistill.training.calibration); files without it read 1
STD_SCALE_KEY = "age_std_scale"


@torch.inference_mode()
def _logits(
    model: nn.Module, images: torch.Tensor, batch_size: int, mirror: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logits of the faces and, with ``mirror``, of their mirror images (one pass each)."""
    model.eval()
    dev = next(model.parameters()).device
    plain, mirrored = [], []
    for i in range(0, len(images), batch_size):
        x = normalize(images[i : i + batch_size]).to(dev)
        plain.append(model(x).cpu())
        if mirror:
            mirrored.append(model(x.flip(-1)).cpu())
    if not plain:
        return torch.empty(0), (torch.empty(0) if mirror else None)
    return torch.cat(plain), (torch.cat(mirrored) if mirror else None)


def predict_logits(
    model: nn.Module, images: torch.Tensor, batch_size: int = 256, flip: bool = False
) -> torch.Tensor:
    """Logits for uint8 faces (N, 3, H, W), in eval mode, batch by batch.

    ``flip`` (test-time augmentation): each face is also fed mirrored left-right, and the result is
    the log of the two class distributions' average
    (:func:`agedistill.models.ordinal.mixture_logits`).
    """
    plain, mirrored = _logits(model, images, batch_size, flip)
    return mixture_logits(plain, mirrored) if mirrored is not None and len(plain) else plain


def predict_ages(
    model: nn.Module, images: torch.Tensor, min_age: int, flip: bool = False
) -> torch.Tensor:
    """Age (the median of the predicted distribution) of each uint8 face (N, 3, H, W)."""
    return median_age(predict_logits(model, images, flip=flip), min_age)


def predict_ages_and_flipped(
    model: nn.Module, images: torch.Tensor, min_age: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ages without and with test-time flip augmentation, from one pass per orientation."""
    plain, mirrored = _logits(model, images, 256, True)
    if not len(plain):
        return torch.empty(0), torch.empty(0)
    return median_age(plain, min_age), median_age(mixture_logits(plain, mirrored), min_age)


def predict_ages_std_and_flipped(
    model: nn.Module, images: torch.Tensor, min_age: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Age and spread without flip, then age and spread with flip TTA: one pass each way."""
    plain, mirrored = _logits(model, images, 256, True)
    if not len(plain):
        return torch.empty(0), torch.empty(0), torch.empty(0), torch.empty(0)
    mixed = mixture_logits(plain, mirrored)
    return median_age(plain, min_age), age_std(plain), median_age(mixed, min_age), age_std(mixed)


def predict_age_and_std(
    model: nn.Module, images: torch.Tensor, min_age: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Age and the age distribution's standard deviation of each uint8 face (no flip)."""
    logits = predict_logits(model, images)
    if not len(logits):
        return torch.empty(0), torch.empty(0)
    return median_age(logits, min_age), age_std(logits)


def age_mae(model: nn.Module, images: torch.Tensor, ages: torch.Tensor, min_age: int) -> float:
    """Mean absolute error of the predicted age over a table of faces."""
    return float((predict_ages(model, images, min_age) - ages.float()).abs().mean())
