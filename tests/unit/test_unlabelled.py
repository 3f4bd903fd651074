"""Unlabelled sources (``reader: unlabelled``): read without ages, aligned like the others, kept
out of train/val/test by ``split`` and written to ``unlabelled.csv``."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from agedistill.config import ParamsError, parse_params
from agedistill.data.splits import (
    PARTS,
    SplitError,
    make_split,
    separate_unlabelled,
    split_counts,
    unlabelled_part,
)
from agedistill.faces.align_dataset import SourceSpec, align_dataset
from agedistill.faces.sources import READERS, LabelReader, Record, make_reader
from tests.unit.test_sources import touch
from tests.unit.test_splits import manifest

LFW = Path(__file__).resolve().parents[3] / "unlabelled" / "lfw"  # beside the clone, if there


# --- reader -----------------------------------------------------------------------------------


def test_unlabelled_reader_lists_every_file_without_age_and_folder_subjects(tmp_path: Path) -> None:
    touch(
        tmp_path, "Ann_Lee/Ann_Lee_0001.jpg", "Ann_Lee/Ann_Lee_0002.jpg", "Bo_Chen/Bo_Chen_0001.jpg"
    )
    touch(tmp_path, "000001.jpg", ".DS_Store", ".ipynb_checkpoints/x.jpg")
    reader = make_reader("unlabelled", tmp_path)
    recs = {Path(r.path).relative_to(tmp_path).as_posix(): r for r in reader.records()}
    assert sorted(recs) == [
        "000001.jpg", "Ann_Lee/Ann_Lee_0001.jpg", "Ann_Lee/Ann_Lee_0002.jpg",
        "Bo_Chen/Bo_Chen_0001.jpg",
    ]  # fmt: skip
    assert all(r.age is None and r.error is None for r in recs.values())
    assert recs["Ann_Lee/Ann_Lee_0002.jpg"].subject == "Ann_Lee"
    assert recs["Bo_Chen/Bo_Chen_0001.jpg"].subject == "Bo_Chen"
    assert recs["000001.jpg"].subject is None  # a flat folder (CelebA) has no subjects
    assert READERS["unlabelled"] is type(reader) and not reader.labelled


def test_lfw_people_are_subjects() -> None:
    if not LFW.is_dir():
        pytest.skip(f"{LFW} is not beside this clone")
    recs = list(make_reader("unlabelled", LFW).records())
    assert len(recs) == 13_233 and all(r.age is None and r.error is None for r in recs)
    assert all(Path(r.path).name.startswith(r.subject + "_") for r in recs)
    assert len({r.subject for r in recs}) == 5_749


def test_params_accept_reader_unlabelled(repo: Path) -> None:
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    raw["align"]["sources"].append({"name": "lfw", "path": "../unlabelled/lfw",
                                    "reader": "unlabelled"})  # fmt: skip
    assert parse_params(raw).align.sources[-1].reader == "unlabelled"
    raw["align"]["sources"][-1]["reader"] = "unlabeled"
    with pytest.raises(ParamsError, match="reader"):
        parse_params(raw)


# --- split ------------------------------------------------------------------------------------


def mixed(n_labelled: int = 600) -> pd.DataFrame:
    """A labelled source ``utk`` and two unlabelled ones: ``lfw`` (20 people) and ``celeba``
    (no subjects), as a manifest read back from its CSV (the empty ages make ``age`` float)."""
    labelled = manifest(n_labelled).assign(source="utk")
    lfw = pd.DataFrame({"source": "lfw", "age": np.nan,
                        "subject": [f"P{i % 20}" for i in range(60)],
                        "sha1": [f"l{i}" for i in range(60)]})  # fmt: skip
    celeba = pd.DataFrame({"source": "celeba", "age": np.nan, "subject": None,
                           "sha1": [f"c{i}" for i in range(30)]})  # fmt: skip
    df = pd.concat([labelled, lfw, celeba], ignore_index=True)
    df["crop"] = [f"{i:06d}.png" for i in range(len(df))]
    return df


UNLABELLED_SOURCES = {"lfw", "celeba"}


def test_unlabelled_rows_are_in_no_part_and_all_in_unlabelled_csv() -> None:
    df = mixed()
    labelled, unlabelled, duplicates = separate_unlabelled(df, UNLABELLED_SOURCES)
    table = make_split(labelled, seed=0)
    part = unlabelled_part(unlabelled, table)
    assert duplicates == 0 and set(table["split"]) == set(PARTS)
    assert not table["source"].isin(UNLABELLED_SOURCES).any()
    assert table["age"].dtype == "int64"  # labelled ages are integers again
    expected = df[df["source"].isin(UNLABELLED_SOURCES)]
    assert not set(table["crop"]) & set(expected["crop"])
    assert part["crop"].tolist() == expected["crop"].tolist()
    assert list(part.columns) == list(table.columns) and set(part["split"]) == {"unlabelled"}
    assert part["age"].isna().all()
    # one person's faces are one group; groups are numbered after the labelled parts'
    assert (part[part["source"] == "lfw"].groupby("subject")["group"].nunique() == 1).all()
    assert part["group"].min() > table["group"].max()
    # same labelled rows, same seed: the parts are those of the labelled manifest alone
    alone = make_split(manifest(600).assign(source="utk"), seed=0)
    assert table["split"].tolist() == alone["split"].tolist()


def test_an_unlabelled_copy_of_a_test_face_is_dropped() -> None:
    df = mixed()
    table = make_split(separate_unlabelled(df, UNLABELLED_SOURCES)[0], seed=0)
    test_sha1 = table.loc[table["split"] == "test", "sha1"].iloc[0]
    copy_row = df.index[df["source"] == "celeba"][3]
    df.loc[copy_row, "sha1"] = test_sha1
    labelled, unlabelled, duplicates = separate_unlabelled(df, UNLABELLED_SOURCES)
    part = unlabelled_part(unlabelled, make_split(labelled, seed=0))
    assert duplicates == 1 and len(part) == 89
    assert df.loc[copy_row, "crop"] not in set(part["crop"])
    assert test_sha1 not in set(part["sha1"])
    counts = split_counts(table, table.iloc[0:0], unlabelled, duplicates)
    assert (counts["unlabelled"], counts["unlabelled_duplicates"]) == (89, 1)
    assert counts["by_source"]["celeba"] == {"unlabelled": 29}
    assert counts["by_source"]["lfw"] == {"unlabelled": 60}
    assert set(counts["by_source"]["utk"]) == set(PARTS)


def test_only_unlabelled_faces_cannot_be_split() -> None:
    df = mixed()
    only = df[df["source"].isin(UNLABELLED_SOURCES)]
    with pytest.raises(SplitError, match="needs labelled faces"):
        separate_unlabelled(only, UNLABELLED_SOURCES)
    # faces without ages that nobody declared unlabelled are no silent garbage either
    with pytest.raises(SplitError, match="no age"):
        separate_unlabelled(df, {"lfw"})
    with pytest.raises(SplitError, match="no age"):
        make_split(df)


def run_split_stage(tmp_path: Path, repo: Path, monkeypatch: pytest.MonkeyPatch,
                    df: pd.DataFrame, unlabelled: dict[str, str]) -> tuple[Path, dict]:  # fmt: skip
    """``stages.split`` on ``df`` with the repository's params plus the given unlabelled sources
    (name -> path); returns the output folder and the metrics."""
    import stages.split

    raw = yaml.safe_load((repo / "params.yaml").read_text())
    raw["align"]["sources"] = [{"name": "utk", "path": "x", "reader": "utkface"}] + [
        {"name": name, "path": path, "reader": "unlabelled"} for name, path in unlabelled.items()
    ]
    monkeypatch.setattr(stages.split, "load_params", lambda: parse_params(raw))
    df.to_csv(tmp_path / "manifest.csv", index=False)
    out, metrics = tmp_path / "split", tmp_path / "split.json"
    monkeypatch.setattr(sys, "argv", ["split", "--manifest", str(tmp_path / "manifest.csv"),
                                      "--out", str(out), "--metrics", str(metrics)])  # fmt: skip
    stages.split.main()
    return out, json.loads(metrics.read_text())


def test_split_stage_writes_unlabelled_csv(tmp_path: Path, repo: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    out, counts = run_split_stage(tmp_path, repo, monkeypatch, mixed(),
                                  {"lfw": "a", "celeba": "b"})  # fmt: skip
    parts = {p: pd.read_csv(out / f"{p}.csv", dtype={"subject": str}) for p in PARTS}
    unl = pd.read_csv(out / "unlabelled.csv", dtype={"subject": str})
    assert all(set(t["source"]) == {"utk"} for t in parts.values())
    assert len(unl) == 90 and set(unl["source"]) == UNLABELLED_SOURCES
    assert list(unl.columns) == list(parts["train"].columns) and unl["age"].isna().all()
    assert parts["train"]["age"].dtype == "int64"
    assert counts["unlabelled"] == 90 and counts["unlabelled_duplicates"] == 0
    assert counts["by_source"]["lfw"] == {"unlabelled": 60}
    assert sum(counts[p] for p in PARTS) == 600


def test_split_stage_writes_an_empty_unlabelled_csv_and_fails_without_labels(
    tmp_path: Path, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, counts = run_split_stage(
        tmp_path, repo, monkeypatch, manifest(300).assign(source="utk"), {}
    )
    unl = pd.read_csv(out / "unlabelled.csv")
    assert unl.empty and list(unl.columns) == list(pd.read_csv(out / "test.csv").columns)
    assert counts["unlabelled"] == 0
    only = mixed()
    only = only[only["source"] == "lfw"]
    with pytest.raises(SystemExit, match=r"^split: .*needs labelled faces") as e:
        run_split_stage(tmp_path, repo, monkeypatch, only, {"lfw": "a"})
    assert "\n" not in str(e.value)


# --- align ------------------------------------------------------------------------------------


class _NoAge(LabelReader):
    """A labelled reader that forgets to say why a file has no age."""

    name = "noage"

    def parse(self, path: Path) -> Record:
        return Record(str(path), None)


@pytest.fixture(scope="module")
def aligned(tmp_path_factory: pytest.TempPathFactory, sample_images: Path):
    """Three sample chips as an LFW-like unlabelled tree (plus a text file), two as a labelled
    UTKFace folder and one under a labelled reader that gives no age."""
    root = tmp_path_factory.mktemp("unlabelled_align")
    chips = sorted(sample_images.iterdir())[:6]
    for rel, chip in zip(
        ["lfw/Ann_Lee/Ann_Lee_0001.jpg", "lfw/Ann_Lee/Ann_Lee_0002.jpg",
         "lfw/Bo_Chen/Bo_Chen_0001.jpg", f"utk/{chips[3].name}", f"utk/{chips[4].name}",
         "noage/x.jpg"],
        chips, strict=True,
    ):  # fmt: skip
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(chip, root / rel)
    (root / "lfw" / "pairs.txt").write_text("Ann_Lee 1 2\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(READERS, _NoAge.name, _NoAge)
        manifest_, rejects = align_dataset(
            [SourceSpec(str(root / "lfw"), "unlabelled", name="lfw"),
             SourceSpec(str(root / "utk"), "utkface", name="utk"),
             SourceSpec(str(root / "noage"), "noage", name="noage")],
            root / "crops", size=64, min_face_size=40, batch_size=4, workers=0, progress=False,
        )  # fmt: skip
    manifest_.to_csv(root / "manifest.csv", index=False)
    return manifest_, rejects, root


def test_unlabelled_faces_are_aligned_with_empty_ages(aligned) -> None:
    manifest_, _, root = aligned
    lfw = manifest_[manifest_["source"] == "lfw"]
    assert sorted(Path(p).name for p in lfw["path"]) == [
        "Ann_Lee_0001.jpg",
        "Ann_Lee_0002.jpg",
        "Bo_Chen_0001.jpg",
    ]
    assert lfw["age"].isna().all() and lfw["subject"].tolist() == ["Ann_Lee", "Ann_Lee", "Bo_Chen"]
    for crop in lfw["crop"]:
        with Image.open(root / "crops" / crop) as im:
            assert im.size == (64, 64)
    # in the CSV: labelled ages stay integers, unlabelled ones are empty
    back = pd.read_csv(root / "manifest.csv", dtype=str, keep_default_na=False)
    assert (back.loc[back["source"] == "lfw", "age"] == "").all()
    utk_ages = back.loc[back["source"] == "utk", "age"]
    assert len(utk_ages) == 2 and utk_ages.str.fullmatch(r"\d+").all()


def test_labelled_files_without_age_and_non_images_are_still_rejected(aligned) -> None:
    manifest_, rejects, _ = aligned
    reasons = dict(zip(rejects["path"].map(lambda p: Path(p).name), rejects["reason"], strict=True))
    assert reasons == {"pairs.txt": "not an image", "x.jpg": "label unparsable: no age"}
    assert "noage" not in set(manifest_["source"])
