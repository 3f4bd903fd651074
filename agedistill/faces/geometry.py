"""5-landmark similarity alignment: crop templates, the transform, the warp, the main face.

The ``align`` stage and ``predict`` share these functions, so a photo at prediction time goes
through exactly the geometry the models were trained on. They take landmarks from any detector
(:class:`~agedistill.faces.detection.Face`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from agedistill.faces.detection import Face, model_crop

# ArcFace's canonical 5-point template on a 112x112 crop: eyes, nose tip, mouth corners (x, y).
TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)

# Crop framings: the 5 points (x, y) as fractions of the crop side, before any margin.
# "arcface": ArcFace's tight crop; "utkface": where MTCNN puts them on UTKFace's own chips (median
# over the 8,388 training chips of the full split, made left-right symmetric). ArcFace's framing
# sits a fifth of the side lower and a quarter looser than the chips, so on a chip 36% of an
# ArcFace crop falls outside the image (black); the chips' framing keeps crops inside the chips.
TEMPLATES: dict[str, np.ndarray] = {
    "arcface": TEMPLATE_112 / 112.0,
    "utkface": np.array(
        [[0.3025, 0.292], [0.6975, 0.292], [0.5, 0.524], [0.3275, 0.695], [0.6725, 0.695]]
    ),
}


def select_face(faces: list[Face], image_size: tuple[int, int], how: str = "largest") -> Face:
    """Pick the main face: the largest box, or the one closest to the image centre."""
    if not faces:
        raise ValueError("no faces to select from")
    if how == "largest":
        return max(faces, key=lambda f: f.width * f.height)
    if how == "central":
        cx, cy = image_size[0] / 2, image_size[1] / 2

        def dist(f: Face) -> float:
            return float(np.hypot((f.box[0] + f.box[2]) / 2 - cx, (f.box[1] + f.box[3]) / 2 - cy))

        return min(faces, key=dist)
    raise ValueError(f"unknown face selection {how!r}; use 'largest' or 'central'")


def template(size: int, margin: float, name: str = "arcface") -> np.ndarray:
    """The 5-point template for a ``size`` x ``size`` crop with ``margin`` context on each side.

    ``margin=0`` is the framing ``name`` as it is (see :data:`TEMPLATES`); ``margin=0.2`` shrinks
    the face so that 20% of the crop width is added on every side; a negative margin zooms in.

    Parameters
    ----------
    size : int
        Crop side in pixels.
    margin : float
        Context added on each side, as a fraction of the tight crop's side.
    name : str
        The framing: a key of :data:`TEMPLATES`.

    Returns
    -------
    numpy.ndarray
        (5, 2) pixel coordinates ``(x, y)`` of the eyes, nose tip and mouth corners.

    >>> template(112, 0.0)[0].round(2).tolist()
    [38.29, 51.7]
    """
    if name not in TEMPLATES:
        raise ValueError(f"unknown crop template {name!r}; known: {sorted(TEMPLATES)}")
    unit = TEMPLATES[name] - 0.5
    return (unit / (1.0 + 2.0 * margin) + 0.5) * size


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping ``src`` to ``dst``.

    Umeyama (1991), eq. 40-42: minimises ``sum_i |dst_i - (s R src_i + t)|^2``.

    Parameters
    ----------
    src, dst : numpy.ndarray
        (N, 2) corresponding points, N >= 2.

    Returns
    -------
    numpy.ndarray
        (2, 3) matrix ``M`` with ``dst ~ M @ [x, y, 1]``.

    >>> src = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    >>> bool(np.allclose(similarity_transform(src, 2 * src + 3), [[2, 0, 3], [0, 2, 3]]))
    True
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1
    rot = u @ sign @ vt
    scale = np.trace(np.diag(sig) @ sign) / s.var(0).sum()
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - m[:, :2] @ mu_s
    return m


def align_face(
    im: Image.Image, landmarks: np.ndarray, size: int, margin: float, name: str = "arcface"
) -> Image.Image:
    """Warp ``im`` so that ``landmarks`` land on :func:`template` in a square crop.

    Parameters
    ----------
    im : PIL.Image.Image
        RGB image.
    landmarks : numpy.ndarray
        (5, 2) pixel coordinates in ``im`` (MTCNN's order: eyes, nose, mouth corners).
    size, margin, name
        See :func:`template`.

    Returns
    -------
    PIL.Image.Image
        ``size`` x ``size`` RGB crop; area outside ``im`` is black.
    """
    m = similarity_transform(landmarks, template(size, margin, name))
    inv = np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2]
    # PIL samples output pixel (x, y) at inv @ (x + 0.5, y + 0.5) and reads that point as a
    # pixel-edge coordinate; shift so pixel indices map to pixel indices, as for the landmarks
    inv[:, 2] += 0.5 - inv[:, :2] @ [0.5, 0.5]
    return im.transform(
        (size, size),
        Image.Transform.AFFINE,
        inv.ravel().tolist(),
        resample=Image.Resampling.BILINEAR,
        fillcolor="black",
    )


def model_face(im: Image.Image, landmarks: np.ndarray, config: dict[str, Any]) -> Image.Image:
    """A model's input crop of the face with these landmarks, made as its training crops were.

    The face is cut at the side the ``align`` stage cut the model's training crops at (the
    config's ``align_size``; 0 or absent: the model's ``input_size``), with its template and
    margin, then resized to ``input_size`` with PIL's bilinear filter, as
    :func:`agedistill.data.tables.load_table` resizes crops for a model of another side. Cutting
    directly at a smaller side would sample the photo more coarsely than the training faces were.
    """
    crop, side = model_crop(config), int(config["input_size"])
    face = align_face(im, landmarks, crop["size"], crop["margin"], crop["template"])
    if face.size != (side, side):
        face = face.resize((side, side), Image.Resampling.BILINEAR)
    return face
