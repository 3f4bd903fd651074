"""The cross-dataset protocol: its tables and its summary (the training is the class teacher's)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from agedistill.config import load_params
from research.cross_dataset import Grid, cross_tables, table

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A pipeline folder whose manifest has 3 sources of 120 faces, one image shared by two."""
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    rng = np.random.default_rng(0)
    rows = [{"crop": f"{src}{i}.png", "source": src, "path": f"/{src}/{i}.jpg",
             "sha1": f"{src}-{i}", "age": int(rng.integers(1, 90))}
            for src in ("utkface", "aaf", "appa_real") for i in range(120)]  # fmt: skip
    rows[5]["sha1"] = rows[200]["sha1"]  # the same image in utkface and aaf
    (tmp_path / "data" / "aligned").mkdir(parents=True)
    pd.DataFrame(rows).to_csv(tmp_path / "data" / "aligned" / "manifest.csv", index=False)
    return tmp_path


def test_held_out_source_is_the_whole_test_part_and_nothing_else(workspace: Path) -> None:
    grid = Grid(workspace, workspace / "out")
    parts = cross_tables(grid, load_params(workspace / "params.yaml"), "aaf")
    test = parts["test"]
    assert (test["source"] == "aaf").sum() == 120  # every face of it
    assert "aaf" not in set(parts["train"]["source"]) | set(parts["val"]["source"])
    # the utkface copy of an aaf image follows it into the test part: no leak through content
    assert test.loc[test["source"] != "aaf", "crop"].tolist() == ["utkface5.png"]
    assert len(parts["val"]) > 0 and set(parts["train"]["source"]) == {"utkface", "appa_real"}


def _run(out: Path, holdout: str, mae: float) -> None:
    test = {"mae": mae, "cs5": 0.5, "mae_age_group": {"0-12": mae + 1, "60+": mae + 3}}
    result = {"holdout": holdout, "trained_on": ["aaf", "utkface"], "n_test": 1379,
              "val_mae": 5.5, "test": test, "in_domain_test_rows": 1379,
              "cross_on_in_domain_rows": {"mae": mae + 0.1},
              "in_domain_model_on_same_rows": {"mae": 6.9}, "train_wall_s": 10.0}  # fmt: skip
    (out / "runs").mkdir(parents=True, exist_ok=True)
    (out / "runs" / f"{holdout}.json").write_text(json.dumps(result))


def test_summary_names_the_worst_group_and_sets_cross_beside_in_domain(tmp_path: Path) -> None:
    _run(tmp_path, "appa_real", 9.25)
    _run(tmp_path, "aaf", 7.0)  # with an utkface copy of one of its images in the test part
    run = json.loads((tmp_path / "runs" / "aaf.json").read_text())
    run["test"]["by_source"] = {"aaf": {**run["test"], "n": 2000, "mae": 6.5},
                                "utkface": {**run["test"], "n": 1, "mae": 30.0}}  # fmt: skip
    (tmp_path / "runs" / "aaf.json").write_text(json.dumps(run))
    summary = table(tmp_path)
    aaf, row = summary["runs"]  # sorted by file name
    assert aaf["mae"] == 6.5 and aaf["n_test"] == 2000  # the held-out source's own rows
    assert row["worst_group"] == "60+" and row["worst_group_mae"] == pytest.approx(12.25)
    md = summary["markdown"].splitlines()
    assert md[3] == ("| appa_real | aaf + utkface | 1,379 | **9.25** | 0.500 | 60+ (12.25) | "
                     "9.35 / 6.90 (1,379 faces) | 5.50 |")  # fmt: skip
