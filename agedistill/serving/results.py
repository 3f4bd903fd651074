"""What ``predict`` finds: :class:`FacePrediction` per face, :class:`ImageResult` per input.

Plain data shared by the modules that make results (:mod:`agedistill.serving.predict`,
:mod:`agedistill.serving.predict_batch`), write them (:mod:`agedistill.serving.rows`) and draw
them (:mod:`agedistill.serving.annotate`); it imports none of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class FacePrediction:
    """One face: box ``(x, y, w, h)`` in original-image pixels, detection probability, age."""

    face: int
    x: float
    y: float
    w: float
    h: float
    det_prob: float
    age: float
    age_std: float
    landmarks: np.ndarray = field(repr=False, compare=False)  # (5, 2), original-image pixels


@dataclass
class ImageResult:
    """All faces of one input file, or the reason it has none (``error``)."""

    path: str
    faces: list[FacePrediction]
    error: str | None = None
    read: bool = True  # False when the file could not be decoded (faceless images were read)
