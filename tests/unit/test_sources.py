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


def test_csv_reader_rejects_each_bad_row_with_its_reason_and_keeps_the_rest(tmp_path: Path) -> None:
    touch(tmp_path, "images/a.jpg", "images/sub/b.png", "images/c.jpg", "images/d.jpg")
    touch(tmp_path, "images/e.jpg", "images/unlisted.jpg", "README.md")
    (tmp_path / "labels.csv").write_text(
        "path,age,subject,gender,split\n"
        "images/a.jpg,31.6,s1,female,train\n"
        "images/sub/b.png,abc,s2,,train\n"
        "images/missing.jpg,20,s3,1,train\n"
        "images/c.jpg,-3,,0,valid\n"
        "images/d.jpg,40,,x,valid\n"
        "images/e.jpg,7,,M,valid\n"
        "images/a.jpg,31,s1,1,train\n"
    )
    recs = [(Path(r.path).name, r) for r in make_reader("csv", tmp_path, "labels.csv").records()]
    by_name = dict(recs[::-1])  # first occurrence wins
    a = by_name["a.jpg"]
    assert (a.age, a.subject, a.gender, a.part, a.error) == (32, "s1", 1, "train", None)
    assert (by_name["e.jpg"].age, by_name["e.jpg"].gender, by_name["e.jpg"].part) == (7, 0, "valid")
    assert by_name["b.png"].error == "label unparsable: age 'abc'"
    assert by_name["missing.jpg"].error == "file listed in label table does not exist"
    assert by_name["c.jpg"].error == "label unparsable: age '-3'"
    assert by_name["d.jpg"].error == "label unparsable: gender 'x'"
    assert by_name["unlisted.jpg"].error == "not in label table"
    assert [r.error for n, r in recs if n == "a.jpg"][1] == "file listed twice in label table"
    # every row and every image is accounted for; the README and the table itself are no inputs
    assert len(recs) == 7 + 1 and "README.md" not in by_name and "labels.csv" not in by_name


def test_csv_reader_needs_path_and_age_columns_inside_the_source(tmp_path: Path) -> None:
    (tmp_path / "labels.csv").write_text("file,years\na.jpg,3\n")
    with pytest.raises(ValueError, match="missing column"):
        make_reader("csv", tmp_path, "labels.csv")
    with pytest.raises(ValueError, match="needs a 'csv'"):
        make_reader("csv", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"label table .* does not exist"):
        make_reader("csv", tmp_path, "nope.csv")
    (tmp_path / "images").mkdir()
    with pytest.raises(ValueError, match="outside its source folder"):
        make_reader("csv", tmp_path / "images", "../labels.csv")


def test_aaf_labels_read_from_its_table(aaf: Path) -> None:
    recs = list(make_reader("csv", aaf, "labels.csv").records())
    good = [r for r in recs if r.error is None]
    assert len(good) == 10_137 and len(recs) == len(good)
    first = good[0]
    assert Path(first.path).name == "00000A02.jpg" and (first.age, first.gender) == (2, 1)
    # the age is also in the file name (%05dA%02d.jpg): the table and the names agree
    assert all(int(Path(r.path).stem.split("A")[1]) == r.age for r in good)
    assert {r.gender for r in good} == {0, 1} and min(r.age for r in good) == 2


def test_appa_real_labels_and_parts_read_from_its_table(appa_real: Path) -> None:
    recs = list(make_reader("csv", appa_real, "labels.csv").records())
    good = [r for r in recs if r.error is None]
    assert len(good) == 5_212 and len(recs) == len(good)
    parts = {p: sum(r.part == p for r in good) for p in ("train", "valid")}
    assert parts == {"train": 3_806, "valid": 1_406}
    assert all(Path(r.path).parent.name == r.part for r in good)
    assert min(r.age for r in good) >= 1 and max(r.age for r in good) <= 100


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
