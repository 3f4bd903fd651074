"""Small in-memory face tables made of real sample chips (resized, no detector), for fast tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from agedistill.data.tables import FaceTable
from agedistill.faces.sources import UTKFaceReader


def chip_table(folder: Path, step: int, n: int, size: int = 32) -> FaceTable:
    """Every ``step``-th labelled chip of ``folder``, ``n`` at most, resized to ``size``."""
    recs = [r for r in UTKFaceReader(folder).records() if r.error is None][::step][:n]
    imgs = [np.asarray(Image.open(r.path).convert("RGB").resize((size, size))) for r in recs]
    images = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous()
    ages = torch.tensor([min(r.age, 100) for r in recs])
    return FaceTable(images, ages, pd.DataFrame({"crop": range(len(recs)), "age": ages.numpy()}))
