"""``research.label_audit``: faces every model misreads the same way; scores without them."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pytest

from research.label_audit import audit, label_audit, read_part, suspects

if TYPE_CHECKING:
    from tests.research.conftest import ServedReading


def _write(tmp_path: Path, ages: dict[str, list], rows: dict[str, list]) -> tuple[Path, Path]:
    predictions, split = tmp_path / "predictions.csv", tmp_path / "test.csv"
    pd.DataFrame(ages).to_csv(predictions, index=False)
    pd.DataFrame(rows).to_csv(split, index=False)
    return predictions, split


def test_only_faces_every_model_misreads_far_and_the_same_way_are_listed() -> None:
    faces = pd.DataFrame({
        "age": [80, 80, 80, 30],
        "a": [10.0, 10.0, 10.0, 70.0],
        "b": [15.0, 60.0, 120.0, 61.0],  # near enough on the 2nd face; too old on the 3rd
    })  # fmt: skip
    assert suspects(faces, ["a", "b"], 30.0).tolist() == [True, False, False, True]
    assert suspects(faces, ["a", "b"], 40.0).tolist() == [True, False, False, False]


def test_scores_with_and_without_the_suspects_by_hand(tmp_path: Path) -> None:
    predictions, split = _write(
        tmp_path,
        {"crop": ["1.png", "2.png", "3.png", "4.png", "5.png"],
         "true_age": [80, 70, 30, 25, 40],
         "student": [20.0, 60.0, 32.0, 25.0, 41.0],
         "twin": [18.0, 65.0, 31.0, 26.0, 42.0]},
        {"crop": ["1.png", "2.png", "3.png", "4.png", "5.png"],
         "source": ["s", "s", "s", "s", "t"],
         "path": ["/d/s/images/a.jpg", "/d/s/images/b.jpg", "/d/s/images/c.jpg",
                  "/d/s/images/d.jpg", "/d/t/valid/e.jpg"],
         "age": [80, 70, 30, 25, 40]},
    )  # fmt: skip
    got = label_audit(predictions, split)
    assert [(s["source"], s["file"], s["age"]) for s in got["suspects"]] == [
        ("s", "images/a.jpg", 80)
    ]
    every, kept = got["by_source"]["s"]["all"], got["by_source"]["s"]["without_suspects"]
    assert every["mae"] == pytest.approx((60 + 10 + 2 + 0) / 4)
    assert (every["worst_group"], every["worst_group_ratio"]) == ("60+", pytest.approx(35 / 18))
    assert kept["n"] == 3 and kept["mae"] == pytest.approx(12 / 3)
    assert (kept["worst_group"], kept["worst_group_ratio"]) == ("60+", pytest.approx(10 / 4))
    assert got["by_source"]["t"]["without_suspects"]["n"] == 1


def test_a_split_that_is_not_the_predictions_run_s_is_an_error(tmp_path: Path) -> None:
    predictions, split = _write(
        tmp_path,
        {"crop": ["1.png"], "true_age": [30], "student": [31.0]},
        {"crop": ["1.png"], "source": ["s"], "path": ["/d/a.jpg"], "age": [29]},
    )
    with pytest.raises(ValueError, match="does not hold the faces"):
        label_audit(predictions, split)
    pd.DataFrame({"crop": ["1.png"], "true_age": [30]}).to_csv(predictions, index=False)
    with pytest.raises(ValueError, match="no 'student' column"):
        label_audit(predictions, split)


def test_a_part_is_read_as_evaluate_reads_it_and_audited(
    tmp_path: Path, workspace: Path, served: ServedReading
) -> None:
    ws = tmp_path / "run"
    shutil.copytree(workspace, ws)
    split = ws / "data" / "split"
    rows = served.test.assign(path=[f"/data/src/crops/{c}" for c in served.test["crop"]])
    rows.to_csv(split / "train.csv", index=False)  # the part read: the 30 real chips
    ages = read_part(ws, "train", {"student": served.model, "twin": served.model})
    assert ages["crop"].tolist() == served.test["crop"].tolist()
    np.testing.assert_allclose(ages["student"], served.ages[False][0], atol=1e-3)
    np.testing.assert_array_equal(ages["true_age"], served.true)
    got = audit(ages, split / "train.csv", min_error=10.0)
    far = np.abs(served.ages[False][0] - served.true) >= 10.0
    assert 0 < far.sum() < len(far)  # some faces listed, not all
    assert [s["file"] for s in got["suspects"]] == [
        f"crops/{c}" for c in served.test["crop"][far]
    ]  # one model read twice: every face it misreads by 10 years is listed
    with pytest.raises(ValueError, match="part must be one of"):
        read_part(ws, "holdout")
