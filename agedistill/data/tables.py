"""In-memory face tables: a split's aligned crops as one uint8 tensor, with ages and rows.

Aligned crops are small (19,338 training faces at 144 px: 1.2 GB as uint8), so a whole split is
held in memory as one tensor: no per-sample file I/O, no worker processes, deterministic batches
from a seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image


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


UNLABELLED_AGE = -1  # the age of every face of an unlabelled table: no valid class


def load_table(
    csv: str | Path, crops_dir: str | Path, size: int | None = None, labelled: bool = True
) -> FaceTable:
    """Read a split CSV and its crops; ``size`` resizes crops if the model wants another size.

    ``labelled=False`` reads a table of faces without ages (``unlabelled.csv``): every age is
    :data:`UNLABELLED_AGE`, which no loss accepts as a class.
    """
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
    if labelled:
        ages = torch.tensor(rows["age"].to_numpy(), dtype=torch.long)
    else:
        ages = torch.full((len(rows),), UNLABELLED_AGE, dtype=torch.long)
    return FaceTable(images, ages, rows)
