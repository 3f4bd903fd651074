"""The ``align`` stage: every input file becomes an aligned crop row or a reject row."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from PIL import Image
from tqdm import tqdm

from agedistill.align import FaceDetector, ImageReadError, align_face, read_image, select_face
from agedistill.sources import Record, make_reader

MANIFEST_COLUMNS = [
    "crop", "source", "path", "sha1", "age", "subject", "gender", "race",
    "det_prob", "n_faces", "box_x", "box_y", "box_w", "box_h", "landmarks",
]  # fmt: skip
REJECT_COLUMNS = ["source", "path", "reason"]


@dataclass(frozen=True)
class SourceSpec:
    """A folder and the reader that labels its files (``csv`` only for the csv reader)."""

    path: str
    reader: str = "utkface"
    csv: str | None = None


@dataclass
class _Loaded:
    record: Record
    source: str
    image: Image.Image | None = None
    sha1: str | None = None
    error: str | None = None


def _load(record: Record, source: str) -> _Loaded:
    item = _Loaded(record, source)
    try:
        data = Path(record.path).read_bytes()
        item.sha1 = hashlib.sha1(data).hexdigest()
        item.image = read_image(record.path)
    except ImageReadError as e:
        item.error = str(e)
    except OSError as e:
        item.error = f"unreadable: {e.strerror or e}"
    return item


def _chunks(items: Sequence, n: int) -> Iterator[Sequence]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def align_dataset(
    sources: Sequence[SourceSpec],
    out_dir: str | Path,
    *,
    size: int = 64,
    margin: float = 0.2,
    min_prob: float = 0.95,
    min_face_size: int = 20,
    select: str = "largest",
    detect_max_side: int = 640,
    batch_size: int = 32,
    workers: int = 2,
    limit: int = 0,
    progress: bool = True,
    base: str | Path | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Detect, select and align the main face of every file in ``sources``.

    Crops are written to ``out_dir/<index>.png``. Returns ``(manifest, rejects)``: every input
    file is in exactly one of them. Decoding runs on ``workers`` threads ahead of detection, in
    chunks, so memory stays bounded by ``batch_size * workers`` decoded images.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    todo: list[tuple[Record, str]] = []
    rejects: list[dict] = []
    for spec in sources:
        reader = make_reader(spec.reader, spec.path, spec.csv)
        for rec in reader.records():
            if rec.error is not None and rec.error.startswith("file listed"):
                rejects.append({"source": spec.path, "path": rec.path, "reason": rec.error})
            else:
                # every file is tried, whatever its suffix: the decoder decides, not the name
                todo.append((rec, spec.path))
    if limit:
        todo = todo[:limit]

    detector = FaceDetector(min_prob, min_face_size, detect_max_side)
    rows: list[dict] = []
    bar = tqdm(total=len(todo), desc="align", unit="img", disable=not progress)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        chunk_size = batch_size * max(1, workers)
        for chunk in _chunks(todo, chunk_size):
            loaded = list(pool.map(lambda rs: _load(*rs), chunk))
            ok = [x for x in loaded if x.error is None]
            detections = detector.detect([x.image for x in ok]) if ok else []
            det_iter = iter(detections)
            for item in loaded:
                det = next(det_iter) if item.error is None else None
                row = _finish(item, det, out_dir, len(rows), size, margin, min_face_size, select)
                if "reason" in row:
                    rejects.append(row)
                else:
                    rows.append(row)
                item.image = None  # free the decoded image now
            bar.update(len(chunk))
    bar.close()
    manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    reject_df = pd.DataFrame(rejects, columns=REJECT_COLUMNS)
    if base is not None:  # record paths relative to the repository, so tables are portable
        for df in (manifest, reject_df):
            for col in ("source", "path"):
                df[col] = [_relative(v, Path(base)) for v in df[col]]
    return manifest, reject_df


def _relative(path: str, base: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)


def _finish(item, det, out_dir, index, size, margin, min_face_size, select) -> dict:
    rec = item.record
    reject = {"source": item.source, "path": rec.path}
    if item.error is not None:
        return {**reject, "reason": item.error}
    if rec.error is not None:
        return {**reject, "reason": rec.error}
    if not det.faces:
        return {**reject, "reason": "no face"}
    face = select_face(det.faces, item.image.size, select)
    if min(face.width, face.height) < min_face_size:
        return {**reject, "reason": f"face too small ({face.width:.0f}px < {min_face_size}px)"}
    crop = align_face(item.image, face.landmarks, size, margin)
    name = f"{index:06d}.png"
    crop.save(out_dir / name)
    x, y, w, h = face.xywh()
    return {
        "crop": name,
        "source": item.source,
        "path": rec.path,
        "sha1": item.sha1,
        "age": rec.age,
        "subject": rec.subject,
        "gender": rec.gender,
        "race": rec.race,
        "det_prob": round(face.prob, 6),
        "n_faces": len(det.faces),
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
        "aligned": int(len(manifest)),
        "rejected": int(len(rejects)),
        "rejected_by_reason": dict(sorted(reasons.items())),
    }
