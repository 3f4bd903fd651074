"""The face detectors by name: what ``align.detector`` and a model file's ``align_detector`` name.

Each detector is one module behind :class:`~agedistill.faces.detection.Detector`; a new one is a
new module and one entry in :func:`make_detector`.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # kept out of the import, so that the CLI can list the names cheaply
    from agedistill.faces.detection import Detector, DetectSettings

DETECTORS = ("mtcnn", "blazeface")


def make_detector(name: str, settings: DetectSettings, *, exact_batches: bool = False) -> Detector:
    """The detector ``name`` with ``settings``.

    ``exact_batches``: every image's detection is bit for bit that of a one-image call, whatever
    the batch it comes in (``predict`` sets it; the ``align`` stage does not, so its crops stay
    those its models were trained on).
    """
    if name == "mtcnn":
        from agedistill.faces.mtcnn import MtcnnDetector

        kwargs = {k: v for k, v in asdict(settings).items() if k != "detector"}
        return MtcnnDetector(**kwargs, pnet_per_image=exact_batches)
    if name == "blazeface":
        from agedistill.faces.blazeface import BlazeFaceDetector

        return BlazeFaceDetector(settings)  # ONNX Runtime's results never depend on the batch
    raise ValueError(f"unknown face detector {name!r}; use one of {', '.join(DETECTORS)}")
