"""The ``align`` stage: every input file becomes an aligned crop row or a reject row."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from agedistill.config import AlignParams
from agedistill.faces.decode import ImageReadError, load_image
from agedistill.faces.detection import DETECT, Detection, Detector, DetectSettings, Face
from agedistill.faces.detectors import make_detector
from agedistill.faces.geometry import align_face, select_face
from agedistill.faces.sources import Record, make_reader
from agedistill.onnx_sessions import compute_threads, set_threads

MANIFEST_COLUMNS = [
    "crop", "source", "source_part", "path", "sha1", "age", "subject", "gender", "race",
    "det_prob", "n_faces", "box_x", "box_y", "box_w", "box_h", "landmarks",
]  # fmt: skip
REJECT_COLUMNS = ["source", "path", "reason"]


@dataclass(frozen=True)
class SourceSpec:
    """A folder and the reader that labels its files (``csv`` only for the csv reader).

    ``name`` is the manifest's ``source`` value (the folder path when not given).
    """

    path: str
    reader: str = "utkface"
    csv: str | None = None
    name: str | None = None

    @property
    def label(self) -> str:
        return self.name or self.path


@dataclass
class _Loaded:
    record: Record
    source: str
    image: Image.Image | None = None
    scale: float = 1.0  # image pixels per original pixel
    sha1: str | None = None
    error: str | None = None


def _load(record: Record, source: str, max_side: int) -> _Loaded:
    item = _Loaded(record, source)
    try:
        item.sha1 = hashlib.sha1(Path(record.path).read_bytes()).hexdigest()
        item.image, item.scale = load_image(record.path, max_side=max_side)
    except ImageReadError as e:
        item.error = str(e)
    except OSError as e:
        item.error = f"unreadable: {e.strerror or e}"
    return item


def _chunks(items: Sequence, n: int) -> Iterator[Sequence]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _list_inputs(sources: Sequence[SourceSpec]) -> tuple[list[tuple[Record, str]], list[dict]]:
    """Every file of every source: labelled ones (and those of unlabelled sources) to align, the
    others as reject rows."""
    todo: list[tuple[Record, str]] = []
    rejects: list[dict] = []
    for spec in sources:
        reader = make_reader(spec.reader, spec.path, spec.csv)
        for rec in reader.records():
            error = _label_error(rec, reader.labelled)
            if error is None:
                todo.append((rec, spec.label))  # the decoder decides what is an image, not the name
            else:
                rejects.append({"source": spec.label, "path": rec.path, "reason": error})
    return todo, rejects


def _label_error(rec: Record, labelled: bool) -> str | None:
    """Why ``rec`` cannot be aligned for its labels, or None: a labelled source's record needs an
    age; an unlabelled source's record (``age=None``) is an input as it is."""
    if rec.error is None and labelled and rec.age is None:
        return "label unparsable: no age"
    return rec.error


class _AlignChunks(Dataset):
    """Chunks of input records; an item decodes, detects and aligns one chunk.

    Items are produced by DataLoader worker processes (or in-process with ``workers=0``); each
    returns, per record, its manifest row without a crop name and the crop as an array, or its
    reject row. The parent names and writes crops in input order.
    """

    def __init__(self, chunks: list[Sequence], detector: Detector, max_side: int,
                 shape: _CropShape) -> None:  # fmt: skip
        self.chunks, self.detector, self.max_side, self.shape = chunks, detector, max_side, shape

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, i: int) -> list[tuple[dict, np.ndarray | None]]:
        loaded = [_load(rec, source, self.max_side) for rec, source in self.chunks[i]]
        ok = [x for x in loaded if x.error is None]
        detections = iter(self.detector.detect([x.image for x in ok]))
        return [_finish(x, next(detections) if x.error is None else None, self.shape)
                for x in loaded]  # fmt: skip


def _as_is(item: Any) -> Any:
    return item


