"""Ages for every face in any photo: detection, alignment and the student, as in training.

Faces go through the model's detector (:mod:`agedistill.faces.detectors`) and
:func:`~agedistill.faces.geometry.align_face`, the functions the ``align`` stage uses, so a photo at
prediction time meets exactly the geometry the model was trained on. The age is the median
of the model's age distribution and ``age_std`` its standard deviation, scaled by the model's
calibration factor (``age_std_scale``, fitted on the validation part).

The CSV written by :func:`write_csv` is a stable interface (:mod:`agedistill.serving.rows`):
header :data:`~agedistill.serving.rows.COLUMNS`, one row per face (``face`` = 0, 1, ... by
detection probability) and one row with empty face fields and a non-empty ``error`` for every
input that has no face or could not be read. :func:`write_csv` and :func:`write_json` write it
with the command's own streaming writer (:mod:`agedistill.serving.predict_stream`).

This module is the one-image path (:func:`predict_image`, :func:`predict_files`); the ``predict``
command runs files in batches (:mod:`agedistill.serving.predict_batch`), streams its table
(:mod:`agedistill.serving.predict_stream`) and is put together in
:mod:`agedistill.serving.predict_run`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from PIL import Image

from agedistill.faces.decode import to_rgb
from agedistill.faces.detection import DETECT, Detection, Detector, DetectSettings
from agedistill.faces.detectors import make_detector
from agedistill.serving.age_model import AgeModel
from agedistill.serving.annotate import AnnotationNamer, annotate, save_annotated
from agedistill.serving.inputs import iter_input_files, read_input
from agedistill.serving.loading import load_age_model
from agedistill.serving.predict_stream import TableWriter
from agedistill.serving.results import FacePrediction, ImageResult

# Detection settings of ``predict``: the ``align`` stage's (agedistill.faces.detection.DETECT, one
# place for both); the border ``pad`` comes from the model file. ``detect_max_side`` bounds
# detection cost on large photos.
DETECT_DEFAULTS: dict[str, Any] = {
    k: getattr(DETECT, k) for k in ("min_prob", "min_face_size", "detect_max_side")
}

# Files per detection batch in ``predict``, which is also the chunk of files a worker process
# handles in one go (:mod:`agedistill.serving.predict_batch`): half the ``align`` stage's 32. A
# chunk's transient memory grows with it (the summed-area table and the crops of every image in
# it: docs/predict.md), and a file's result does not depend on it
# (tests/integration/test_predict_batch.py).
PREDICT_BATCH_SIZE = 16

# Images are worked on at up to this many times the detection side, as in the ``align`` stage:
# crops come from sharper pixels than detection needs, and a huge photo stays cheap.
WORK_SIDE_FACTOR = 2


@lru_cache(maxsize=1)
def _default_model() -> AgeModel:
    return load_age_model()


@lru_cache(maxsize=1)
def _default_detector() -> Detector:
    return predict_detector(_default_model())


def predict_detector(model: AgeModel, detect: dict[str, Any] | None = None) -> Detector:
    """The detector ``predict`` uses with ``model``: the model's detector and border,
    :data:`DETECT_DEFAULTS` and :data:`PREDICT_BATCH_SIZE`, with ``detect``'s overrides (keys of
    :class:`~agedistill.faces.detection.DetectSettings`), in batches whose results are those of
    one-image calls."""
    defaults = {**DETECT_DEFAULTS, "batch_size": PREDICT_BATCH_SIZE, "pad": model.detect_pad,
                "detector": model.detector}  # fmt: skip
    settings = DetectSettings(**{**defaults, **(detect or {})})
    return make_detector(settings.detector, settings, exact_batches=True)


def as_rgb_image(image: Image.Image | np.ndarray) -> Image.Image:
    """A PIL image or a uint8 array (H, W), (H, W, 3) RGB or (H, W, 4) RGBA as 8-bit RGB."""
    if isinstance(image, Image.Image):
        return to_rgb(image)
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ValueError(f"image array must be uint8, got {arr.dtype}")
    if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4)):
        return to_rgb(Image.fromarray(arr))
    raise ValueError(f"image array must be (H, W), (H, W, 3) or (H, W, 4), got {arr.shape}")


def work_copy(image: Image.Image, max_side: int) -> tuple[Image.Image, float]:
    """``image`` downscaled so its longer side is at most ``max_side``, and the scale applied.

    The same reduction :func:`agedistill.faces.decode.load_image` applies to files, for in-memory
    images.
    """
    if max(image.size) <= max_side:
        return image, 1.0
    small = image.copy()
    small.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    return small, max(small.size) / max(image.size)


def ages_for_detection(
    image: Image.Image, detection: Detection, model: AgeModel, scale: float = 1.0
) -> list[FacePrediction]:
    """Align every detected face of ``image`` as the ``align`` stage does and predict its age.

    Parameters
    ----------
    image : PIL.Image.Image
        The RGB image the faces were detected in.
    detection : Detection
        Its faces, in ``image`` pixels.
    model : AgeModel
    scale : float
        ``image`` pixels per original-image pixel; boxes and landmarks are returned in original
        pixels.

    Returns
    -------
    list of FacePrediction
        In ``detection``'s order (highest probability first).
    """
    if not detection.faces:
        return []
    ages, stds = model.ages(face_crops(image, detection, model))  # (N, S, S, 3) uint8 in
    return face_predictions(detection, ages.tolist(), stds.tolist(), scale)


def face_crops(image: Image.Image, detection: Detection, model: AgeModel) -> np.ndarray:
    """The model's input crops (N, S, S, 3) uint8 of the detected faces, in detection order.

    Raises ``ValueError`` or ``numpy.linalg.LinAlgError`` for degenerate landmarks.
    """
    crops = [np.asarray(model.align(image, f.landmarks)) for f in detection.faces]
    size = model.input_size
    return np.stack(crops) if crops else np.zeros((0, size, size, 3), np.uint8)


def face_predictions(
    detection: Detection, ages: Sequence[float], stds: Sequence[float], scale: float
) -> list[FacePrediction]:
    """Each face of ``detection`` with its age, box and landmarks in original-image pixels."""
    originals = [f.scaled(1.0 / scale) for f in detection.faces]
    return [
        FacePrediction(i, *f.xywh(), f.prob, float(a), float(s), f.landmarks)
        for i, (f, a, s) in enumerate(zip(originals, ages, stds, strict=True))
    ]


def predict_image(
    image: Image.Image | np.ndarray,
    model: AgeModel | str | Path | None = None,
    detector: Detector | None = None,
) -> list[FacePrediction]:
    """Every face in one image with its box, detection probability, age and age spread.

    Parameters
    ----------
    image : PIL.Image.Image or numpy.ndarray
        Any PIL mode, or a uint8 array (H, W), (H, W, 3) RGB or (H, W, 4) RGBA.
    model : AgeModel, str or Path, optional
        A loaded model or a model file; default: the shipped student (loaded once). A file is
        loaded reading each face both ways (``load_age_model(path, flip=False)`` reads it once).
    detector : Detector, optional
        Default: MTCNN with :data:`DETECT_DEFAULTS` (created once).

    Returns
    -------
    list of FacePrediction
        Sorted by detection probability, highest first; empty when there is no face.

    Examples
    --------
    >>> faces = predict_image(Image.open("photo.jpg"))  # doctest: +SKIP
    >>> [(f.age, f.age_std) for f in faces]  # doctest: +SKIP
    [(34.2, 7.9)]
    """
    model = _resolve_model(model)
    detector = detector if detector is not None else _default_detector()
    work, scale = work_copy(as_rgb_image(image), WORK_SIDE_FACTOR * detector.detect_max_side)
    return ages_for_detection(work, detector.detect([work])[0], model, scale)


def _resolve_model(model: AgeModel | str | Path | None) -> AgeModel:
    if isinstance(model, AgeModel):
        return model
    return _default_model() if model is None else load_age_model(model)


def predict_files(
    paths: Sequence[str | Path],
    model: AgeModel,
    detector: Detector,
    *,
    annotate_dir: str | Path | None = None,
    progress: bool | None = None,
) -> Iterator[ImageResult]:
    """Predict every face in every file of ``paths`` (files or folders, recursive).

    Parameters
    ----------
    paths : sequence of str or Path
        Files and folders.
    model : AgeModel
    detector : Detector
    annotate_dir : str or Path, optional
        Where to write copies of the images with boxes and ages drawn.
    progress : bool, optional
        Show a progress bar; default: when any input is a folder.

    Yields
    ------
    ImageResult
        One per input file, in input order; unreadable and faceless files carry ``error``.
    """
    from tqdm import tqdm

    files = list(iter_input_files(paths))
    if progress is None:
        progress = any(base is not None for _, base in files)
    namer = AnnotationNamer(Path(annotate_dir)) if annotate_dir is not None else None
    max_side = WORK_SIDE_FACTOR * detector.detect_max_side
    for path, base in tqdm(files, desc="predict", unit="img", disable=not progress):
        image, scale, error = read_input(path, max_side)
        if image is None:
            yield ImageResult(str(path), [], error, read=False)
            continue
        detection = detector.detect([image])[0]
        try:
            faces = ages_for_detection(image, detection, model, scale)
        except (ValueError, np.linalg.LinAlgError) as e:  # degenerate landmarks: no transform
            yield ImageResult(str(path), [], f"alignment failed: {e}")
            continue
        if namer is not None:
            save_annotated(annotate(image, faces, scale), namer.name(path, base))
        yield ImageResult(str(path), faces, None if faces else detection.error or "no face")


def write_csv(rows: Iterable[dict[str, Any]], stream: TextIO) -> None:
    """Write rows under the header :data:`~agedistill.serving.rows.COLUMNS` (``None``: empty).

    The bytes the ``predict`` command streams to a ``.csv`` (one writer for both:
    :class:`~agedistill.serving.predict_stream.TableWriter`).
    """
    _write_table(rows, stream, "csv")


def write_json(rows: Iterable[dict[str, Any]], stream: TextIO) -> None:
    """Write rows as a JSON list of objects with the CSV's fields (``null`` for empty).

    One object per line, as the ``predict`` command writes a ``.json``
    (:class:`~agedistill.serving.predict_stream.TableWriter`).
    """
    _write_table(rows, stream, "json")


def _write_table(rows: Iterable[dict[str, Any]], stream: TextIO, fmt: str) -> None:
    writer = TableWriter(stream, fmt)
    writer.write(list(rows))
    writer.close()  # ends the table; ``stream`` stays open
