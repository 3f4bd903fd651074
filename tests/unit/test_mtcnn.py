"""MtcnnDetector's batching: a failing image is isolated, tiny images are never run."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from agedistill.faces.detection import Detection
from agedistill.faces.mtcnn import MtcnnDetector


@pytest.fixture
def detector(monkeypatch: pytest.MonkeyPatch) -> tuple[MtcnnDetector, list[int]]:
    """A detector whose MTCNN call fails on any batch holding an all-white image."""
    det = MtcnnDetector(min_face_size=20, detect_max_side=100, batch_size=3, pad=0.0)
    calls: list[int] = []

    def run(batch: np.ndarray, scale: float, border: int) -> list[Detection]:
        calls.append(len(batch))
        if (batch.reshape(len(batch), -1).min(axis=1) == 255).any():
            raise RuntimeError("torch.cat(): expected a non-empty list of Tensors")
        return [Detection() for _ in batch]

    monkeypatch.setattr(det, "_run", run)
    return det, calls


def test_a_failing_image_is_isolated(detector: tuple[MtcnnDetector, list[int]]) -> None:
    det, calls = detector
    images = [Image.new("RGB", (60, 60), (v, v, v)) for v in (10, 255, 30, 40, 50)]
    out = det.detect(images)
    assert [d.error is None for d in out] == [True, False, True, True, True]
    assert out[1].error.startswith("detector failed: RuntimeError")
    # batches of at most 3; the failing batch of 3 is retried one image at a time
    assert calls == [3, 1, 1, 1, 2]


def test_tiny_images_are_not_run_and_sizes_are_batched_apart(
    detector: tuple[MtcnnDetector, list[int]],
) -> None:
    det, calls = detector
    images = [Image.new("RGB", (60, 60)), Image.new("RGB", (5, 40)), Image.new("RGB", (80, 70))]
    out = det.detect(images)
    assert out[1].error == "image too small (5x40)"
    assert out[0].error is None and out[2].error is None
    assert sorted(calls) == [1, 1]  # two sizes: two batches, the tiny one never reaches MTCNN


def test_faces_are_mapped_back_from_the_detection_scale() -> None:
    det = MtcnnDetector(min_prob=0.9, detect_max_side=100)
    boxes = np.array([[10.0, 20.0, 30.0, 50.0, 0.99], [0.0, 0.0, 5.0, 5.0, 0.5]])
    points = np.arange(20.0).reshape(2, 5, 2)
    found = det._faces(boxes, points, scale=0.25, border=0)
    assert len(found.faces) == 1  # the p=0.5 box is dropped
    assert found.faces[0].xywh() == (40.0, 80.0, 80.0, 120.0)
    assert np.allclose(found.faces[0].landmarks, points[0] * 4)
    # with a 10 px border on the detection copy: remove the border, then undo the scale
    padded = det._faces(boxes, points, scale=0.25, border=10)
    assert padded.faces[0].xywh() == (0.0, 40.0, 80.0, 120.0)
    assert np.allclose(padded.faces[0].landmarks, (points[0] - 10) * 4)


def test_the_border_is_added_around_the_downscaled_copy() -> None:
    det = MtcnnDetector(detect_max_side=100, pad=0.25)
    arr, scale, border = det._prepare(Image.new("RGB", (200, 120), (9, 9, 9)), det.pad)
    assert (scale, border) == (0.5, 25)
    assert arr.shape == (60 + 50, 100 + 50, 3)
    assert arr[:25].max() == 0 and arr[25:85, 25:125].min() == 9
    with pytest.raises(ValueError, match="pad"):
        MtcnnDetector(pad=-0.1)


def test_an_image_without_a_face_on_its_padded_copy_is_searched_as_it_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    det = MtcnnDetector(pad=0.25)
    face = Detection([])
    found = Detection(error=None)
    found.faces.append(det._faces(np.array([[1.0, 1.0, 9.0, 9.0, 0.99]]),
                                  np.zeros((1, 5, 2)), 1.0, 0).faces[0])  # fmt: skip
    seen: list[tuple[int, float]] = []

    def detect_all(images: list[Image.Image], pad: float) -> list[Detection]:
        seen.append((len(images), pad))
        if pad > 0:
            return [found, face, Detection(error="image too small (5x5)")]
        return [found]

    monkeypatch.setattr(det, "_detect_all", detect_all)
    out = det.detect([Image.new("RGB", (60, 60))] * 3)
    # only the image with no face (and no error) is retried, without the border
    assert seen == [(3, 0.25), (1, 0.0)]
    assert out[1] is found and out[2].error == "image too small (5x5)"


def test_real_mtcnn_on_blank_and_odd_sizes_does_not_raise() -> None:
    det = MtcnnDetector(min_face_size=20, detect_max_side=640)
    images = [Image.new("RGB", s, (120, 120, 120)) for s in ((20, 20), (13, 400), (640, 12))]
    out = det.detect([*images, Image.new("RGB", (2000, 30))])
    assert all(d.faces == [] for d in out)
    assert out[3].error.startswith("image too small")  # 30 px tall becomes 10 px at 640 wide
