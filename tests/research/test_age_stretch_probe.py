"""The age-stretch probe's scores: per-source MAE and worst age group, against hand computations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from research.age_stretch_probe import stretch_scores, stretched


def test_scores_per_source_and_worst_group_by_hand() -> None:
    test = pd.DataFrame({"source": ["a", "a", "a", "b", "b"], "age": [10, 30, 70, 25, 35]})
    pred = np.array([12.0, 30.0, 60.0, 25.0, 31.0])
    s = stretch_scores(test, pred)
    assert s["mae"] == pytest.approx((2 + 0 + 10 + 0 + 4) / 5)
    a = s["by_source"]["a"]
    assert a["mae"] == pytest.approx(4.0)
    assert a["worst_group"] == "60+"  # 10 years off, against 2 (0-12) and 0 (20-39)
    assert a["worst_group_ratio"] == pytest.approx(10 / 4)
    b = s["by_source"]["b"]
    assert (b["worst_group"], b["worst_group_ratio"]) == ("20-39", pytest.approx(1.0))


def test_stretch_moves_old_faces_up_and_young_faces_down() -> None:
    test = pd.DataFrame({"source": ["a"] * 3, "age": [5, 40, 80]})
    pred = np.array([9.0, 40.0, 70.0])  # pulled toward the middle
    moved = stretched(pred, centre=40.0, k=0.1)
    assert moved.tolist() == pytest.approx([5.9, 40.0, 73.0])
    assert stretch_scores(test, moved)["mae"] < stretch_scores(test, pred)["mae"]
    assert stretched(pred, centre=40.0, k=0.0).tolist() == pred.tolist()
