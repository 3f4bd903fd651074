"""In-memory face tables, normalisation and batch augmentation.

Aligned crops are small (64 px), so a whole split (11.5k faces: 140 MB as uint8) is held in memory
as one tensor: no per-sample file I/O, no worker processes, deterministic batches from a seed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image

MEAN, STD = 0.5, 0.25


@dataclass
class FaceTable:
    """Faces (N, 3, S, S) uint8, integer ages (N,) and the table rows they came from."""

    images: torch.Tensor
    ages: torch.Tensor
    rows: pd.DataFrame

    def __len__(self) -> int:
        return len(self.ages)

    def labels(self, min_age: int) -> torch.Tensor:
        """Class index of each face (age minus ``min_age``)."""
        return self.ages - min_age


def load_table(csv: str | Path, crops_dir: str | Path, size: int | None = None) -> FaceTable:
    """Read a split CSV and its crops; ``size`` resizes crops if the model wants another size."""
    rows = pd.read_csv(csv)
    crops_dir = Path(crops_dir)
    arrays = []
    for name in rows["crop"]:
        with Image.open(crops_dir / name) as im:
            im = im.convert("RGB")
            if size and im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BILINEAR)
            arrays.append(np.asarray(im))
    if arrays:
        images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    else:
        images = torch.empty(0, 3, size or 1, size or 1, dtype=torch.uint8)
    ages = torch.tensor(rows["age"].to_numpy(), dtype=torch.long)
    return FaceTable(images, ages, rows)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float32 model input, roughly in [-2, 2]."""
    return (images.float() / 255.0 - MEAN) / STD


def augment(
    images: torch.Tensor, max_shift: int, flip: bool, generator: torch.Generator
) -> torch.Tensor:
    """Random horizontal flips and shifts of up to ``max_shift`` pixels (edge-replicated)."""
    if flip:
        mask = torch.rand(len(images), generator=generator) < 0.5
        images = torch.where(mask[:, None, None, None], images.flip(-1), images)
    if max_shift > 0:
        b, _, h, w = images.shape
        padded = F.pad(images.float(), [max_shift] * 4, mode="replicate")
        dx = torch.randint(0, 2 * max_shift + 1, (b,), generator=generator)
        dy = torch.randint(0, 2 * max_shift + 1, (b,), generator=generator)
        rows = (dy[:, None] + torch.arange(h))[:, None, :, None]  # (B, 1, H, 1)
        cols = (dx[:, None] + torch.arange(w))[:, None, None, :]  # (B, 1, 1, W)
        bidx = torch.arange(b)[:, None, None, None]
        cidx = torch.arange(images.shape[1])[None, :, None, None]
        images = padded[bidx, cidx, rows, cols]
    return images


def batches(
    n: int, batch_size: int, shuffle: bool, generator: torch.Generator | None = None
) -> Iterator[torch.Tensor]:
    """Index batches over ``range(n)``; the last partial batch is kept."""
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    yield from order.split(batch_size)
