"""FaceDetector's batching: a failing image is isolated, tiny images are never run."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from agedistill.align import Detection, FaceDetector


@pytest.fixture
def detector(monkeypatch: pytest.MonkeyPatch) -> tuple[FaceDetector, list[int]]:
    """A detector whose MTCNN call fails on any batch holding an all-white image."""
    det = FaceDetector(min_face_size=20, detect_max_side=100, batch_size=3)
    calls: list[int] = []

    def run(batch: np.ndarray, scale: float) -> list[Detection]:
        calls.append(len(batch))
        if (batch.reshape(len(batch), -1).min(axis=1) == 255).any():
            raise RuntimeError("torch.cat(): expected a non-empty list of Tensors")
        return [Detection() for _ in batch]

    monkeypatch.setattr(det, "_run", run)
    return det, calls


def test_a_failing_image_is_isolated(detector: tuple[FaceDetector, list[int]]) -> None:
    det, calls = detector
    images = [Image.new("RGB", (60, 60), (v, v, v)) for v in (10, 255, 30, 40, 50)]
    out = det.detect(images)
    assert [d.error is None for d in out] == [True, False, True, True, True]
    assert out[1].error.startswith("detector failed: RuntimeError")
    # batches of at most 3; the failing batch of 3 is retried one image at a time
    assert calls == [3, 1, 1, 1, 2]


def test_tiny_images_are_not_run_and_sizes_are_batched_apart(
    detector: tuple[FaceDetector, list[int]],
) -> None:
    det, calls = detector
    images = [Image.new("RGB", (60, 60)), Image.new("RGB", (5, 40)), Image.new("RGB", (80, 70))]
    out = det.detect(images)
    assert out[1].error == "image too small (5x40)"
    assert out[0].error is None and out[2].error is None
    assert sorted(calls) == [1, 1]  # two sizes: two batches, the tiny one never reaches MTCNN


def test_faces_are_mapped_back_from_the_detection_scale() -> None:
    det = FaceDetector(min_prob=0.9, detect_max_side=100)
    boxes = np.array([[10.0, 20.0, 30.0, 50.0, 0.99], [0.0, 0.0, 5.0, 5.0, 0.5]])
    points = np.arange(20.0).reshape(2, 5, 2)
    found = det._faces(boxes, points, scale=0.25)
    assert len(found.faces) == 1  # the p=0.5 box is dropped
    assert found.faces[0].xywh() == (40.0, 80.0, 80.0, 120.0)
    assert np.allclose(found.faces[0].landmarks, points[0] * 4)


def test_real_mtcnn_on_blank_and_odd_sizes_does_not_raise() -> None:
    det = FaceDetector(min_face_size=20, detect_max_side=640)
    images = [Image.new("RGB", s, (120, 120, 120)) for s in ((20, 20), (13, 400), (640, 12))]
    out = det.detect([*images, Image.new("RGB", (2000, 30))])
    assert all(d.faces == [] for d in out)
    assert out[3].error.startswith("image too small")  # 30 px tall becomes 10 px at 640 wide
