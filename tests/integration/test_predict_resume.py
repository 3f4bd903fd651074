"""A real ``agedistill predict`` killed mid-folder and resumed; shards; an exported ONNX student.

One folder of 96 UTKFace chips (links to the shared files) is predicted once without interruption
(the reference table). Then a second run is SIGKILLed (its whole process group, workers
included) once its table holds 20 files, resumed with ``--resume``, and must end with exactly
one row set per file, equal to the reference. Three ``--shard K/3`` runs must cover every file
once and concatenate (sorted by path, as the folder's files are) to the reference; an ONNX
export run with ``--model FILE.onnx`` must give the same rows, ages within 1e-4.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agedistill.cli import main
from agedistill.serving.loading import load_age_model
from agedistill.serving.predict import predict_detector
from agedistill.serving.predict_batch import InputFile, predict_batched
from agedistill.serving.rows import COLUMNS

pytestmark = pytest.mark.integration

N_FILES = 96
KILL_AFTER = 20  # files in the table when the run is killed


@pytest.fixture(scope="module")
def folder(utkface: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("chips")
    for chip in sorted(utkface.iterdir())[: 40 * N_FILES : 40]:
        (out / chip.name).symlink_to(chip)
    return out


@pytest.fixture(scope="module")
def reference(folder: Path, tmp_path_factory, detector_name: str) -> list[dict[str, str]]:
    out = tmp_path_factory.mktemp("ref") / "preds.csv"
    args = ["--out", str(out), "--workers", "2", "--no-progress", "--detector", detector_name]
    assert main(["predict", str(folder), *args]) == 0
    return _rows(out)


def _rows(path: Path) -> list[dict[str, str]]:
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        return [{k: "" if r[k] is None else str(r[k]) for k in COLUMNS} for r in rows]
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _paths_in(path: Path) -> list[str]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    if path.suffix == ".jsonl":
        return [json.loads(line)["path"] for line in text.splitlines() if line.endswith("}")]
    return [line.split(",")[0] for line in text.splitlines()[1:]]


def _one_row_set_per_file(rows: list[dict[str, str]], folder: Path) -> None:
    paths = [r["path"] for r in rows]
    files = sorted(str(p) for p in folder.iterdir())
    assert list(dict.fromkeys(paths)) == files  # every file, in input order, each block contiguous
    for f in files:
        faces = [r["face"] for r in rows if r["path"] == f]
        assert faces in (["0"], [""]) or faces == [str(i) for i in range(len(faces))], f


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_sigkill_mid_folder_then_resume(
    folder: Path, reference: list[dict[str, str]], tmp_path: Path, suffix: str, detector_name: str
) -> None:
    out = tmp_path / f"preds{suffix}"
    cmd = [sys.executable, "-m", "agedistill.cli", "predict", str(folder), "--out", str(out),
           "--workers", "2", "--no-progress", "--detector", detector_name]  # fmt: skip
    proc = subprocess.Popen(cmd, start_new_session=True, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while len(set(_paths_in(out))) < KILL_AFTER:
        assert proc.poll() is None, f"finished before it could be killed: {proc.stderr.read()}"
        assert time.monotonic() < deadline, "no rows within 300 s"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the command and its worker processes, no clean-up
    proc.wait()
    killed = _paths_in(out)
    assert KILL_AFTER <= len(set(killed)) < N_FILES  # really killed mid-folder
    assert main([*cmd[3:], "--resume"]) == 0
    rows = _rows(out)
    _one_row_set_per_file(rows, folder)
    assert rows == reference
    assert main([*cmd[3:], "--resume"]) == 0  # resuming a finished table redoes one file only
    assert _rows(out) == reference


def test_shards_concatenate_to_the_unsharded_table(
    folder: Path, reference: list[dict[str, str]], tmp_path: Path, detector_name: str
) -> None:
    parts = []
    for k in (1, 2, 3):
        out = tmp_path / f"part{k}.csv"
        args = ["--out", str(out), "--shard", f"{k}/3", "--workers", "0", "--no-progress"]
        assert main(["predict", str(folder), *args, "--detector", detector_name]) == 0
        parts.append(_rows(out))
    assert all(len({r["path"] for r in p}) > N_FILES / 6 for p in parts)  # a real split
    merged = sorted((r for p in parts for r in p), key=lambda r: r["path"])  # stable: faces stay
    assert merged == reference


def test_onnx_model_gives_the_same_rows(
    folder: Path, reference: list[dict[str, str]], tmp_path: Path, detector_name: str
) -> None:
    onnx_file = tmp_path / "student.onnx"
    assert main(["export", "--format", "onnx", "--out", str(onnx_file)]) == 0
    out = tmp_path / "onnx.csv"
    args = ["predict", str(folder), "--out", str(out), "--model", str(onnx_file), "--workers", "2",
            "--detector", detector_name]  # fmt: skip
    assert main([*args, "--no-progress"]) == 0
    rows = _rows(out)
    assert len(rows) == len(reference)
    for got, ref in zip(rows, reference, strict=True):
        same = ("path", "face", "x", "y", "w", "h", "det_prob", "error")
        assert [got[k] for k in same] == [ref[k] for k in same]
        for k in ("age", "age_std"):  # rows are rounded to 0.01: one step either way at most
            if ref[k]:
                assert abs(float(got[k]) - float(ref[k])) <= 0.01 + 1e-9, (ref["path"], k)
    # unrounded, through the API: same boxes, ages within 1e-4
    files = [InputFile(p) for p in sorted(folder.iterdir())]
    torch_model = load_age_model()
    detector = predict_detector(torch_model, {"detector": detector_name})
    assert load_age_model(onnx_file).detect_pad == torch_model.detect_pad
    assert load_age_model(onnx_file).detector == torch_model.detector
    ours = list(predict_batched(files, torch_model, detector, workers=2))
    theirs = list(predict_batched(files, load_age_model(onnx_file), detector, workers=2))
    for a, b in zip(ours, theirs, strict=True):
        assert [(f.x, f.y, f.w, f.h) for f in a.faces] == [(f.x, f.y, f.w, f.h) for f in b.faces]
        for fa, fb in zip(a.faces, b.faces, strict=True):
            assert abs(fa.age - fb.age) <= 1e-4 and abs(fa.age_std - fb.age_std) <= 1e-3


def test_a_broken_onnx_file_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 20)
    image = tmp_path / "x.png"
    image.write_bytes(b"")
    assert main(["predict", str(image), "--model", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(bad) in err and "ONNX" in err
