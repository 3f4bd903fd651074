"""Face boxes against ground truth: IoU, one-to-one matching, the shared photos' annotations."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two ``(x1, y1, x2, y2)`` boxes.

    >>> iou([0, 0, 10, 10], [5, 0, 15, 10])
    0.3333333333333333
    """
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def matched(truth: Sequence[Sequence[float]], found: Sequence[Sequence[float]],
            thresh: float = 0.5) -> int:  # fmt: skip
    """Ground-truth boxes matched one to one (greedily, by IoU) by a found box with IoU >=
    ``thresh``.

    >>> matched([[0, 0, 10, 10], [20, 20, 30, 30]], [[1, 1, 10, 10], [0, 0, 9, 9]])
    1
    """
    pairs = sorted(
        ((iou(g, f), i, j) for i, g in enumerate(truth) for j, f in enumerate(found)), reverse=True
    )
    used_truth, used_found = set(), set()
    for score, i, j in pairs:
        if score >= thresh and i not in used_truth and j not in used_found:
            used_truth.add(i)
            used_found.add(j)
    return len(used_truth)


def annotated_boxes(photos: Path) -> dict[str, list[np.ndarray]]:
    """The ``x1, y1, x2, y2`` boxes of ``photos/manifest.csv`` (column ``gt_boxes_ltwh``), by the
    file's path relative to ``photos``; files without annotations are left out."""
    import pandas as pd

    table = pd.read_csv(photos / "manifest.csv").dropna(subset=["gt_boxes_ltwh"])
    boxes = {}
    for path, spec in zip(table["path"], table["gt_boxes_ltwh"], strict=True):
        ltwh = [np.array([float(v) for v in box.split(",")]) for box in spec.split(";")]
        boxes[path] = [np.array([x, y, x + w, y + h]) for x, y, w, h in ltwh]
    return boxes
