"""Streaming ``predict`` tables: each input's rows are written and flushed as it finishes.

The format follows the output file's suffix (case ignored): ``.csv`` (and standard output) CSV
under the header :data:`agedistill.serving.rows.COLUMNS`, ``.jsonl`` JSON Lines (one object per
row), ``.json`` a JSON list with one object per line (valid JSON once the run ends; ``.jsonl`` is
valid at every moment). Any other suffix, or none, is a :class:`TableError`: a table is never
written in a format its name does not say. All rows of one input go out in one write followed by
a flush, so memory does not grow with the number of inputs and a killed run keeps every finished
row.

Resuming (:func:`open_table` with ``resume=True``) reads the table back, drops the row set of the
last input in it (a kill may have cut it short: it is redone) and any torn line, and returns the
inputs whose rows remain, so the caller predicts only the others and the table ends with exactly
one row set per input.

:class:`TableWriter` is the one writer of these formats:
:func:`agedistill.serving.predict.write_csv` and :func:`~agedistill.serving.predict.write_json`
(a whole list of rows at once) go through it.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from agedistill.serving.rows import COLUMNS

FORMATS = ("csv", "json", "jsonl")


class TableError(ValueError):
    """An output ``predict`` cannot write: a format it does not write, or an existing output
    ``--resume`` cannot continue (another format, a foreign header)."""


def table_format(out: str | Path | None) -> str:
    """``csv``, ``json`` or ``jsonl`` from the output's suffix, case ignored (``None``, standard
    output: ``csv``).

    Raises
    ------
    TableError
        One line naming the suffix and the supported ones, for a name with any other suffix or
        none (``--out x.parquet`` must not write CSV into ``x.parquet``).
    """
    if out is None:
        return "csv"
    suffix = Path(out).suffix
    if suffix.lower().lstrip(".") in FORMATS:
        return suffix.lower().lstrip(".")
    supported = ", ".join(f".{f}" for f in FORMATS)
    what = f"its extension {suffix!r} is not a table format" if suffix else "it has no extension"
    raise TableError(
        f"cannot write {out}: {what}; predict writes {supported} "
        "(leave out --out for CSV on standard output)"
    )


def _cell(value: Any) -> Any:
    return "" if value is None else value


def _ordered(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in COLUMNS}


class TableWriter:
    """Appends row sets to an open text stream in one format, flushing after each.

    Parameters
    ----------
    stream : TextIO
        Where rows go (a file opened for appending, or standard output).
    fmt : {"csv", "json", "jsonl"}
    rows_written : int
        Rows already in ``stream`` (a resumed table): for ``json`` a separator goes before the
        next object.
    started : bool
        ``stream`` already holds the header (CSV) or the opening bracket (JSON).
    """

    def __init__(
        self, stream: TextIO, fmt: str, rows_written: int = 0, started: bool = False
    ) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown table format {fmt!r}; use one of {', '.join(FORMATS)}")
        self.stream, self.fmt, self.rows, self._started = stream, fmt, rows_written, started

    def write(self, rows: list[dict[str, Any]]) -> None:
        """Write one input's rows (one write call, then flush)."""
        buf = io.StringIO()
        if not self._started:
            if self.fmt == "csv":
                csv.writer(buf, lineterminator="\n").writerow(COLUMNS)
            elif self.fmt == "json":
                buf.write("[\n")
            self._started = True
        if self.fmt == "csv":
            out = csv.writer(buf, lineterminator="\n")
            for row in rows:
                out.writerow([_cell(row[k]) for k in COLUMNS])
        else:
            for row in rows:
                if self.fmt == "json" and self.rows:
                    buf.write(",\n")  # the separator belongs to the next object: see _cut_json
                buf.write(json.dumps(_ordered(row)))
                if self.fmt == "jsonl":
                    buf.write("\n")
                self.rows += 1
        if self.fmt == "csv":
            self.rows += len(rows)
        self.stream.write(buf.getvalue())
        self.stream.flush()

    def close(self) -> None:
        """End the table: a header for an empty CSV, the closing bracket of a JSON list."""
        if not self._started:
            self.write([])
        if self.fmt == "json":
            self.stream.write("\n]\n" if self.rows else "]\n")
        self.stream.flush()


@dataclass(frozen=True)
class _Row:
    path: str
    start: int  # offset where this row (with what precedes it, for JSON) can be cut off


