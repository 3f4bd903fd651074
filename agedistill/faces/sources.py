"""Label readers: turn a source folder into ``(path, labels)`` records.

A reader is one small class with :meth:`LabelReader.parse`; adding a dataset means adding one.
Files whose labels cannot be read are returned too, with a reason, so that ``align`` can account
for every input.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"}


@dataclass(frozen=True)
class Record:
    """One input file and its labels (``None`` where the source does not give them)."""

    path: str
    age: int | None
    subject: str | None = None
    gender: int | None = None
    race: int | None = None
    error: str | None = None  # why the labels could not be read


class LabelReader:
    """Base class: list a source's files and read their labels."""

    name = "base"

    def __init__(self, root: str | Path, csv: str | Path | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"source folder {self.root} does not exist")
        self.csv = Path(csv) if csv else None

    def files(self) -> list[Path]:
        """Every regular file under the root, sorted.

        Hidden files and folders (``.DS_Store``, ``.ipynb_checkpoints/``, ``.git/``) are not
        inputs and are not listed; every other file is, whatever its suffix.
        """
        return sorted(p for p in self.root.rglob("*") if p.is_file() and not self._hidden(p))

    def _hidden(self, path: Path) -> bool:
        return any(part.startswith(".") for part in path.relative_to(self.root).parts)

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


class CsvReader(LabelReader):
    """A table with columns ``path, age`` and optional ``subject, gender, race``.

    Paths are relative to the source folder. Files in the folder that the table does not list are
    reported (``not in label table``), as are rows whose file is missing.
    """

    name = "csv"

    def __init__(self, root: str | Path, csv: str | Path | None = None) -> None:
        super().__init__(root, csv)
        if self.csv is None:
            raise ValueError("reader 'csv' needs a 'csv' table path")
        table = pd.read_csv(self.csv, dtype={"path": str, "subject": str})
        missing = {"path", "age"} - set(table.columns)
        if missing:
            raise ValueError(f"{self.csv}: missing column(s) {sorted(missing)}")
        self.table = table.set_index("path", drop=False)

    def _row_record(self, path: Path, row: pd.Series) -> Record:
        def opt_int(key: str) -> int | None:
            v = row.get(key)
            return None if v is None or pd.isna(v) else int(v)

        age = pd.to_numeric(row["age"], errors="coerce")
        if pd.isna(age) or age < 0:
            return Record(str(path), None, error=f"label unparsable: age {row['age']!r}")
        subject = row.get("subject")
        subject = None if subject is None or pd.isna(subject) else str(subject)
        return Record(str(path), round(float(age)), subject, opt_int("gender"), opt_int("race"))

    def records(self) -> Iterator[Record]:
        listed = set()
        for rel, row in self.table.iterrows():
            path = self.root / str(rel)
            listed.add(path.resolve())
            if not path.is_file():
                yield Record(str(path), None, error="file listed in label table does not exist")
                continue
            yield self._row_record(path, row)
        for p in self.files():
            if p.resolve() not in listed and p.resolve() != (
                self.csv.resolve() if self.csv else None
            ):
                yield Record(str(p), None, error="not in label table")

    def parse(self, path: Path) -> Record:
        rel = str(path.relative_to(self.root))
        if rel not in self.table.index:
            return Record(str(path), None, error="not in label table")
        return self._row_record(path, self.table.loc[rel])


READERS: dict[str, type[LabelReader]] = {r.name: r for r in (UTKFaceReader, FGNetReader, CsvReader)}


def make_reader(reader: str, root: str | Path, csv: str | Path | None = None) -> LabelReader:
    """Build the reader called ``reader`` for the folder ``root``."""
    if reader not in READERS:
        raise ValueError(f"unknown reader {reader!r}; choose one of {sorted(READERS)}")
    return READERS[reader](root, csv)
