"""Label readers: turn a source folder into ``(path, labels)`` records.

A reader is one small class with :meth:`LabelReader.parse`; adding a dataset means adding one.
Files whose labels cannot be read are returned too, with a reason, so that ``align`` can account
for every input. The ``unlabelled`` reader gives faces without ages (LFW, CelebA): ``align`` crops
them like any other and ``split`` keeps them out of train/val/test, in ``unlabelled.csv``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"}


def listed_files(root: Path) -> list[Path]:
    """Every regular file under ``root``, sorted; hidden files and folders are not inputs.

    ``.DS_Store``, ``.ipynb_checkpoints/`` and ``.git/`` are skipped; every other file is listed,
    whatever its suffix.
    """
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not any(s.startswith(".") for s in p.relative_to(root).parts)
    )


@dataclass(frozen=True)
class Record:
    """One input file and its labels (``None`` where the source does not give them)."""

    path: str
    age: int | None
    subject: str | None = None
    gender: int | None = None
    race: int | None = None
    error: str | None = None  # why the labels could not be read
    part: str | None = None  # the source's own split of this file (a label table's ``split``)


class LabelReader:
    """Base class: list a source's files and read their labels."""

    name = "base"
    labelled = True  # its records carry an age; one without an age is a label error

    def __init__(self, root: str | Path, csv: str | Path | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"source folder {self.root} does not exist")
        self.csv = Path(csv) if csv else None

    def files(self) -> list[Path]:
        """The source's input files (:func:`listed_files`)."""
        return listed_files(self.root)

    def parse(self, path: Path) -> Record:  # pragma: no cover - abstract
        """Labels of one file, or a :class:`Record` whose ``error`` says why there are none."""
        raise NotImplementedError

    def records(self) -> Iterator[Record]:
        """One :class:`Record` per file, labelled or with a label error."""
        for p in self.files():
            yield self.parse(p)


class UTKFaceReader(LabelReader):
    """``age_gender_race_datetime.jpg.chip.jpg``; gender 0 male / 1 female, race 0..4."""

    name = "utkface"
    _pattern = re.compile(r"^(\d{1,3})_([01])_([0-4])_(\d+)")

    def parse(self, path: Path) -> Record:
        m = self._pattern.match(path.name)
        if m is None:
            return Record(str(path), None, error="label unparsable: expected age_gender_race_date")
        age, gender, race, _ = m.groups()
        return Record(str(path), int(age), None, int(gender), int(race))


class FGNetReader(LabelReader):
    """FG-NET names such as ``078A11.JPG`` (subject 78, age 11; ``a``/``b`` suffixes allowed)."""

    name = "fgnet"
    _pattern = re.compile(r"^(\d{3})A(\d{2})[a-z]?$", re.IGNORECASE)

    def parse(self, path: Path) -> Record:
        m = self._pattern.match(path.stem)
        if m is None:
            return Record(str(path), None, error="label unparsable: expected SSSAyy (FG-NET)")
        subject, age = m.groups()
        return Record(str(path), int(age), subject=subject)


GENDERS = {"0": 0, "m": 0, "male": 0, "1": 1, "f": 1, "female": 1}


class CsvReader(LabelReader):
    """A label table with columns ``path, age`` and optional ``subject, gender, race, split``.

    ``csv`` is relative to the source folder and must lie inside it (so that editing it reruns
    ``align``); the paths in it are relative to the table's own folder. Every row and every image
    file is accounted for: a row whose file is missing, whose age is not a non-negative number or
    whose gender is not 0/1/male/female is returned with its reason, as is an image file the table
    does not list; the good rows are kept. ``gender``: 0 male, 1 female (UTKFace's coding).
    """

    name = "csv"

    def __init__(self, root: str | Path, csv: str | Path | None = None) -> None:
        super().__init__(root, csv)
        if self.csv is None:
            raise ValueError("reader 'csv' needs a 'csv' table path")
        self.csv = self.root / self.csv
        if not self.csv.is_file():
            raise FileNotFoundError(f"label table {self.csv} does not exist")
        if not self.csv.resolve().is_relative_to(self.root.resolve()):
            raise ValueError(
                f"label table {self.csv} is outside its source folder {self.root}: put it inside, "
                "so that DVC reruns align when it changes"
            )
        table = pd.read_csv(self.csv, dtype=str, keep_default_na=False)
        missing = {"path", "age"} - set(table.columns)
        if missing:
            raise ValueError(f"{self.csv}: missing column(s) {sorted(missing)}")
        self.table = table

    def _row_record(self, path: Path, row: pd.Series) -> Record:
        age = pd.to_numeric(row["age"], errors="coerce")
        if pd.isna(age) or age < 0:
            return Record(str(path), None, error=f"label unparsable: age {row['age']!r}")
        gender = str(row.get("gender", "")).strip().lower()
        if gender and gender not in GENDERS:
            return Record(str(path), None, error=f"label unparsable: gender {row['gender']!r}")
        race = pd.to_numeric(row.get("race", ""), errors="coerce")

        def text(key: str) -> str | None:
            return str(row[key]) if str(row.get(key, "")).strip() else None

        return Record(
            str(path), round(float(age)), text("subject"), GENDERS.get(gender),
            None if pd.isna(race) else int(race), part=text("split"),
        )  # fmt: skip

    def records(self) -> Iterator[Record]:
        base = self.csv.parent
        listed = {self.csv.resolve()}
        for _, row in self.table.iterrows():
            path = base / row["path"]
            if path.resolve() in listed:
                yield Record(str(path), None, error="file listed twice in label table")
                continue
            listed.add(path.resolve())
            if not row["path"] or not path.is_file():
                yield Record(str(path), None, error="file listed in label table does not exist")
                continue
            yield self._row_record(path, row)
        for p in self.files():  # image files nobody labelled (a README next to them is no input)
            if p.resolve() not in listed and p.suffix.lower() in IMAGE_SUFFIXES:
                yield Record(str(p), None, error="not in label table")

    def parse(self, path: Path) -> Record:
        rel = str(path.resolve().relative_to(self.csv.parent.resolve()))
        rows = self.table[self.table["path"] == rel]
        if rows.empty:
            return Record(str(path), None, error="not in label table")
        return self._row_record(path, rows.iloc[0])


class UnlabelledReader(LabelReader):
    """Faces without labels: every file is an input with ``age=None`` (its content decides whether
    it is an image, as for the other readers).

    A file in a sub-folder gets that folder's path relative to the root as its ``subject`` (LFW's
    ``Person_Name/Person_Name_0001.jpg``: the person), so one person's faces stay together; a file
    directly in the root (CelebA's ``000001.jpg``) has no subject.
    """

    name = "unlabelled"
    labelled = False

    def parse(self, path: Path) -> Record:
        folder = path.parent.relative_to(self.root).as_posix()
        return Record(str(path), None, subject=None if folder == "." else folder)


READERS: dict[str, type[LabelReader]] = {
    r.name: r for r in (UTKFaceReader, FGNetReader, CsvReader, UnlabelledReader)
}


def make_reader(reader: str, root: str | Path, csv: str | Path | None = None) -> LabelReader:
    """Build the reader called ``reader`` for the folder ``root``."""
    if reader not in READERS:
        raise ValueError(f"unknown reader {reader!r}; choose one of {sorted(READERS)}")
    return READERS[reader](root, csv)
