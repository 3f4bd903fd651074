"""The batched predictor with a stub detector: order, chunking, workers, bad files, annotation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agedistill.serving.age_model import AgeModel
from agedistill.serving.loading import load_age_model
from agedistill.serving.predict import predict_files
from agedistill.serving.predict_batch import InputFile, predict_batched, predict_chunk
from tests.unit.test_predict_unit import StubDetector


class ChunkedStub(StubDetector):
    batch_size = 3  # small chunks, so 8 files make three of them


@pytest.fixture(scope="module")
def model() -> AgeModel:
    return load_age_model()


@pytest.fixture()
def files(tmp_path: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(
            tmp_path / f"{i}.png"
        )
    (tmp_path / "6_bad.jpg").write_text("not an image")
    Image.new("RGB", (2600, 1300), (50, 60, 70)).save(tmp_path / "7_big.png")
    return sorted(tmp_path.iterdir())


@pytest.mark.parametrize("workers", [0, 2])
def test_results_are_the_one_image_paths_in_input_order(
    model: AgeModel, files: list[Path], workers: int
) -> None:
    reference = list(predict_files(files, model, ChunkedStub(n_faces=2), progress=False))
    got = list(predict_batched([InputFile(f) for f in files], model, ChunkedStub(2), workers))
    assert [r.path for r in got] == [str(f) for f in files]
    assert [(r.error, r.read, len(r.faces)) for r in got] == [
        (r.error, r.read, len(r.faces)) for r in reference
    ]
    for a, b in zip(reference, got, strict=True):
        for fa, fb in zip(a.faces, b.faces, strict=True):
            assert (fa.x, fa.y, fa.w, fa.h) == (fb.x, fb.y, fb.w, fb.h)  # big: original pixels
            assert fa.age == pytest.approx(fb.age, abs=1e-4)
    assert got[6].error == "not an image" and got[7].faces[0].w == pytest.approx(80 * 2600 / 1280)


def test_one_detector_call_per_chunk(model: AgeModel, files: list[Path]) -> None:
    det = ChunkedStub()
    results = predict_chunk([InputFile(f) for f in files[:3]], model, det)
    assert len(det.calls) == 3 and len(results) == 3  # three images, one detect() call
    det.calls.clear()
    list(predict_batched([InputFile(f) for f in files], model, det, workers=0))
    assert len(det.calls) == 7  # the unreadable file never reaches the detector


def test_annotated_copies_are_written_by_the_worker(
    model: AgeModel, files: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "ann" / "0.png"
    out.parent.mkdir()
    list(predict_batched([InputFile(files[0], out)], model, ChunkedStub(), workers=2))
    drawn = np.asarray(Image.open(out))
    assert (drawn[50, 100:180] == (255, 32, 32)).all()  # the stub's box, top edge
