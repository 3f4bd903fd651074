"""``research.view_reading``: its one- and two-view readings are what ``predict``'s model reads."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch

from agedistill.evaluation.metrics import mae
from research.view_reading import READINGS, view, view_reading

if TYPE_CHECKING:
    from tests.research.conftest import ServedReading


def test_a_view_is_the_crop_cut_moved_and_resized() -> None:
    faces = torch.arange(2 * 3 * 6 * 6, dtype=torch.uint8).view(2, 3, 6, 6)
    assert torch.equal(view(faces, 0, 0, 0, 6), faces.float())
    assert torch.equal(view(faces, 2, 1, -1, 4), faces[..., 2:6, 0:4].float())
    with pytest.raises(ValueError, match="leaves the crop"):
        view(faces, 2, 0, 2, 4)


def test_one_and_two_views_read_as_the_served_model_reads(
    served: ServedReading, workspace: Path
) -> None:
    got = view_reading(served.model, workspace)
    test, true = served.test, served.true
    for reading, flip in (("once", False), ("flip", True)):
        age, _ = served.ages[flip]
        assert got[reading]["mae"] == pytest.approx(mae(age, true), abs=0.05)
        keep = (test["source"] == "a").to_numpy()
        assert got[reading]["by_source"]["a"]["n"] == keep.sum()
        assert got[reading]["by_source"]["a"]["mae"] == pytest.approx(
            mae(age[keep], true[keep]), abs=0.08
        )
    views = {r: got[r]["views"] for r in READINGS}
    assert views == {"once": 1, "flip": 2, "flip_zoom": 4, "flip_shifts": 10, "flip_all": 12}
    assert got["flip_all"]["mae"] != pytest.approx(got["flip"]["mae"], abs=1e-4)
    with pytest.raises(ValueError, match="part must be one of"):
        view_reading(served.model, workspace, part="train")
