"""``research.flip_reading``: evaluate's two readings are what ``predict``'s model reads."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pytest

from agedistill.evaluation.metrics import grouped_mae, mae
from agedistill.serving.loading import load_age_model
from research.flip_reading import flip_reading

if TYPE_CHECKING:
    from tests.research.conftest import ServedReading


def test_both_readings_match_the_served_model(served: ServedReading, workspace: Path) -> None:
    got = flip_reading(served.model, workspace)
    test, true = served.test, served.true
    for reading, flip in (("one_way", False), ("flip", True)):
        age, std = served.ages[flip]
        r = got[reading]
        assert r["mae"] == pytest.approx(mae(age, true), abs=0.02)
        for source, s in r["by_source"].items():
            keep = (test["source"] == source).to_numpy()
            assert s["n"] == keep.sum()
            assert s["mae"] == pytest.approx(mae(age[keep], true[keep]), abs=0.02)
            inside = np.abs(age[keep] - true[keep]) <= std[keep]
            assert s["std_coverage"] == pytest.approx(inside.mean(), abs=1 / keep.sum() + 1e-9)
            groups = grouped_mae(age[keep], test[keep])["age_group"]
            worst = max(groups.values()) / mae(age[keep], true[keep])
            assert s["worst_group_ratio"] == pytest.approx(worst, abs=0.02)
    assert got["flip"]["mae"] != pytest.approx(got["one_way"]["mae"], abs=1e-4)


def test_the_validation_part_is_read_when_asked(workspace: Path) -> None:
    split = workspace / "data" / "split"
    test = pd.read_csv(split / "test.csv")
    val = test[test["source"] == "a"].iloc[:7]
    val.to_csv(split / "val.csv", index=False)
    got = flip_reading(load_age_model().path, workspace, part="val")
    assert got["part"] == "val"
    assert {s: v["n"] for s, v in got["one_way"]["by_source"].items()} == {"a": 7}
    with pytest.raises(ValueError, match="part must be one of"):
        flip_reading(load_age_model().path, workspace, part="train")
