"""``predict`` over many files at the ``align`` stage's speed: chunks of files in worker processes.

The files are cut into chunks of ``detector.batch_size``. A chunk is decoded, searched with one
call of the detector's ``detect`` (the ``align`` stage's detector:
same-size images share one MTCNN batch), aligned, and all its faces go through the age model as
one batch. Chunks run in ``workers`` processes (``torch.utils.data.DataLoader`` workers, one
torch thread each, as in the ``align`` stage: MTCNN's many small operations do not split well
over threads) and come back in input order, a few chunks ahead of the writer at most, so memory
does not grow with the number of files. A process hands its freed heap back to the system after
each chunk (:func:`release_free_memory`), and the workers are forked with the parent's objects
frozen (:func:`gc.freeze`), so that they share its pages instead of copying them.

Each file's result is that of :func:`agedistill.serving.predict.predict_files` (the
one-file-at-a-time path): the same decoding, detection copy, alignment and model, only batched.
"""

from __future__ import annotations

import ctypes
import gc
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from agedistill.faces.detection import Detection, Detector, torch_threads
from agedistill.serving.age_model import AgeModel
from agedistill.serving.annotate import annotate, save_annotated
from agedistill.serving.inputs import read_input
from agedistill.serving.predict import WORK_SIDE_FACTOR, face_crops, face_predictions
from agedistill.serving.results import ImageResult

# Files a set of worker processes handles before it is replaced (the start-up of new workers
# costs about a second, 2% of the time at 50 files/s)
WORKER_FILES = 2048


@dataclass(frozen=True)
class InputFile:
    """One file to predict, and where to write its annotated copy (``None``: nowhere)."""

    path: Path
    annotate_to: Path | None = None


def default_workers() -> int:
    """One worker process per core this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def predict_chunk(
    files: Sequence[InputFile], model: AgeModel, detector: Detector
) -> list[ImageResult]:
    """Decode, detect, align and age one chunk of files; one result per file, in order.

    Never raises because of a file: unreadable files, images the detector cannot search and
    faces that cannot be aligned each get their error, as in :func:`predict_files`.
    """
    max_side = WORK_SIDE_FACTOR * detector.detect_max_side
    loaded = [read_input(f.path, max_side) for f in files]
    readable = [i for i, (image, _, _) in enumerate(loaded) if image is not None]
    detections = dict(zip(readable, detector.detect([loaded[i][0] for i in readable]), strict=True))
    results: list[ImageResult | None] = [None] * len(files)
    crops: dict[int, np.ndarray] = {}
    for i, f in enumerate(files):
        image, _, error = loaded[i]
        if image is None:
            results[i] = ImageResult(str(f.path), [], error, read=False)
            continue
        try:
            crops[i] = face_crops(image, detections[i], model)
        except (ValueError, np.linalg.LinAlgError) as e:  # degenerate landmarks: no transform
            results[i] = ImageResult(str(f.path), [], f"alignment failed: {e}")
    ages, stds = _ages(model, [crops[i] for i in crops])
    start = 0
    for i, c in crops.items():
        image, scale, _ = loaded[i]
        det: Detection = detections[i]
        n = len(c)
        faces = face_predictions(det, ages[start : start + n], stds[start : start + n], scale)
        start += n
        error = None if faces else det.error or "no face"
        results[i] = ImageResult(str(files[i].path), faces, error)
        if files[i].annotate_to is not None:
            save_annotated(annotate(image, faces, scale), files[i].annotate_to)
    return results  # type: ignore[return-value]  # every slot is filled above


def _ages(model: AgeModel, crops: list[np.ndarray]) -> tuple[list[float], list[float]]:
    """Ages and spreads of every crop of a chunk, in one batch through the model."""
    batch = np.concatenate(crops) if crops else np.zeros((0,))
    if len(batch) == 0:
        return [], []
    ages, stds = model.ages(torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous())
    return ages.tolist(), stds.tolist()


class _Chunks(Dataset):
    """Chunks of input files; an item is the results of one chunk (:func:`predict_chunk`)."""

    def __init__(
        self, chunks: list[Sequence[InputFile]], model: AgeModel, detector: Detector
    ) -> None:
        self.chunks, self.model, self.detector = chunks, model, detector

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, i: int) -> list[ImageResult]:
        results = predict_chunk(self.chunks[i], self.model, self.detector)
        release_free_memory()
        return results


def release_free_memory() -> None:
    """Return the heap's free pages to the system (glibc's ``malloc_trim``; elsewhere a no-op).

    A chunk allocates and frees a few hundred MB of tensors; glibc keeps freed heap memory for
    reuse, and its fragments add up over the chunks (one process grew by about 180 MB over 800
    files). Called after each chunk, it keeps a process near one chunk's peak.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@lru_cache(maxsize=1)
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim  # type: ignore[no-any-return]
    except (OSError, AttributeError, TypeError):  # not glibc (macOS, musl, Windows)
        return None


