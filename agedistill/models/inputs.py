"""How a network reads faces: uint8 crops to normalised float input, resized to its side."""

from __future__ import annotations

import torch
import torch.nn.functional as F

MEAN, STD = 0.5, 0.25


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float32 model input, roughly in [-2, 2]."""
    return (images.float() / 255.0 - MEAN) / STD


def resize_faces(x: torch.Tensor, size: int) -> torch.Tensor:
    """Float faces (B, 3, H, W) resized to ``size`` x ``size`` (bilinear, antialiased).

    Close to the PIL bilinear resize :func:`load_table` applies, so a network trained on crops
    resized at load time reads the same faces when another network's batch is resized for it.
    Returns ``x`` itself when it already has that size.
    """
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
