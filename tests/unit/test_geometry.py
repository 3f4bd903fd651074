"""Alignment geometry: the similarity transform and where landmarks land in a crop."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from agedistill.faces.detection import Face
from agedistill.faces.geometry import (
    TEMPLATES,
    align_face,
    model_face,
    select_face,
    similarity_transform,
    template,
)


def similarity(angle: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    c, s = np.cos(angle) * scale, np.sin(angle) * scale
    return np.array([[c, -s, shift[0]], [s, c, shift[1]]])


def apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:, :2].T + m[:, 2]


def test_similarity_transform_recovers_a_known_transform() -> None:
    src = np.random.default_rng(0).uniform(0, 100, (5, 2))
    m = similarity(0.4, 1.7, (12.0, -30.0))
    assert np.allclose(similarity_transform(src, apply(m, src)), m, atol=1e-9)


def test_template_margin_shrinks_the_face_around_the_centre() -> None:
    tight, loose = template(64, 0.0), template(64, 0.25)
    centre = np.array([32.0, 32.0])
    assert np.allclose((loose - centre), (tight - centre) / 1.5)
    assert np.allclose(template(112, 0.0)[0], [38.2946, 51.6963])


def dot_centroid(crop: Image.Image) -> np.ndarray:
    a = np.asarray(crop, dtype=np.float64)
    ys, xs = np.mgrid[: a.shape[0], : a.shape[1]]
    return np.array([(xs * a).sum(), (ys * a).sum()]) / a.sum()


def blob(size: tuple[int, int], x: float, y: float, sigma: float = 2.0) -> Image.Image:
    """A Gaussian dot centred exactly on pixel coordinate ``(x, y)`` (pixel centres at integers)."""
    ys, xs = np.mgrid[: size[1], : size[0]]
    a = np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2))
    return Image.fromarray(a.astype(np.float32), "F")


@pytest.mark.parametrize(
    ("angle", "scale", "size", "margin"), [(0.3, 2.5, 64, 0.0), (-0.5, 4.0, 96, 0.2)]
)
def test_aligned_landmarks_land_on_the_template(
    angle: float, scale: float, size: int, margin: float
) -> None:
    # a face whose landmarks are the template turned, scaled and moved inside a photo
    unit = template(1, 0.0) - 0.5
    landmarks = apply(similarity(angle, scale * 40, (200.3, 170.6)), unit)
    target = template(size, margin)
    for k, (x, y) in enumerate(landmarks):
        crop = align_face(blob((400, 350), x, y), landmarks, size, margin)
        assert crop.size == (size, size)
        assert np.allclose(dot_centroid(crop), target[k], atol=0.1), (k, dot_centroid(crop))


def test_aligned_rgb_crop_has_the_requested_size() -> None:
    landmarks = template(200, 0.0) + np.array([10.0, 5.0])
    crop = align_face(Image.new("RGB", (220, 220), (200, 10, 10)), landmarks, 64, 0.1)
    assert crop.size == (64, 64) and crop.mode == "RGB"
    assert np.asarray(crop)[32, 32].tolist() == [200, 10, 10]


def test_model_face_is_cut_at_the_training_crop_side_then_resized(sample_images) -> None:
    # a real UTKFace chip; its landmarks where UTKFace's framing puts them, turned a little
    im = Image.open(sorted(sample_images.glob("*.jpg"))[0]).convert("RGB")
    landmarks = apply(similarity(0.1, 1.0, (8.0, -4.0)), template(200, 0.0, "utkface"))
    config = {"input_size": 64, "align_size": 112, "align_template": "utkface"}
    crop = np.asarray(model_face(im, landmarks, config))
    # the align stage's 112-px crop, resized as load_table resizes crops for a 64-px model
    trained = align_face(im, landmarks, 112, 0.0, "utkface")
    assert crop.shape == (64, 64, 3)
    assert np.array_equal(crop, np.asarray(trained.resize((64, 64), Image.Resampling.BILINEAR)))
    # cut directly at 64 px the same face samples the photo more coarsely: another input
    direct = np.asarray(align_face(im, landmarks, 64, 0.0, "utkface"), dtype=np.float64)
    assert np.abs(direct - crop).mean() > 1.0
    # files without align_size (cut at their input side) and align_size 0 keep the direct cut
    for legacy in ({"input_size": 64, "align_template": "utkface"}, {**config, "align_size": 0}):
        assert np.array_equal(np.asarray(model_face(im, landmarks, legacy)), direct)


def face(x: float, y: float, w: float) -> Face:
    return Face(np.array([x, y, x + w, y + w]), 0.99, np.zeros((5, 2)))


def test_select_face_largest_or_central() -> None:
    big_corner, small_centre = face(0, 0, 80), face(90, 90, 20)
    faces = [small_centre, big_corner]
    assert select_face(faces, (200, 200), "largest") is big_corner
    assert select_face(faces, (200, 200), "central") is small_centre
    with pytest.raises(ValueError, match="unknown face selection"):
        select_face(faces, (200, 200), "first")
    with pytest.raises(ValueError, match="no faces"):
        select_face([], (200, 200))


def test_face_scaled_maps_every_coordinate() -> None:
    f = Face(np.array([10.0, 20.0, 30.0, 60.0]), 0.9, np.arange(10.0).reshape(5, 2))
    g = f.scaled(0.5)
    assert g.xywh() == (5.0, 10.0, 10.0, 20.0)
    assert np.allclose(g.landmarks, f.landmarks / 2) and g.prob == f.prob


def test_templates_are_left_right_symmetric_and_unknown_names_fail() -> None:
    for name in TEMPLATES:
        pts = template(100, 0.0, name)
        mirrored = np.column_stack([100 - pts[:, 0], pts[:, 1]])[[1, 0, 2, 4, 3]]
        assert np.allclose(pts, mirrored, atol=2.0), name  # ArcFace's own is off by < 2 px
    # the chips' framing: the eyes higher and further apart than ArcFace's
    utk, arc = template(1, 0.0, "utkface"), template(1, 0.0, "arcface")
    assert utk[0, 1] < arc[0, 1] - 0.1 and utk[1, 0] - utk[0, 0] > arc[1, 0] - arc[0, 0]
    with pytest.raises(ValueError, match="unknown crop template 'dlib'"):
        template(64, 0.0, "dlib")