def _as_is(item: list[ImageResult]) -> list[ImageResult]:
    return item


def predict_batched(
    files: Sequence[InputFile], model: AgeModel, detector: Detector, workers: int, threads: int = 1
) -> Iterator[ImageResult]:
    """Results of every file, in input order, predicted in chunks by ``workers`` processes.

    Parameters
    ----------
    files : sequence of InputFile
    model : AgeModel
        PyTorch or ONNX (:class:`agedistill.serving.onnx_model.OnnxAgeModel`).
    detector : Detector
        Its ``batch_size`` is the chunk size (smaller when there are fewer files than
        ``workers`` full chunks, so that every worker has some).
    workers : int
        Worker processes (forked; they inherit the loaded model and detector); 0, or a single
        chunk, runs in this process, with no start-up cost.
    threads : int
        Torch threads of each process that predicts (this one included, for the time it does).
        One is the fastest per core on CPU (see ``workers``); and since the thread count moves
        oneDNN's float rounding, a fixed count makes a file's row independent of ``workers``
        and of the other files in the run.

    Yields
    ------
    ImageResult
        One per file, in the order of ``files``.
    """
    size = max(1, int(getattr(detector, "batch_size", 32)))
    if workers > 1:  # a few files (photos): smaller chunks, so that every worker gets some
        size = max(1, min(size, -(-len(files) // workers)))
    chunks = [files[i : i + size] for i in range(0, len(files), size)]
    workers = min(workers, len(chunks))
    if workers <= 1:  # one worker process would only add its start-up to this process's work
        for chunk in chunks:
            with torch_threads(threads):  # not across the yields: the caller's code runs there
                results = predict_chunk(chunk, model, detector)
            release_free_memory()
            yield from results
        return
    per_set = max(1, WORKER_FILES // size)
    with _frozen_objects():
        for start in range(0, len(chunks), per_set):
            # fresh workers every WORKER_FILES files: a worker's memory creeps up over thousands
            # of files (allocator and oneDNN caches), and a new fork starts from the parent's pages
            gc.freeze()  # what exists now is shared with the new workers: see _frozen_objects
            loader = DataLoader(
                _Chunks(chunks[start : start + per_set], model, detector), batch_size=None,
                shuffle=False, num_workers=workers, collate_fn=_as_is,
                multiprocessing_context="fork", prefetch_factor=2,
                worker_init_fn=partial(_set_threads, threads),
            )  # fmt: skip
            for results in loader:
                yield from results


@contextmanager
def _frozen_objects() -> Iterator[None]:
    """Keep the garbage collector off the objects ``gc.freeze`` moved aside, then give them back.

    A forked worker shares the parent's memory pages until it writes to them, and a collection
    writes to every object it examines: with the parent's objects frozen before each fork, the
    workers' collections leave those pages shared (about 100 MB less per worker). When the
    caller had frozen objects itself, everything stays frozen (``gc`` cannot tell them apart).
    """
    already = gc.get_freeze_count()
    try:
        yield
    finally:
        if not already:
            gc.unfreeze()


def _set_threads(threads: int, worker_id: int) -> None:
    torch.set_num_threads(threads)