def _one_thread(worker_id: int) -> None:
    """A worker process computes with one thread (torch's and ONNX Runtime's): one per core."""
    set_threads(1)


def align_dataset(
    sources: Sequence[SourceSpec],
    out_dir: str | Path,
    *,
    size: int = 64,
    margin: float = 0.0,
    template: str = "arcface",
    detector: str = DETECT.detector,
    min_prob: float = DETECT.min_prob,
    min_face_size: int = DETECT.min_face_size,
    select: str = "largest",
    detect_max_side: int = DETECT.detect_max_side,
    detect_pad: float = DETECT.pad,
    batch_size: int = DETECT.batch_size,
    workers: int = 2,
    threads: int = 1,
    limit: int = 0,
    progress: bool = True,
    base: str | Path | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Detect, select and align the main face of every file in ``sources``.

    Parameters
    ----------
    sources : sequence of SourceSpec
        Folders and their label readers.
    out_dir : str or Path
        Crops are written here as ``<index>.png`` (index = manifest row).
    size, margin, template : int, float, str
        Crop side in pixels, context around the template and the template's name (see
        :func:`agedistill.faces.geometry.template`).
    detector : str
        The face detector (:data:`agedistill.faces.detectors.DETECTORS`).
    min_prob, min_face_size, detect_max_side, detect_pad, batch_size
        Detection settings (see :class:`~agedistill.faces.detection.DetectSettings`);
        ``min_face_size`` is in original pixels and faces smaller than it are rejected as
        ``face too small``.
    select : {"largest", "central"}
        Which face is the subject when there are several.
    workers : int
        Processes that decode, detect and align chunks of ``batch_size`` files in parallel
        (``torch.utils.data.DataLoader`` workers, one torch thread each); 0 runs everything in
        this process. One process per core is the fastest setting: MTCNN runs many small
        operations that do not split well over threads.
    threads : int
        Torch intra-op threads for in-process detection (``workers=0``; 0: leave torch's
        setting).
    limit : int
        Only the first ``limit`` labelled files (0: all).
    progress : bool
        Show a progress bar.
    base : str or Path, optional
        Record paths relative to this folder, so the tables are portable.

    Returns
    -------
    manifest : pandas.DataFrame
        One row per aligned crop (:data:`MANIFEST_COLUMNS`); box and landmarks in original
        upright-image pixels; ``age`` is a nullable integer, missing for unlabelled sources.
    rejects : pandas.DataFrame
        One row per other input file with its reason (:data:`REJECT_COLUMNS`). Every input file
        is in exactly one of the two tables.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    todo, rejects = _list_inputs(sources)
    if limit:
        todo = todo[:limit]
    settings = DetectSettings(detector=detector, min_prob=min_prob, min_face_size=min_face_size,
                              detect_max_side=detect_max_side, pad=detect_pad,
                              batch_size=batch_size)  # fmt: skip
    detector_ = make_detector(detector, settings)
    shape = _CropShape(size, margin, template, min_face_size, select)
    # images are kept at up to twice the detection side: crops come from sharper pixels than
    # detection needs while a 40-megapixel photo still costs only a few megabytes
    chunks = _AlignChunks(list(_chunks(todo, batch_size)), detector_, 2 * detect_max_side, shape)
    loader = DataLoader(
        chunks, batch_size=None, shuffle=False, num_workers=workers, collate_fn=_as_is,
        multiprocessing_context="fork" if workers else None, prefetch_factor=2 if workers else None,
        worker_init_fn=_one_thread,
    )  # fmt: skip
    rows: list[dict] = []
    with (
        compute_threads(threads),
        tqdm(total=len(todo), desc="align", unit="img", disable=not progress) as bar,
    ):
        for results in loader:
            for row, crop in results:
                if crop is None:
                    rejects.append(row)
                    continue
                row["crop"] = f"{len(rows):06d}.png"
                Image.fromarray(crop).save(out_dir / row["crop"])
                rows.append(row)
            bar.update(len(results))
    manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    manifest["age"] = manifest["age"].astype("Int64")  # unlabelled faces: empty, not NaN floats
    reject_df = pd.DataFrame(rejects, columns=REJECT_COLUMNS)
    if base is not None:
        for df in (manifest, reject_df):
            for col in ("source", "path"):
                df[col] = [_relative(v, Path(base)) for v in df[col]]
    return manifest, reject_df


