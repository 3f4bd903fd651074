"""Fixed test parts (``align.sources[].test_list``): the same faces whatever else changes."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from agedistill.data.splits import SplitError, listed_rows, make_split, read_test_list

ROOT = Path(__file__).resolve().parents[2]


def manifest(n: int = 120) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        src = "a" if i % 2 else "b"
        age = int(rng.integers(1, 90))
        rows.append({"source": src, "path": f"/data/{src}/img/{i:03d}.jpg", "age": age,
                     "sha1": f"{i:040d}"})  # fmt: skip
    return pd.DataFrame(rows)


def test_listed_files_are_the_test_part_and_their_source_gets_no_other_test_rows():
    df = manifest()
    listed = [f"img/{i:03d}.jpg" for i in range(1, 40, 2)] + ["img/999.jpg"]  # one not aligned
    table = make_split(df, seed=0, val_fraction=0.2, test_fraction=0.25,
                       test_lists={"a": ("/data/a", listed)})  # fmt: skip
    a = table[table["source"] == "a"]
    test_paths = set(a.loc[a["split"] == "test", "path"])
    assert test_paths == {f"/data/a/img/{i:03d}.jpg" for i in range(1, 40, 2)}
    assert (a["split"] == "val").any() and (a["split"] == "train").any()
    b = table[table["source"] == "b"]  # no list: its random test part, as before
    assert 0 < (b["split"] == "test").sum() < len(b)


def test_the_test_part_does_not_move_when_other_faces_come_and_go():
    df = manifest()
    listed = [f"img/{i:03d}.jpg" for i in range(1, 60, 4)]
    lists = {"a": ("/data/a", listed)}
    before = make_split(df, seed=0, test_lists=lists)
    after = make_split(df.drop(index=[3, 7, 10, 11, 12]), seed=0, test_lists=lists)  # detector
    test = {t: set(x.loc[(x["split"] == "test") & (x["source"] == "a"), "path"])
            for t, x in (("before", before), ("after", after))}  # fmt: skip
    assert test["before"] - {"/data/a/img/003.jpg", "/data/a/img/007.jpg",
                             "/data/a/img/011.jpg"} == test["after"]  # fmt: skip


def test_a_listed_faces_whole_group_joins_the_test_part():
    df = manifest()
    df.loc[5, "sha1"] = df.loc[6, "sha1"]  # the same image in both sources
    table = make_split(df, seed=0, test_lists={"a": ("/data/a", ["img/005.jpg"])})
    assert set(table.loc[[5, 6], "split"]) == {"test"}


def test_paths_match_relative_to_the_folder_whatever_its_spelling():
    df = pd.DataFrame({"path": ["/x/y/../y/a/b.jpg", "/x/y/c.jpg"]})
    assert listed_rows(df, "/x/y/", ["a/b.jpg", "./d.jpg"]).tolist() == [True, False]


def test_read_test_list_needs_a_file_column(tmp_path):
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    good.write_text("file,age\na.jpg,3\n")
    bad.write_text("name\na.jpg\n")
    assert read_test_list(good) == ["a.jpg"]
    with pytest.raises(SplitError, match="'file' column"):
        read_test_list(bad)
    with pytest.raises(SplitError, match="cannot read"):
        read_test_list(tmp_path / "missing.csv")


@pytest.mark.parametrize("source", ["utkface", "aaf"])
def test_the_shipped_lists_hold_every_held_out_face_of_the_accuracy_tests(source):
    listed = set(read_test_list(ROOT / "data/test_parts" / f"{source}.csv"))
    assert len(listed) == 2002
    with open(ROOT / "tests/data" / f"{source}_heldout.csv", newline="") as f:
        held_out = [r["file"] for r in csv.DictReader(f)]
    assert len(held_out) == 154 and set(held_out) <= listed
