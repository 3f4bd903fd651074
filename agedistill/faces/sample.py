"""Choose a small subset of a labelled folder, stratified over age bin, gender and race."""

from __future__ import annotations

import numpy as np
import pandas as pd

from agedistill.faces.sources import make_reader


def stratified_sample(
    folder: str, n: int, seed: int = 0, age_bin: int = 10, reader: str = "utkface"
) -> pd.DataFrame:
    """Pick ``n`` labelled files proportionally from every (age bin, gender, race) cell.

    Systematic stratified sampling: files are shuffled within their cell and ranked; the ``n``
    files with the smallest ``(rank + u) / cell_size`` are taken, so every cell contributes in
    proportion to its size (and every cell with ``size >= N / n`` contributes at least one).
    """
    recs = [r for r in make_reader(reader, folder).records() if r.error is None]
    df = pd.DataFrame([r.__dict__ for r in recs])
    if n > len(df):
        raise ValueError(f"asked for {n} files but {folder} has {len(df)} labelled ones")
    rng = np.random.default_rng(seed)
    df["cell"] = list(zip(df["age"] // age_bin, df["gender"], df["race"], strict=True))
    df = df.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    rank = df.groupby("cell").cumcount()
    size = df.groupby("cell")["cell"].transform("size")
    df["key"] = (rank + rng.random(len(df))) / size
    return df.nsmallest(n, "key").drop(columns=["cell", "key", "error"]).sort_values("path")