def _lines(data: bytes) -> tuple[list[str], list[int]]:
    """The text lines of ``data`` (line ends kept) and their byte offsets (one more at the end)."""
    raw = data.splitlines(keepends=True)
    offsets = [0]
    for line in raw:
        offsets.append(offsets[-1] + len(line))
    return [line.decode("utf-8", errors="replace") for line in raw], offsets


def _csv_rows(data: bytes) -> Iterator[_Row]:
    lines, offsets = _lines(data)
    if not lines:
        return
    reader = csv.reader(iter(lines))
    header = next(reader, None)
    if header != COLUMNS:
        raise TableError(f"its header is not {','.join(COLUMNS)}")
    start = offsets[reader.line_num]
    for row in reader:
        if not lines[reader.line_num - 1].endswith("\n") or len(row) != len(COLUMNS):
            return  # a torn last line
        yield _Row(row[0], start)
        start = offsets[reader.line_num]


def _json_rows(data: bytes, listed: bool) -> Iterator[_Row]:
    lines, offsets = _lines(data)
    first = True
    for i, line in enumerate(lines):
        start = offsets[i]
        body = line.strip()
        if listed and i == 0:
            if body != "[":
                raise TableError("it does not start a JSON list")
            continue
        if listed and body == "]":
            return
        if not line.endswith("\n") and not listed:
            return  # a torn last line
        try:
            obj = json.loads(body.rstrip(",") if listed else body)
        except json.JSONDecodeError:
            return  # torn
        if not isinstance(obj, dict) or list(obj) != COLUMNS:
            raise TableError(f"line {i + 1} is not a row with the fields {', '.join(COLUMNS)}")
        # in a JSON list the ",\n" before an object goes with it: cutting there leaves a valid
        # prefix that the next object's separator continues
        yield _Row(obj["path"], start - 2 if listed and not first else start)
        first = False


def read_table(path: Path, fmt: str) -> tuple[list[str], int]:
    """The row paths of an existing table, its last input's rows excluded, and where to cut it.

    Returns the paths in file order and the byte offset at which the last input's rows (or a
    torn line) begin; a table with no complete row is cut back to its header or bracket.
    """
    data = path.read_bytes()
    parse: Callable[[bytes], Iterator[_Row]] = (
        _csv_rows if fmt == "csv" else lambda d: _json_rows(d, listed=fmt == "json")
    )
    rows = list(parse(data))
    if not rows:
        if fmt == "csv":
            return [], len(data.splitlines(keepends=True)[0])  # the header
        return [], 2 if fmt == "json" else 0  # after "[\n"
    last = len(rows)
    while last > 0 and rows[last - 1].path == rows[-1].path:
        last -= 1
    return [r.path for r in rows[:last]], rows[last].start


@dataclass
class OpenTable:
    """An output table ready for appending and the inputs it already holds."""

    writer: TableWriter
    done: set[str]
    kept_rows: int

    def close(self) -> None:
        self.writer.close()
        if self.writer.stream is not sys.stdout:
            self.writer.stream.close()


def open_table(out: str | Path | None, resume: bool = False) -> OpenTable:
    """Open ``out`` (``None``: standard output, CSV) for streaming rows.

    Parameters
    ----------
    out : str or Path, optional
        The table file; its folder is created. Without ``resume`` it is overwritten.
    resume : bool
        Keep the rows already in ``out`` (all but the last input's, which may be incomplete)
        and report their inputs as done; a missing or empty ``out`` starts afresh.

    Raises
    ------
    TableError
        ``resume`` on standard output, or on a file that is not a table of this format.
    """
    fmt = table_format(out)
    if out is None:
        if resume:
            raise TableError("--resume needs --out FILE (a table on standard output cannot resume)")
        return OpenTable(TableWriter(sys.stdout, fmt), set(), 0)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not (resume and path.is_file() and path.stat().st_size > 0):
        return OpenTable(TableWriter(open(path, "w", newline="", encoding="utf-8"), fmt), set(), 0)
    try:
        paths, cut = read_table(path, fmt)
    except TableError as e:
        raise TableError(f"cannot resume {path}: {e}") from None
    with open(path, "r+b") as f:
        f.truncate(cut)
    stream = open(path, "a", newline="", encoding="utf-8")  # noqa: SIM115 (OpenTable.close)
    writer = TableWriter(stream, fmt, rows_written=len(paths), started=fmt != "jsonl")
    return OpenTable(writer, set(paths), len(paths))
