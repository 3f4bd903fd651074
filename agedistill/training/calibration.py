"""Calibrating ``age_std``: one factor on the predicted spread, fitted on the validation part.

The spread of a classifier's age distribution is not an error bar: trained with cross-entropy it
is too narrow or too wide by a roughly constant factor. :func:`fit_std_scale` finds the factor
``s`` such that the true age of a one-sigma share (68.27 %) of validation faces lies within the
predicted age (the distribution's median) +- ``s * std``; the model file records it as
``age_std_scale`` and every reader of the model (``predict``, ``export``, ``evaluate``)
multiplies the spread by it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from agedistill.data.tables import FaceTable
from agedistill.models.files import load_model, save_model
from agedistill.models.predictions import STD_SCALE_KEY, predict_age_and_std

ONE_SIGMA = 0.6827  # share of a normal distribution within one standard deviation of its mean


def _coverage(pred: np.ndarray, std: np.ndarray, true: np.ndarray) -> float:
    # the evaluate stage's std_coverage (evaluation.metrics), which training may not import
    return float(np.mean(np.abs(pred - true) <= std))


def fit_std_scale(
    pred: np.ndarray, std: np.ndarray, true: np.ndarray, coverage: float = ONE_SIGMA
) -> float:
    """The factor on ``std`` that puts ``coverage`` of the true ages within ``pred`` +- it.

    >>> fit_std_scale(np.zeros(4), np.ones(4), np.array([1.0, 2.0, 3.0, 4.0]), coverage=0.5)
    2.5
    """
    if not 0 < coverage < 1:
        raise ValueError(f"coverage must be in (0, 1), got {coverage}")
    if len(pred) == 0:
        raise ValueError("no faces to calibrate age_std on")
    ratio = np.abs(np.asarray(pred, float) - np.asarray(true, float)) / np.maximum(
        np.asarray(std, float), 1e-6
    )
    return float(np.quantile(ratio, coverage))


def calibrate_model_file(path: str | Path, val: FaceTable) -> dict[str, Any]:
    """Fit ``age_std_scale`` of the age model in ``path`` on ``val`` and save it into the file.

    ``val`` holds faces at the model's input side. Returns the scale and the validation
    coverage of the predicted age +- ``age_std`` before and after it.
    """
    model, config = load_model(path)
    pred, std = (t.numpy() for t in predict_age_and_std(model, val.images, config["min_age"]))
    true = val.ages.numpy()
    scale = fit_std_scale(pred, std, true)
    config = {k: v for k, v in config.items() if k != "agedistill_version"}
    save_model(path, model, {**config, STD_SCALE_KEY: scale})
    return {
        STD_SCALE_KEY: scale,
        "val_std_coverage_raw": _coverage(pred, std, true),
        "val_std_coverage": _coverage(pred, std * scale, true),
    }
