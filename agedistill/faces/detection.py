"""What a face detector returns and how faces are searched for, whichever detector does it.

:class:`Face` and :class:`Detection` are a detector's results, :class:`Detector` the one method
a detector offers (:class:`~agedistill.faces.mtcnn.MtcnnDetector` is one). :data:`DETECT` holds
the detection settings the ``align`` stage and ``predict`` share, and :func:`model_crop` the crop
settings a model file records (how its training faces were found and framed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from PIL import Image


@dataclass
class Face:
    """One detected face in the pixel coordinates of the image it was detected in."""

    box: np.ndarray  # (4,) x1, y1, x2, y2
    prob: float
    landmarks: np.ndarray  # (5, 2) x, y: eyes, nose tip, mouth corners

    @property
    def width(self) -> float:
        """Box width in pixels."""
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        """Box height in pixels."""
        return float(self.box[3] - self.box[1])

    def xywh(self) -> tuple[float, float, float, float]:
        """Box as ``(x, y, w, h)``."""
        return float(self.box[0]), float(self.box[1]), self.width, self.height

    def scaled(self, factor: float) -> Face:
        """The same face with every coordinate multiplied by ``factor``."""
        return Face(self.box * factor, self.prob, self.landmarks * factor)


@dataclass
class Detection:
    """All faces kept in one image (sorted by probability, highest first).

    ``error`` is set (and ``faces`` empty) when the image could not be searched at all: it is
    smaller than the detector can search (MTCNN's window is 12 pixels) or the detector itself
    failed on it.
    """

    faces: list[Face] = field(default_factory=list)
    error: str | None = None


class Detector(Protocol):
    """A face detector: what the ``align`` stage and ``predict`` need of one.

    :meth:`detect` guarantees, for any list of RGB images:

    * one :class:`Detection` per image, in the order of ``images``;
    * it never raises because of one image's content: an image that could not be searched (too
      small for the detector, or one the detector failed on) gets a Detection with ``error`` set
      and no faces, and its neighbours are unaffected;
    * boxes and landmarks are in the pixels of the image as it was passed in (whatever copy the
      detector searched);
    * each image's faces are sorted by probability, highest first.

    ``detect_max_side`` is the longer side of the copy it searches: callers decode images at a
    small multiple of it.
    """

    detect_max_side: int

    def detect(self, images: list[Image.Image]) -> list[Detection]:
        """The faces of each image (see the class docstring for what is guaranteed)."""
        ...


# Black border (fraction of the longer side) added before detection: see MtcnnDetector ``pad``.
DETECT_PAD = 0.25


@dataclass(frozen=True)
class DetectSettings:
    """How faces are searched for: the one set of defaults of the ``align`` stage and ``predict``.

    ``min_face_size`` is 40: the ``align`` stage keeps only faces at least that large, so every
    model was trained on faces of 40 px or more, and searching smaller costs MTCNN's P-Net about
    four times the work per halving of the size (its pyramid starts at ``12 / min_face_size``).
    On the shared real photos (group shots down to 37-px faces) 20 finds no face that 40 misses
    (41 of 43 labelled faces either way; docs/predict.md).

    ``detector`` names the detector (:data:`agedistill.faces.detectors.DETECTORS`): BlazeFace
    proposals refined by MTCNN's O-Net find the same faces and landmarks as MTCNN's whole cascade
    at a fraction of its cost (docs/detectors.md). The other fields are those of
    :class:`~agedistill.faces.mtcnn.MtcnnDetector` (``pad`` is its ``pad``). ``predict`` takes
    ``detector`` and ``pad`` from the model file, which records how its training faces were
    found.
    """

    detector: str = "blazeface"
    min_prob: float = 0.95
    min_face_size: int = 40
    detect_max_side: int = 640
    pad: float = DETECT_PAD
    batch_size: int = 32


DETECT = DetectSettings()

# How the faces of a model were found and cropped when its file does not say (files written
# before ``align.template``, ``align.detect_pad``, ``align.detector`` and the crop side existed).
# ``size`` is the side the training crops were cut at (``align.size``); 0: the model's input side.
CROP_DEFAULTS: dict[str, Any] = {
    "margin": 0.0,
    "template": "arcface",
    "detect_pad": DETECT_PAD,
    "detector": "mtcnn",
    "size": 0,
}


def model_crop(config: dict[str, Any]) -> dict[str, Any]:
    """A model config's ``align_<key>`` settings, with :data:`CROP_DEFAULTS` for missing keys.

    ``size`` is resolved: a size of 0 (or none recorded) is the config's ``input_size``.
    """
    crop = {k: config.get(f"align_{k}", v) for k, v in CROP_DEFAULTS.items()}
    crop["size"] = int(crop["size"]) or int(config["input_size"])
    return crop
