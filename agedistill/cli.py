"""Command line: ``agedistill exp | predict | export``.

* ``agedistill exp PROFILE [DVC ARGS...]``: run the pipeline with a params profile.
* ``agedistill predict PATH... [--model FILE|FILE.onnx] [--out preds.csv|.json|.jsonl]
  [--annotate DIR] [--no-flip] [--workers N] [--resume] [--shard K/N]``: ages for every face in
  photos (files or folders, recursive), each face read as it is and mirrored unless ``--no-flip``,
  rows streamed in input order; default model: the shipped student.
* ``agedistill export --format onnx|torchscript --out FILE [--model FILE] [--flip]``.
* ``agedistill report [METRICS] | --exps``: the MAE table of one run, or one row per experiment.
"""

from __future__ import annotations

import argparse
import re
import sys
import warnings


def _parser() -> argparse.ArgumentParser:
    from agedistill.faces.detectors import DETECTORS
    from agedistill.serving.age_model import DEFAULT_FLIP

    ap = argparse.ArgumentParser(
        prog="agedistill", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = ap.add_subparsers(dest="command", required=True)
    exp = sub.add_parser("exp", help="run the pipeline with a params profile (dvc exp run -S ...)")
    exp.add_argument("profile", help="YAML file of params overrides, e.g. profiles/full.yaml")
    exp.add_argument("dvc_args", nargs=argparse.REMAINDER, help="passed on to dvc exp run")

    pred = sub.add_parser("predict", help="ages for every face in photos (files or folders)")
    pred.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (recursive)")
    pred.add_argument(
        "--model", help="model file, or an exported .onnx (default: the shipped student)"
    )
    pred.add_argument(
        "--out", help="preds.csv, preds.json or preds.jsonl, nothing else (default: CSV on stdout)"
    )
    pred.add_argument("--annotate", metavar="DIR", help="write images with boxes and ages here")
    pred.add_argument(
        "--flip",
        action=argparse.BooleanOptionalAction,
        default=DEFAULT_FLIP,
        help="also read each face mirrored and average the two readings (default: on; "
        "--no-flip: one reading, half the age model's time)",
    )
    # detection defaults: agedistill.faces.detection.DETECT, shared with align (None = use them)
    pred.add_argument(
        "--detector",
        choices=DETECTORS,
        help="face detector (default: the one the model's training faces were found with)",
    )
    pred.add_argument("--min-prob", type=float, help="detection probability floor (0.95)")
    pred.add_argument("--min-face-size", type=int, help="smallest face in px (40)")
    pred.add_argument("--detect-max-side", type=int, help="detect on a copy this large (640)")
    pred.add_argument("--no-progress", action="store_true", help="no progress bar on folders")
    pred.add_argument(
        "--workers",
        type=_non_negative_int,
        help="processes that decode, detect and age files in parallel (default: one per core; "
        "0: all in this process)",
    )
    pred.add_argument(
        "--resume", action="store_true", help="skip the files already in --out, append the rest"
    )
    pred.add_argument(
        "--shard", metavar="K/N", type=_shard, help="only the K-th of N parts (by path hash)"
    )
    pred.add_argument(
        "--threads",
        type=_positive_int,
        help="compute threads of each process that predicts (default: 1, the fastest per core)",
    )

    rep = sub.add_parser("report", help="print the MAE table of an evaluate metrics file")
    rep.add_argument("metrics", nargs="?", default="metrics/evaluate.json")
    rep.add_argument(
        "--exps",
        action="store_true",
        help="one row per DVC experiment: changed params, student and class-teacher MAE, gain",
    )

    exp_ = sub.add_parser("export", help="export a model to ONNX or TorchScript")
    exp_.add_argument("--format", required=True, choices=["onnx", "torchscript"])
    exp_.add_argument("--out", required=True, help="file to write")
    exp_.add_argument("--model", help="model file (default: the shipped student)")
    exp_.add_argument(
        "--flip",
        action="store_true",
        help="a graph that reads each face both ways, as predict does by default; default: once",
    )
    return ap


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, not {value}")
    return value


def _shard(text: str):
    from agedistill.serving.sharding import parse_shard

    try:
        return parse_shard(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _report(path: str) -> int:
    import json
    from pathlib import Path

    from agedistill.evaluation.scoring import summary_table
    from agedistill.pipeline.headline import gain_line

    try:
        results = json.loads(Path(path).read_text())
        print(summary_table(results))
        if line := gain_line(results):
            print(line)
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"agedistill report: error: {path}: {e}", file=sys.stderr)
        return 2
    return 0


def _report_exps() -> int:
    from agedistill.pipeline.experiments import ExpShowError, exp_show, format_rows, rows

    try:
        print(format_rows(rows(exp_show())))
    except ExpShowError as e:
        print(f"agedistill report --exps: error: {e}", file=sys.stderr)
        return 2
    return 0


def _predict(args: argparse.Namespace) -> int:
    from agedistill.serving.predict_run import PredictOptions, run_predict

    given = {
        "detector": args.detector,
        "min_prob": args.min_prob,
        "min_face_size": args.min_face_size,
        "detect_max_side": args.detect_max_side,
    }
    detect = {k: v for k, v in given.items() if v is not None}
    progress = False if args.no_progress else None
    if args.threads:
        from agedistill.onnx_sessions import set_threads

        set_threads(args.threads)
    opts = PredictOptions(
        model=args.model, out=args.out, annotate_dir=args.annotate, progress=progress,
        detect=detect, flip=args.flip, workers=args.workers, threads=args.threads or 1,
        resume=args.resume, shard=args.shard,
    )  # fmt: skip
    return run_predict(args.paths, opts)


def _export(args: argparse.Namespace) -> int:
    from agedistill.serving.export import export_model

    out = export_model(args.format, args.out, args.model, args.flip)
    print(f"agedistill export: wrote {out}", file=sys.stderr)
    return 0


# what `pip install .` leaves out (the [pipeline] extra) but these commands import
PIPELINE_PACKAGES = {
    "exp": ("pydantic", "yaml", "dvc"),
    "report": ("pydantic", "yaml", "pandas", "matplotlib"),
}


def _missing_pipeline_packages(command: str) -> list[str]:
    """The pipeline packages ``command`` needs that are not installed."""
    from importlib.util import find_spec

    return [m for m in PIPELINE_PACKAGES.get(command, ()) if find_spec(m) is None]


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``agedistill`` command; returns the exit code.

    Exit codes: 0 success; 1 ``predict`` could read none of its inputs; 2 usage error, an
    unusable ``--model`` file or an ``--out`` predict cannot write (one line on stderr naming the
    file and the problem).
    """
    args = _parser().parse_args(argv)
    shown = warnings.formatwarning
    warnings.formatwarning = lambda message, *_, **__: (
        f"agedistill {args.command}: warning: {message}\n"
    )  # one line, as the errors below; restored for a caller that runs main in-process
    try:
        return _run(args)
    finally:
        warnings.formatwarning = shown


def _run(args: argparse.Namespace) -> int:
    missing = _missing_pipeline_packages(args.command)
    if missing:
        print(f"agedistill {args.command}: error: needs {', '.join(missing)}; install the pipeline "
              "extra: pip install 'agedistill[pipeline]'", file=sys.stderr)  # fmt: skip
        return 2
    if args.command == "exp":
        from agedistill.config import ParamsError
        from agedistill.pipeline.profiles import run_profile

        try:
            return run_profile(args.profile, args.dvc_args)
        except (ParamsError, OSError, ValueError) as e:
            print(f"agedistill exp: error: {e}", file=sys.stderr)
            return 2
    if args.command == "report":
        return _report_exps() if args.exps else _report(args.metrics)
    from agedistill.models.errors import ModelFileError
    from agedistill.serving.predict_stream import TableError

    try:
        return _predict(args) if args.command == "predict" else _export(args)
    except (ModelFileError, TableError) as e:
        # one line, without the terminal colour codes some torch messages carry
        message = re.sub(r"\x1b\[[0-9;]*m", "", " ".join(str(e).split()))
        print(f"agedistill {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
