"""``predict`` over many files at the ``align`` stage's speed: chunks of files in worker processes.

The files are cut into chunks of ``detector.batch_size``. A chunk is decoded, searched with one
call of the detector's ``detect`` (the ``align`` stage's detector), aligned, and all its faces
go through the age model as one batch. Chunks run in ``workers`` forked processes (one compute
thread each, as in the ``align`` stage: small networks do not split well over threads) and come
back in input order, a few chunks ahead of the writer at most, so memory does not grow with the
number of files. Nothing here imports torch: with an ONNX model and the ``blazeface`` detector
the command never loads it. A process hands its freed heap back to the system after
each chunk (:func:`release_free_memory`), and the workers are forked with the parent's objects
frozen (:func:`gc.freeze`), so that they share its pages instead of copying them.

Each file's result is that of :func:`agedistill.serving.predict.predict_files` (the
one-file-at-a-time path): the same decoding, detection copy, alignment and model, only batched.
"""

from __future__ import annotations

import ctypes
import gc
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from agedistill.faces.detection import Detection, Detector
from agedistill.onnx_sessions import compute_threads, set_threads
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
    ages, stds = model.ages(np.ascontiguousarray(batch))
    return ages.tolist(), stds.tolist()


# The chunks, model and detector of the worker processes being started: forked workers find them
# here (nothing is pickled but a chunk's index and its results).
_WORK: tuple[list[Sequence[InputFile]], AgeModel, Detector] | None = None


def _worker_chunk(i: int) -> list[ImageResult]:
    """In a worker process: the results of chunk ``i`` of :data:`_WORK`."""
    assert _WORK is not None, "a worker process forked without work"
    chunks, model, detector = _WORK
    results = predict_chunk(chunks[i], model, detector)
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
        Compute threads (torch's and ONNX Runtime's) of each process that predicts (this one
        included, for the time it does). One is the fastest per core on CPU (see ``workers``);
        and since the thread count can move the float rounding, a fixed count makes a file's
        row independent of ``workers`` and of the other files in the run.

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
            with compute_threads(threads):  # not across the yields: the caller's code runs there
                results = predict_chunk(chunk, model, detector)
            release_free_memory()
            yield from results
        return
    per_set = max(1, WORKER_FILES // size)
    with _frozen_objects():
        for start in range(0, len(chunks), per_set):
            # fresh workers every WORKER_FILES files: a worker's memory creeps up over thousands
            # of files (allocator and runtime caches), and a new fork starts from the parent's
            # pages
            yield from _in_workers(chunks[start : start + per_set], model, detector, workers,
                                   threads)  # fmt: skip


def _in_workers(
    chunks: list[Sequence[InputFile]],
    model: AgeModel,
    detector: Detector,
    workers: int,
    threads: int,
) -> Iterator[ImageResult]:
    """Results of ``chunks`` from ``workers`` forked processes, in order, at most two chunks per
    worker ahead of the caller. A worker that dies (a crash in a decoder) ends the run with
    ``BrokenProcessPool``, as any error of the run would."""
    global _WORK
    _WORK = (chunks, model, detector)
    gc.freeze()  # what exists now is shared with the new workers: see _frozen_objects
    pool = ProcessPoolExecutor(workers, multiprocessing.get_context("fork"),
                               initializer=set_threads, initargs=(threads,))  # fmt: skip
    pending: deque[Future[list[ImageResult]]] = deque()
    try:
        for i in range(len(chunks)):
            pending.append(pool.submit(_worker_chunk, i))
            if len(pending) >= 2 * workers:
                yield from pending.popleft().result()
        while pending:
            yield from pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        _WORK = None


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