def align_with_params(
    sources: Sequence[SourceSpec], out_dir: str | Path, p: AlignParams, **kwargs: Any
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`align_dataset` with every setting taken from the ``align`` params section.

    ``kwargs`` (``progress``, ``base``) go to :func:`align_dataset` as they are.
    """
    return align_dataset(
        sources, out_dir, size=p.size, margin=p.margin, template=p.template, detector=p.detector,
        min_prob=p.min_prob,
        min_face_size=p.min_face_size, select=p.select, detect_max_side=p.detect_max_side,
        detect_pad=p.detect_pad, batch_size=p.batch_size, workers=p.workers, threads=p.threads,
        limit=p.limit, **kwargs,
    )  # fmt: skip


def _relative(path: str, base: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)


@dataclass(frozen=True)
class _CropShape:
    size: int
    margin: float
    template: str
    min_face_size: int
    select: str


def _finish(
    item: _Loaded, det: Detection | None, shape: _CropShape
) -> tuple[dict, np.ndarray | None]:
    """The manifest row of one decoded file and its aligned crop, or its reject row and None."""
    reject = {"source": item.source, "path": item.record.path}
    if item.error is not None or det is None:
        return {**reject, "reason": item.error or "unreadable"}, None
    if det.error is not None:
        return {**reject, "reason": det.error}, None
    if not det.faces:
        return {**reject, "reason": "no face"}, None
    faces = [f.scaled(1.0 / item.scale) for f in det.faces]  # original-image pixels
    big = [f for f in faces if min(f.width, f.height) >= shape.min_face_size]
    if not big:
        largest = max(min(f.width, f.height) for f in faces)
        reason = f"face too small ({largest:.0f}px < {shape.min_face_size}px)"
        return {**reject, "reason": reason}, None
    face = select_face(big, _original_size(item), shape.select)
    crop = align_face(
        item.image, face.landmarks * item.scale, shape.size, shape.margin, shape.template
    )
    return _manifest_row(item, face, len(det.faces)), np.asarray(crop)


def _original_size(item: _Loaded) -> tuple[int, int]:
    w, h = item.image.size
    return round(w / item.scale), round(h / item.scale)


def _manifest_row(item: _Loaded, face: Face, n_faces: int) -> dict:
    rec = item.record
    x, y, w, h = face.xywh()
    return {
        "crop": None,  # named by the parent, in input order
        "source": item.source,
        "source_part": rec.part,
        "path": rec.path,
        "sha1": item.sha1,
        "age": rec.age,
        "subject": rec.subject,
        "gender": rec.gender,
        "race": rec.race,
        "det_prob": round(face.prob, 6),
        "n_faces": n_faces,
        "box_x": round(x, 2),
        "box_y": round(y, 2),
        "box_w": round(w, 2),
        "box_h": round(h, 2),
        "landmarks": " ".join(f"{v:.2f}" for v in face.landmarks.ravel()),
    }


def summarize(manifest: pd.DataFrame, rejects: pd.DataFrame) -> dict:
    """Counts for the stage's metrics: processed, aligned, rejected (by reason)."""
    reasons = Counter(r.split(":")[0].split(" (")[0] for r in rejects["reason"])
    return {
        "processed": int(len(manifest) + len(rejects)),
        "aligned": len(manifest),
        "rejected": len(rejects),
        "rejected_by_reason": dict(sorted(reasons.items())),
    }
