"""Age-estimation metrics: MAE, cumulative score, MAE by group; model cost."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

AGE_GROUPS = [(0, 12), (13, 19), (20, 39), (40, 59), (60, None)]
GENDERS = {0: "male", 1: "female"}
RACES = {0: "white", 1: "black", 2: "asian", 3: "indian", 4: "others"}


def mae(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean absolute error.

    >>> mae(np.array([1.0, 3.0]), np.array([2.0, 2.0]))
    1.0
    """
    return float(np.mean(np.abs(np.asarray(pred, float) - np.asarray(true, float))))


def cumulative_score(pred: np.ndarray, true: np.ndarray, max_theta: int = 10) -> list[float]:
    """CS(theta): fraction of faces with absolute error <= theta years, theta = 0..max_theta.

    >>> cumulative_score(np.array([1.0, 3.5]), np.array([1.0, 1.0]), 3)
    [0.5, 0.5, 0.5, 1.0]
    """
    err = np.abs(np.asarray(pred, float) - np.asarray(true, float))
    return [float(np.mean(err <= t)) for t in range(max_theta + 1)]


def std_coverage(pred: np.ndarray, std: np.ndarray, true: np.ndarray) -> float:
    """Fraction of faces whose true age lies within the predicted age plus or minus its std.

    >>> std_coverage(np.array([10.0, 20.0]), np.array([2.0, 1.0]), np.array([11.0, 25.0]))
    0.5
    """
    err = np.abs(np.asarray(pred, float) - np.asarray(true, float))
    return float(np.mean(err <= np.asarray(std, float)))


def group_label(age: int) -> str:
    """Name of the age group an age falls in, e.g. ``20-39`` or ``60+``."""
    for lo, hi in AGE_GROUPS:
        if age >= lo and (hi is None or age <= hi):
            return f"{lo}+" if hi is None else f"{lo}-{hi}"
    raise ValueError(f"age {age} is below every group")


def grouped_mae(pred: np.ndarray, rows: pd.DataFrame) -> dict[str, dict[str, float]]:
    """MAE per age group, and per gender and race where the table has those labels."""
    df = rows.assign(err=np.abs(np.asarray(pred, float) - rows["age"].to_numpy(float)))
    out: dict[str, dict[str, float]] = {
        "age_group": {g: float(e.mean()) for g, e in df.groupby(df["age"].map(group_label))["err"]}
    }
    for col, names in (("gender", GENDERS), ("race", RACES)):
        if col in df and df[col].notna().any():
            known = df[df[col].notna()]
            out[col] = {
                names.get(int(k), str(k)): float(e.mean()) for k, e in known.groupby(col)["err"]
            }
    return out


def file_size_mb(path: str | Path) -> float:
    """Size of a file in MB (10^6 bytes)."""
    return Path(path).stat().st_size / 1e6


@torch.inference_mode()
def cpu_latency(
    model: nn.Module, input_size: int, batch: int = 64, repeats: int = 20, warmup: int = 3
) -> dict[str, float]:
    """Median seconds per forward at ``batch`` and at batch 1; faces/s at ``batch``."""
    model.eval()

    def median_time(x: torch.Tensor, n: int) -> float:
        for _ in range(warmup):
            model(x)
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    t_batch = median_time(torch.randn(batch, 3, input_size, input_size), repeats)
    t_one = median_time(torch.randn(1, 3, input_size, input_size), max(repeats, 100))
    return {
        "faces_per_s": batch / t_batch,
        "latency_batch_ms": t_batch * 1e3,
        "latency_single_ms": t_one * 1e3,
    }
