"""The ``predict`` command: inputs -> (shard) -> (resume) -> batched predictor -> streaming table.

Rows are written as each file finishes, in input order (:mod:`agedistill.serving.predict_stream`);
``--resume`` skips the files already in the output; ``--shard K/N`` keeps a deterministic 1/N
of the files (:mod:`agedistill.serving.sharding`); the files are predicted in chunks by worker
processes (:mod:`agedistill.serving.predict_batch`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agedistill.serving.age_model import DEFAULT_FLIP
from agedistill.serving.annotate import AnnotationNamer
from agedistill.serving.inputs import iter_input_files
from agedistill.serving.loading import default_serving_path, load_age_model
from agedistill.serving.predict import predict_detector
from agedistill.serving.predict_batch import InputFile, default_workers, predict_batched
from agedistill.serving.predict_stream import open_table, table_format
from agedistill.serving.results import ImageResult
from agedistill.serving.rows import result_rows
from agedistill.serving.sharding import Shard, shard_key


@dataclass(frozen=True)
class PredictOptions:
    """Everything ``agedistill predict`` takes besides its input paths.

    ``model`` ``None`` is the shipped student (its ONNX twin); ``detect`` overrides
    :data:`agedistill.serving.predict.DETECT_DEFAULTS` (keys of
    :class:`~agedistill.faces.detection.DetectSettings`); ``progress`` ``None`` shows a bar when
    an input is a folder; ``workers`` ``None`` is one per core; ``threads`` are the compute
    threads of each predicting process (:func:`~agedistill.serving.predict_batch.predict_batched`).
    """

    model: str | Path | None = None
    out: str | Path | None = None
    annotate_dir: str | Path | None = None
    progress: bool | None = None
    detect: dict[str, Any] = field(default_factory=dict)
    flip: bool = DEFAULT_FLIP
    workers: int | None = None
    threads: int = 1
    resume: bool = False
    shard: Shard | None = None


@dataclass
class RunCounts:
    """What a run did: files listed, skipped as already done, predicted, and read."""

    listed: int = 0
    skipped: int = 0
    predicted: int = 0
    read: int = 0


def plan_inputs(
    paths: list[str | Path], opts: PredictOptions, done: set[str]
) -> tuple[list[InputFile], RunCounts]:
    """The files of ``paths`` to predict: this shard's, less those in ``done``, in input order.

    Annotated-copy names are given to every listed file (in input order, before skipping), so a
    resumed run names each copy as the full run would. The output table itself is never an
    input (it may lie in an input folder).
    """
    namer = AnnotationNamer(Path(opts.annotate_dir)) if opts.annotate_dir is not None else None
    own = Path(opts.out).resolve() if opts.out is not None else None
    counts = RunCounts()
    todo: list[InputFile] = []
    for path, base in iter_input_files(paths):
        if own is not None and base is not None and path.resolve() == own:
            continue
        if opts.shard is not None and not opts.shard.takes(shard_key(path, base)):
            continue
        counts.listed += 1
        annotate_to = namer.name(path, base) if namer is not None else None
        if str(path) in done:
            counts.skipped += 1
            continue
        todo.append(InputFile(path, annotate_to))
    return todo, counts


def run_predict(paths: list[str | Path], opts: PredictOptions) -> int:
    """The ``predict`` command: stream the table and return the exit code.

    Returns 0 when at least one input of this run could be read (faceless images count as read)
    or there was nothing left to do, 1 when none could. Raises
    :class:`~agedistill.models.errors.ModelFileError` for an unusable model file and
    :class:`~agedistill.serving.predict_stream.TableError` for an output in a format ``predict``
    does not write (before any model or file is read) or one ``--resume`` cannot continue.
    """
    from tqdm import tqdm

    table_format(opts.out)  # first: a wrong --out fails before a model or a file is read
    # before anything else: a bad --model fails fast; by default the shipped student's ONNX twin
    model = load_age_model(opts.model or default_serving_path(), opts.flip)
    detector = predict_detector(model, opts.detect)
    table = open_table(opts.out, opts.resume)
    try:
        todo, counts = plan_inputs(paths, opts, table.done)
        progress = opts.progress
        if progress is None:
            progress = any(Path(p).is_dir() for p in paths)
        workers = default_workers() if opts.workers is None else opts.workers
        with tqdm(total=len(todo), desc="predict", unit="img", disable=not progress) as bar:
            result: ImageResult
            for result in predict_batched(todo, model, detector, workers, opts.threads):
                table.writer.write(result_rows(result))
                counts.predicted += 1
                counts.read += result.read
                bar.update()
    finally:
        table.close()
    return _exit_code(counts)


def _exit_code(counts: RunCounts) -> int:
    if counts.skipped:
        print(
            f"agedistill predict: resumed: {counts.skipped} of {counts.listed} file(s) were "
            "already in the output",
            file=sys.stderr,
        )
    if counts.predicted and counts.read == 0:
        print(f"agedistill predict: none of {counts.predicted} input file(s) could be read",
              file=sys.stderr)  # fmt: skip
        return 1
    if counts.listed == 0:
        print("agedistill predict: no input files", file=sys.stderr)
        return 1
    return 0
