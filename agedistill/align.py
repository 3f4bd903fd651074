"""Face detection (facenet-pytorch MTCNN) and 5-landmark similarity alignment.

The ``align`` stage and ``predict`` share these functions, so a photo at prediction time goes
through exactly the geometry the models were trained on.

Robustness rules (a bad file never stops the stage; every input gets a status):

* images are decoded with EXIF orientation applied and converted to RGB from any mode
  (L, LA, P, RGBA, CMYK, I;16, ...); decompression bombs are refused before decoding;
* detection runs on a copy downscaled to ``detect_max_side`` and boxes/landmarks are mapped back;
* images are batched only with images of the same size, and a batch that fails falls back to one
  image at a time, so one faceless or tiny image cannot crash its neighbours (facenet-pytorch
  issues #176, #224).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

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

MAX_PIXELS = 80_000_000  # refuse to decode larger images (decompression-bomb guard)


class ImageReadError(Exception):
    """An input that cannot be decoded as an image; the message is the reason."""


@dataclass
class Face:
    """One detected face in original-image pixel coordinates."""

    box: np.ndarray  # (4,) x1, y1, x2, y2
    prob: float
    landmarks: np.ndarray  # (5, 2)

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])

    def xywh(self) -> tuple[float, float, float, float]:
        """Box as ``(x, y, w, h)``."""
        return float(self.box[0]), float(self.box[1]), self.width, self.height


@dataclass
class Detection:
    """All faces kept in one image (sorted by probability, highest first)."""

    faces: list[Face] = field(default_factory=list)


def read_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode ``path`` as an 8-bit RGB image with EXIF orientation applied.

    Raises :class:`ImageReadError` with a short reason for empty, truncated, non-image or
    oversized files.
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise ImageReadError("unreadable: empty file")
        with Image.open(path) as im:
            w, h = im.size
            if w * h > max_pixels:
                raise ImageReadError(f"image too large: {w}x{h} exceeds {max_pixels} pixels")
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                im.load()
            return to_rgb(im)
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError("not an image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageReadError(f"image too large: {e}") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"unreadable: {e}") from None


def to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL image to 8-bit RGB: EXIF rotation, alpha composited on white, 16-bit rescaled."""
    im = ImageOps.exif_transpose(im)
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if a.max() > 255 else 255.0
        im = Image.fromarray(np.clip(a / hi * 255.0, 0, 255).astype(np.uint8), "L")
    elif im.mode == "F":
        a = np.asarray(im, dtype=np.float64)
        im = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "L")
    if im.mode == "P":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, im.convert("RGBA"))
    return im.convert("RGB")


class FaceDetector:
    """MTCNN with probability filtering, safe batching and downscaled detection."""

    def __init__(
        self,
        min_prob: float = 0.95,
        min_face_size: int = 20,
        detect_max_side: int = 640,
        device: str = "cpu",
    ) -> None:
        from facenet_pytorch import MTCNN  # weights ship inside the wheel: no download

        self.min_prob = min_prob
        self.min_face_size = min_face_size
        self.detect_max_side = detect_max_side
        self.mtcnn = MTCNN(keep_all=True, min_face_size=min_face_size, device=device)

    def _prepare(self, im: Image.Image) -> tuple[np.ndarray, float]:
        scale = min(1.0, self.detect_max_side / max(im.size))
        if scale < 1.0:
            size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
            im = im.resize(size, Image.Resampling.BILINEAR)
        return np.asarray(im), scale

    def _faces(self, boxes, probs, points, scale: float) -> Detection:
        if boxes is None:
            return Detection()
        faces = []
        for b, p, lm in zip(boxes, probs, points, strict=True):
            if p is None or p < self.min_prob:
                continue
            faces.append(Face(np.asarray(b) / scale, float(p), np.asarray(lm) / scale))
        faces.sort(key=lambda f: -f.prob)
        return Detection(faces)

    def _too_small(self, arr: np.ndarray) -> bool:
        # MTCNN's pyramid is empty (and facenet-pytorch crashes) below its 12 px window
        return min(arr.shape[:2]) < max(12, self.min_face_size)

    @torch.inference_mode()
    def detect(self, images: list[Image.Image]) -> list[Detection]:
        """Detect faces in each image; same-size images are batched, failures isolated."""
        prepared = [self._prepare(im) for im in images]
        out: list[Detection | None] = [None] * len(images)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, (arr, _) in enumerate(prepared):
            if self._too_small(arr):
                out[i] = Detection()
            else:
                groups.setdefault(arr.shape, []).append(i)
        for idx in groups.values():
            try:
                batch = np.stack([prepared[i][0] for i in idx])
                boxes, probs, points = self.mtcnn.detect(batch, landmarks=True)
                for j, i in enumerate(idx):
                    out[i] = self._faces(boxes[j], probs[j], points[j], prepared[i][1])
            except Exception:  # noqa: BLE001 - fall back to one at a time, isolating the culprit
                for i in idx:
                    out[i] = self._detect_one(*prepared[i])
        return [d if d is not None else Detection() for d in out]

    def _detect_one(self, arr: np.ndarray, scale: float) -> Detection:
        try:
            boxes, probs, points = self.mtcnn.detect(arr, landmarks=True)
        except Exception:  # noqa: BLE001 - a detector failure on one image means "no face"
            return Detection()
        return self._faces(boxes, probs, points, scale)


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


def template(size: int, margin: float) -> np.ndarray:
    """The 5-point template for a ``size`` x ``size`` crop with ``margin`` context on each side.

    ``margin=0`` is ArcFace's tight crop; ``margin=0.2`` shrinks the face so that 20% of the crop
    width is added on every side (forehead, hair and chin help age estimation).
    """
    unit = TEMPLATE_112 / 112.0 - 0.5
    return (unit / (1.0 + 2.0 * margin) + 0.5) * size


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping ``src`` to ``dst``.

    Umeyama (1991), eq. 40-42. Returns a 2x3 matrix ``M`` with ``dst ~ M @ [x, y, 1]``.
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


def align_face(im: Image.Image, landmarks: np.ndarray, size: int, margin: float) -> Image.Image:
    """Warp ``im`` so that ``landmarks`` (5, 2) land on :func:`template` in a square crop."""
    m = similarity_transform(landmarks, template(size, margin))
    inv = np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2]  # PIL maps output pixels to input pixels
    return im.transform(
        (size, size),
        Image.Transform.AFFINE,
        inv.ravel().tolist(),
        resample=Image.Resampling.BILINEAR,
        fillcolor=(0, 0, 0),
    )
