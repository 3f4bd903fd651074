"""Label readers: UTKFace and FG-NET file names, CSV tables, and files they cannot label."""

from __future__ import annotations

from pathlib import Path

import pytest

from agedistill.faces.sources import READERS, LabelReader, Record, make_reader


def touch(folder: Path, *names: str) -> None:
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"x")


def test_utkface_names_give_age_gender_race(tmp_path: Path) -> None:
    touch(tmp_path, "26_1_3_20170119180712345.jpg.chip.jpg", "61_1_20170109142408075.jpg.chip.jpg")
    recs = {Path(r.path).name: r for r in make_reader("utkface", tmp_path).records()}
    good = recs["26_1_3_20170119180712345.jpg.chip.jpg"]
    assert (good.age, good.gender, good.race, good.subject, good.error) == (26, 1, 3, None, None)
    # the shared folder's known bad name lacks the race field
    bad = recs["61_1_20170109142408075.jpg.chip.jpg"]
    assert bad.age is None and bad.error.startswith("label unparsable")


def test_fgnet_names_give_subject_and_age(tmp_path: Path) -> None:
    touch(tmp_path, "078A11.JPG", "001A43a.JPG", "readme.txt")
    recs = {Path(r.path).name: r for r in make_reader("fgnet", tmp_path).records()}
    assert (recs["078A11.JPG"].subject, recs["078A11.JPG"].age) == ("078", 11)
    assert (recs["001A43a.JPG"].subject, recs["001A43a.JPG"].age) == ("001", 43)
    assert recs["readme.txt"].error.startswith("label unparsable")


def test_csv_reader_accounts_for_every_file_and_row(tmp_path: Path) -> None:
    images = tmp_path / "images"
    touch(images, "a.jpg", "sub/b.png", "unlisted.jpg")
    table = tmp_path / "labels.csv"
    table.write_text(
        "path,age,subject,gender\na.jpg,31.6,s1,0\nsub/b.png,abc,s2,\nmissing.jpg,20,s3,1\n"
    )
    recs = {Path(r.path).name: r for r in make_reader("csv", images, table).records()}
    assert set(recs) == {"a.jpg", "b.png", "missing.jpg", "unlisted.jpg"}
    assert (recs["a.jpg"].age, recs["a.jpg"].subject, recs["a.jpg"].gender) == (32, "s1", 0)
    assert recs["b.png"].error == "label unparsable: age 'abc'"
    assert recs["missing.jpg"].error == "file listed in label table does not exist"
    assert recs["unlisted.jpg"].error == "not in label table"


def test_csv_reader_needs_path_and_age_columns(tmp_path: Path) -> None:
    table = tmp_path / "labels.csv"
    table.write_text("file,years\na.jpg,3\n")
    with pytest.raises(ValueError, match="missing column"):
        make_reader("csv", tmp_path, table)
    with pytest.raises(ValueError, match="needs a 'csv'"):
        make_reader("csv", tmp_path)


def test_unknown_reader_and_missing_folder_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown reader 'imdb'"):
        make_reader("imdb", tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        make_reader("utkface", tmp_path / "nope")


def test_a_new_reader_is_one_small_class(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class AgeFirst(LabelReader):
        name = "agefirst"

        def parse(self, path: Path) -> Record:
            return Record(str(path), int(path.stem.split("-")[0]))

    monkeypatch.setitem(READERS, AgeFirst.name, AgeFirst)
    touch(tmp_path, "42-x.jpg", ".hidden")
    recs = list(make_reader("agefirst", tmp_path).records())
    assert [(Path(r.path).name, r.age) for r in recs] == [("42-x.jpg", 42)]
