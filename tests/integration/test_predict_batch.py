"""The batched, parallel ``predict`` path against the one-image path, on real photos and chips.

Parity: every file of ``../shared/data/photos`` (group shots, RGBA and 32-bit PNGs, a dog, the
licence and manifest files) and every 200th UTKFace chip go, with each detector, through
:func:`predict_files` (one file, one detector call, one model call at a time) with one torch
thread, and through :func:`predict_batched` in two worker processes (one torch thread each):
the same errors, the same boxes bit for bit, ages within 1e-4. Both run with one torch thread
because the thread count itself moves oneDNN's float rounding (in the one-image path too).

Bad inputs: every kind the ``align`` stage handles, in one chunk with real faces, each gets its
error row and the faces beside them are still found.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from agedistill.cli import main
from agedistill.serving.age_model import AgeModel
from agedistill.serving.inputs import iter_input_files
from agedistill.serving.loading import load_age_model
from agedistill.serving.predict import predict_detector, predict_files
from agedistill.serving.predict_batch import InputFile, predict_batched
from agedistill.serving.results import ImageResult

pytestmark = pytest.mark.integration

AGE_ATOL = 1e-4  # measured 1.5e-5: the model sees all faces of a chunk in one batch
STD_ATOL = 1e-3  # measured 1.1e-4: age_std's float32 E[a^2] - E[a]^2 rounds more


@pytest.fixture(scope="module")
def model() -> AgeModel:
    return load_age_model()


@pytest.fixture(scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _key(r: ImageResult) -> tuple:
    return r.path, r.error, r.read, len(r.faces)


def test_batched_results_equal_the_one_image_path(
    photos: Path, utkface: Path, model: AgeModel, one_thread, detector_name: str
) -> None:
    files = [p for p, _ in iter_input_files([photos])]
    files += sorted(utkface.iterdir())[::200]
    detector = predict_detector(model, {"detector": detector_name})
    reference = list(predict_files(files, model, detector, progress=False))
    batched = list(predict_batched([InputFile(f) for f in files], model, detector, workers=2))
    assert [_key(r) for r in batched] == [_key(r) for r in reference]  # order, errors, counts
    n_faces = 0
    for ref, got in zip(reference, batched, strict=True):
        for a, b in zip(ref.faces, got.faces, strict=True):
            assert (a.face, a.x, a.y, a.w, a.h, a.det_prob) == (
                b.face,
                b.x,
                b.y,
                b.w,
                b.h,
                b.det_prob,
            )
            np.testing.assert_array_equal(a.landmarks, b.landmarks)
            assert abs(a.age - b.age) <= AGE_ATOL and abs(a.age_std - b.age_std) <= STD_ATOL
            n_faces += 1
    assert n_faces >= 100  # 105 in the photos (measured) and one per chip
    assert sum(not r.read for r in batched) >= 2  # the licence and manifest are not images


def _bad_inputs(folder: Path, chips: list[Path]) -> dict[str, str]:
    """Write one file of each kind the align stage rejects; name -> expected error prefix."""
    jpeg = io.BytesIO()
    Image.open(chips[0]).save(jpeg, "JPEG")
    (folder / "a_notes.txt").write_text("not an image")
    (folder / "b_empty.jpg").write_bytes(b"")
    (folder / "c_truncated.jpg").write_bytes(jpeg.getvalue()[:300])
    Image.new("RGB", (8, 8), (120, 90, 60)).save(folder / "d_tiny.png")
    Image.new("1", (10_000, 9_000)).save(folder / "e_bomb.png")  # 90 Mpx, a few kB on disk
    (folder / "f_broken_link.jpg").symlink_to(folder / "nowhere.jpg")
    Image.new("RGB", (300, 200), (90, 90, 90)).save(folder / "g_grey.png")
    return {
        "a_notes.txt": "not an image",
        "b_empty.jpg": "unreadable: empty file",
        "c_truncated.jpg": "unreadable",
        "d_tiny.png": "image too small",
        "e_bomb.png": "image too large",
        "f_broken_link.jpg": "unreadable",
        "g_grey.png": "no face",
    }


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # the bomb, on open
def test_every_bad_input_gets_its_error_row_and_its_neighbours_their_ages(
    utkface: Path, photos: Path, tmp_path: Path, detector_name: str
) -> None:
    chips = sorted(utkface.iterdir())[:6]
    folder = tmp_path / "in"
    folder.mkdir()
    expected = _bad_inputs(folder, chips)
    for i, chip in enumerate(chips):  # real faces between the bad files, in the same chunk
        (folder / f"{chr(ord('a') + i)}_z_chip.jpg").symlink_to(chip)
    rgba = photos / "face_recognition/test_32bit.png"
    (folder / "h_rgba.png").symlink_to(rgba)
    out = tmp_path / "preds.csv"
    args = ["--out", str(out), "--workers", "2", "--detector", detector_name]
    assert main(["predict", str(folder), *args]) == 0
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    by_name: dict[str, list[dict]] = {}
    for r in rows:
        by_name.setdefault(Path(r["path"]).name, []).append(r)
    assert sorted(by_name) == sorted(p.name for p in folder.iterdir())  # nothing dropped
    assert [Path(r["path"]).name for r in rows] == sorted(Path(r["path"]).name for r in rows)
    for name, error in expected.items():
        assert len(by_name[name]) == 1 and by_name[name][0]["error"].startswith(error), name
        assert by_name[name][0]["age"] == ""
    faces = [r for name, rs in by_name.items() if "chip" in name or "rgba" in name for r in rs]
    assert len(faces) >= 7 and all(r["error"] == "" and 0 < float(r["age"]) < 100 for r in faces)
