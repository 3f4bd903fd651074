"""Splits of several sources on the shared folders' real labels and file hashes.

Reading and hashing the 26,917 labelled files of UTKFace, AAF and APPA-REAL takes tens of seconds,
so these live apart from the unit tests; no alignment is needed.
"""

from __future__ import annotations

import pandas as pd
import pytest

from agedistill.data.splits import SplitError, check_no_leakage, make_split
from tests.unit.test_splits import manifest

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def three_sources(utkface, aaf, appa_real) -> pd.DataFrame:
    """A manifest-like table of every labelled file of UTKFace, AAF and APPA-REAL."""
    import hashlib
    from pathlib import Path

    from agedistill.faces.sources import make_reader

    rows = []
    for name, reader in (
        ("utkface", make_reader("utkface", utkface)),
        ("aaf", make_reader("csv", aaf, "labels.csv")),
        ("appa_real", make_reader("csv", appa_real, "labels.csv")),
    ):
        for r in reader.records():
            if r.error is None:
                sha1 = hashlib.sha1(Path(r.path).read_bytes()).hexdigest()
                rows.append({"source": name, "source_part": r.part, "path": r.path,
                             "age": r.age, "sha1": sha1})  # fmt: skip
    df = pd.DataFrame(rows)
    df["crop"] = [f"{i:06d}.png" for i in range(len(df))]
    return df


def test_each_source_gets_its_test_size_and_a_fixed_test_part_is_kept(three_sources) -> None:
    out = make_split(
        three_sources, test_size=2000, val_fraction=0.1, test_parts={"appa_real": "valid"}
    )
    counts = out.groupby(["source", "split"]).size().unstack(fill_value=0)
    for src in ("utkface", "aaf"):
        assert counts.loc[src, "test"] == pytest.approx(2000, abs=60)
        assert counts.loc[src, "val"] / counts.loc[src].sum() == pytest.approx(0.1, abs=0.01)
    appa = out[out["source"] == "appa_real"]
    assert (appa.loc[appa["source_part"] == "valid", "split"] == "test").all()
    assert not (appa.loc[appa["source_part"] == "train", "split"] == "test").any()
    check_no_leakage(out)


def test_adding_sources_leaves_the_first_sources_parts_as_they_were(three_sources) -> None:
    utk = three_sources[three_sources["source"] == "utkface"]
    alone = make_split(utk, test_size=2000)
    together = make_split(three_sources, test_size=2000, test_parts={"appa_real": "valid"})
    together = together[together["source"] == "utkface"]
    assert together["split"].tolist() == alone["split"].tolist()


def test_cross_dataset_holds_one_source_out_entirely(three_sources) -> None:
    for held in ("utkface", "aaf", "appa_real"):
        out = make_split(three_sources, method="cross_dataset", holdout=held, val_fraction=0.1)
        assert (out.loc[out["source"] == held, "split"] == "test").all()
        others = out[out["source"] != held]
        # only exact copies of a held-out image may follow it into the test part
        copies = others["sha1"].isin(set(out.loc[out["source"] == held, "sha1"]))
        assert (others.loc[~copies, "split"] != "test").all()
        assert (others.loc[copies, "split"] == "test").all()
        assert set(others["split"]) == {"train", "val"}
        check_no_leakage(out)


def test_an_identical_image_in_two_sources_ends_on_one_side() -> None:
    df = pd.concat([manifest(400).assign(source="a"), manifest(400, seed=1).assign(source="b")])
    df = df.reset_index(drop=True)
    df.loc[400:, "sha1"] = [f"b{i}" for i in range(400)]
    df.loc[400:409, "sha1"] = df.loc[0:9, "sha1"].to_numpy()  # b's first 10 files are a's copies
    for kwargs in ({}, {"method": "cross_dataset", "holdout": "a"},
                   {"method": "cross_dataset", "holdout": "b"}):  # fmt: skip
        out = make_split(df, **kwargs)
        check_no_leakage(out)
        assert (out.loc[0:9, "split"].to_numpy() == out.loc[400:409, "split"].to_numpy()).all()
    with pytest.raises(SplitError, match="holdout='c' is not a source"):
        make_split(df, method="cross_dataset", holdout="c")
