"""Streaming tables: rows flushed per input, the three formats, and resuming a torn table."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from agedistill.serving.predict import write_csv, write_json
from agedistill.serving.predict_stream import (
    TableError,
    TableWriter,
    open_table,
    read_table,
    table_format,
)
from agedistill.serving.results import ImageResult
from agedistill.serving.rows import COLUMNS, result_rows


def _rows(path: str, n_faces: int) -> list[dict]:
    if n_faces == 0:
        return result_rows(ImageResult(path, [], "no face"))
    return [
        {"path": path, "face": i, "x": 1.5, "y": 2.0, "w": 30.0, "h": 40.0, "det_prob": 0.99,
         "age": 20.0 + i, "age_std": 3.0, "error": None}
        for i in range(n_faces)
    ]  # fmt: skip


INPUTS = [("a.jpg", 2), ('b é,"q".jpg', 0), ("c.jpg", 3), ("d.jpg", 1)]


def _write(out: Path, inputs=INPUTS, resume: bool = False) -> set[str]:
    table = open_table(out, resume)
    for path, n in inputs:
        if path not in table.done:
            table.writer.write(_rows(path, n))
    table.close()
    return table.done


def _read(out: Path) -> list[dict]:
    text = out.read_text(encoding="utf-8")
    if out.suffix == ".csv":
        return [
            {k: (v if v != "" else None) for k, v in r.items()}
            for r in csv.DictReader(io.StringIO(text))
        ]
    if out.suffix == ".json":
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines()]


def _as_text(rows: list[dict]) -> list[tuple[str, ...]]:
    return [tuple("" if r[k] is None else str(r[k]) for k in COLUMNS) for r in rows]


@pytest.mark.parametrize("suffix", [".csv", ".json", ".jsonl"])
def test_each_input_is_flushed_before_the_next_is_written(tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"p{suffix}"
    table = open_table(out)
    for i, (path, n) in enumerate(INPUTS, start=1):
        table.writer.write(_rows(path, n))
        # readable from disk now (another process would see it): every row so far, in order
        text = out.read_text(encoding="utf-8")
        if suffix == ".json":
            text += "\n]\n"  # the list is closed only at the end
            got = json.loads(text)
        else:
            got = _read(out)
        assert [r["path"] for r in got] == [p for p, m in INPUTS[:i] for _ in range(max(m, 1))]
    table.close()
    assert _as_text(_read(out)) == _as_text([r for p, n in INPUTS for r in _rows(p, n)])


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_write_csv_and_write_json_write_the_streamed_table(tmp_path: Path, suffix: str) -> None:
    # write_csv and write_json write what the command streams, byte for byte (one writer)
    out = tmp_path / f"p{suffix}"
    _write(out)
    expected = io.StringIO()
    write = write_csv if suffix == ".csv" else write_json
    write([r for p, n in INPUTS for r in _rows(p, n)], expected)
    assert out.read_text(encoding="utf-8") == expected.getvalue()


@pytest.mark.parametrize("suffix", [".csv", ".json", ".jsonl"])
def test_resume_after_a_torn_write_keeps_one_row_set_per_input(tmp_path: Path, suffix: str) -> None:
    full = tmp_path / f"full{suffix}"
    _write(full)
    data = full.read_bytes()
    # a run killed at any byte from input "c"'s rows (with the separator before them in a JSON
    # list) to the end: "b" is complete, and the last complete input is always redone
    c_start = data.index(b"c.jpg" if suffix == ".csv" else b'{"path": "c.jpg"')
    c_start -= 2 if suffix == ".json" else 0
    for cut in range(c_start, len(data) + 1):
        out = tmp_path / f"cut{suffix}"
        out.write_bytes(data[:cut])
        done = _write(out, resume=True)
        assert "a.jpg" in done and "d.jpg" not in done, f"cut at {cut}"
        assert _as_text(_read(out)) == _as_text(_read(full)), f"cut at {cut}"


@pytest.mark.parametrize("suffix", [".csv", ".json", ".jsonl"])
def test_resume_redoes_the_last_input_and_starts_empty_tables_afresh(
    tmp_path: Path, suffix: str
) -> None:
    out = tmp_path / f"p{suffix}"
    _write(out, INPUTS[:2])
    paths, _ = read_table(out, suffix[1:])
    assert paths == ["a.jpg", "a.jpg"]  # b's row set may be incomplete as far as a reader knows
    assert _write(out, resume=True) == {"a.jpg"}
    assert _as_text(_read(out)) == _as_text([r for p, n in INPUTS for r in _rows(p, n)])
    missing = tmp_path / f"none{suffix}"
    assert _write(missing, resume=True) == set() and len(_read(missing)) == 7


def test_resume_refuses_a_foreign_table_and_standard_output(tmp_path: Path) -> None:
    other = tmp_path / "other.csv"
    other.write_text("file,age\nx.jpg,3\n")
    with pytest.raises(TableError, match="header"):
        open_table(other, resume=True)
    with pytest.raises(TableError, match="--out"):
        open_table(None, resume=True)
    assert other.read_text() == "file,age\nx.jpg,3\n"  # untouched


def test_an_empty_run_still_writes_a_valid_table(tmp_path: Path) -> None:
    for suffix, text in ((".csv", ",".join(COLUMNS) + "\n"), (".json", "[\n]\n"), (".jsonl", "")):
        out = tmp_path / f"e{suffix}"
        _write(out, [])
        assert out.read_text() == text
    assert json.loads((tmp_path / "e.json").read_text()) == []


def test_writer_refuses_unknown_formats() -> None:
    with pytest.raises(ValueError, match="unknown table format"):
        TableWriter(io.StringIO(), "xml")


@pytest.mark.parametrize(
    ("name", "fmt"),
    [("p.csv", "csv"), ("p.CSV", "csv"), ("p.Json", "json"), ("p.JSONL", "jsonl"),
     ("a.b/p.x.jsonl", "jsonl")],
)  # fmt: skip
def test_the_format_is_the_suffix_whatever_its_case(tmp_path: Path, name: str, fmt: str) -> None:
    assert table_format(name) == fmt and table_format(None) == "csv"  # None: standard output
    out = tmp_path / name
    _write(out, INPUTS[:1])
    first = out.read_text(encoding="utf-8").splitlines()[0]
    expected = {"csv": ",".join(COLUMNS), "json": "[", "jsonl": json.dumps(_rows("a.jpg", 2)[0])}
    assert first == expected[fmt]


@pytest.mark.parametrize(
    ("name", "named"),
    [("p.parquet", "'.parquet'"), ("p.tsv", "'.tsv'"), ("p.csv.gz", "'.gz'"),
     ("preds", "no extension"), ("-", "no extension")],
)  # fmt: skip
def test_a_suffix_predict_does_not_write_is_refused_before_the_file_is_made(
    tmp_path: Path, name: str, named: str
) -> None:
    out = tmp_path / name
    with pytest.raises(TableError) as exc:
        open_table(out)
    message = str(exc.value)
    assert "\n" not in message and named in message and ".csv, .json, .jsonl" in message
    assert not out.exists()
