"""Batch augmentation of uint8 faces (shifts, flips, jitter, mixup) and seeded index batches."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image


def augment(
    images: torch.Tensor,
    max_shift: int,
    flip: bool,
    generator: torch.Generator,
    *,
    rotate: float = 0.0,
    scale: float = 0.0,
    color: float = 0.0,
) -> torch.Tensor:
    """Random flips, shifts of up to ``max_shift`` pixels (edge-replicated) and optional jitter.

    ``rotate`` (degrees) and ``scale`` (relative) draw one similarity transform per face
    (:func:`similarity_jitter`); ``color`` jitters brightness, contrast and saturation per face
    (:func:`color_jitter`). Each is drawn only when non-zero, so runs without them draw exactly
    the random numbers they always did. The numbers come from ``generator`` (a CPU generator)
    and the work runs on ``images.device``, so faces held on a GPU are augmented there, with the
    same draws as on the CPU. Returns float images in [0, 255].
    """
    if rotate > 0 or scale > 0:
        images = similarity_jitter(images, rotate, scale, generator)
    if color > 0:
        images = color_jitter(images, color, generator)
    dev = images.device  # random numbers come from the (CPU) generator, the work runs on `dev`
    if flip:
        mask = (torch.rand(len(images), generator=generator) < 0.5).to(dev)
        images = torch.where(mask[:, None, None, None], images.flip(-1), images)
    if max_shift > 0:
        b, _, h, w = images.shape
        padded = F.pad(images.float(), [max_shift] * 4, mode="replicate")
        dx = torch.randint(0, 2 * max_shift + 1, (b,), generator=generator).to(dev)
        dy = torch.randint(0, 2 * max_shift + 1, (b,), generator=generator).to(dev)
        rows = (dy[:, None] + torch.arange(h, device=dev))[:, None, :, None]  # (B, 1, H, 1)
        cols = (dx[:, None] + torch.arange(w, device=dev))[:, None, None, :]  # (B, 1, 1, W)
        bidx = torch.arange(b, device=dev)[:, None, None, None]
        cidx = torch.arange(images.shape[1], device=dev)[None, :, None, None]
        images = padded[bidx, cidx, rows, cols]
    return images


def similarity_jitter(
    images: torch.Tensor, rotate: float, scale: float, generator: torch.Generator
) -> torch.Tensor:
    """Rotate each face by U(-rotate, rotate) degrees and zoom it by U(1-scale, 1+scale).

    One batched ``affine_grid``/``grid_sample`` (bilinear, border-replicated), so the faces keep
    their size and no black corners appear. Returns float images in [0, 255].
    """
    b = len(images)
    angle = (torch.rand(b, generator=generator) * 2 - 1) * rotate * torch.pi / 180
    zoom = 1 + (torch.rand(b, generator=generator) * 2 - 1) * scale
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack(
        [torch.stack([cos, -sin, torch.zeros(b)], 1), torch.stack([sin, cos, torch.zeros(b)], 1)], 1
    ).to(images.device)  # (B, 2, 3): output pixel -> input pixel, in [-1, 1] coordinates
    x = images.float()
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def color_jitter(images: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    """Scale each face's brightness, contrast and saturation by factors in U(1-s, 1+s).

    Contrast scales about the face's mean grey level, saturation about each pixel's grey level.
    Returns float images clamped to [0, 255].
    """
    b = len(images)
    factors = 1 + (torch.rand(3, b, 1, 1, 1, generator=generator) * 2 - 1) * strength
    factors = factors.to(images.device)
    x = images.float() * factors[0]
    mean_grey = _grey(x).mean((2, 3), keepdim=True)
    x = (x - mean_grey) * factors[1] + mean_grey
    grey = _grey(x)
    x = (x - grey) * factors[2] + grey
    return x.clamp(0, 255)


def _grey(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma of RGB images (B, 3, H, W) -> (B, 1, H, W)."""
    return 0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]


def mix_pairs(
    x: torch.Tensor, alpha: float, rng: np.random.Generator, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, float]:
    r"""Mixup (Zhang et al., 2018): blend each face with a random partner from the same batch.

    One weight :math:`\lambda \sim \mathrm{Beta}(\alpha, \alpha)` per batch; returns
    ``lam * x + (1 - lam) * x[partner]``, the partner indices and ``lam``. Distillation feeds the
    blend to the teachers too, so their soft targets and hints describe the very image the student
    sees: new inputs with informative targets, not only a blended label.
    """
    if alpha <= 0:
        raise ValueError("mixup alpha must be positive")
    lam = float(rng.beta(alpha, alpha))
    partner = torch.randperm(len(x), generator=generator).to(x.device)
    return lam * x + (1 - lam) * x[partner], partner, lam


def batches(
    n: int, batch_size: int, shuffle: bool, generator: torch.Generator | None = None
) -> Iterator[torch.Tensor]:
    """Index batches over ``range(n)``; the last partial batch is kept."""
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    yield from order.split(batch_size)
