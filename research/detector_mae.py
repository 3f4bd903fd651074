"""A model's test MAE per source with each face detector, read end to end through ``predict``.

Every file of a split's test part (``--split``: the ``test.csv`` of the ``split`` stage) goes
through the batched ``predict`` path (two worker processes) once per detector, the detectors back
to back in one run on the same files, with the same model file. The largest face of a file (the
``align`` stage's ``select: largest``) is scored against its label. Reported per source and
detector: faces found, MAE on the files every detector found a face in (paired) and on its own
found files, the landmarks' median distance from the first detector's (over the inter-ocular
distance), and images per second.

    python -m research.detector_mae --split data/split/test.csv \\
        --model agedistill/assets/student.pt --out results/research/detector_mae

writes ``detector_mae.json`` and ``detector_mae.md``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from agedistill.evaluation.metrics import mae
from agedistill.faces.detectors import DETECTORS
from agedistill.pipeline.machine import cpu_name
from agedistill.pipeline.outputs import write_json
from agedistill.serving.loading import load_age_model
from agedistill.serving.predict import predict_detector
from agedistill.serving.predict_batch import InputFile, predict_batched
from agedistill.serving.results import FacePrediction


def largest(faces: list[FacePrediction]) -> FacePrediction | None:
    """The face with the largest box, or ``None``."""
    return max(faces, key=lambda f: f.w * f.h) if faces else None


def run_detector(files: list[Path], model_file: Path, detector: str, workers: int) -> dict:
    """Largest-face age and landmarks per file through ``predict``; images per second."""
    model = load_age_model(model_file, flip=False)  # one reading per face, as measured
    det = predict_detector(model, {"detector": detector})
    start = time.perf_counter()
    results = list(predict_batched([InputFile(f) for f in files], model, det, workers))
    seconds = time.perf_counter() - start
    faces = [largest(r.faces) for r in results]
    return {
        "age": np.array([f.age if f else np.nan for f in faces]),
        "landmarks": [f.landmarks if f else None for f in faces],
        "images_per_s": len(files) / seconds,
    }


def landmark_error(a: np.ndarray | None, b: np.ndarray | None) -> float:
    """Mean landmark distance over the inter-ocular distance of ``a``."""
    if a is None or b is None:
        return np.nan
    return float(np.linalg.norm(a - b, axis=1).mean() / np.linalg.norm(a[0] - a[1]))


def compare(test: pd.DataFrame, model_file: Path, detectors: list[str], workers: int) -> dict:
    """Per source and detector: faces found, MAE (paired and own), landmark error, speed."""
    files = [Path(p) for p in test["path"]]
    runs = {d: run_detector(files, model_file, d, workers) for d in detectors}
    ages = test["age"].to_numpy(dtype=float)
    first = detectors[0]
    out: dict[str, Any] = {"images_per_s": {d: r["images_per_s"] for d, r in runs.items()}}
    for source in sorted(test["source"].unique()):
        rows = (test["source"] == source).to_numpy()
        both = rows & np.all([~np.isnan(r["age"]) for r in runs.values()], axis=0)
        entry: dict[str, Any] = {"n": int(rows.sum()), "found_by_all": int(both.sum())}
        for d, r in runs.items():
            own = rows & ~np.isnan(r["age"])
            errors = [landmark_error(runs[first]["landmarks"][i], r["landmarks"][i])
                      for i in np.flatnonzero(both)]  # fmt: skip
            entry[d] = {
                "found": int(own.sum()),
                "mae_paired": mae(r["age"][both], ages[both]),
                "mae_own": mae(r["age"][own], ages[own]),
                "landmark_err_median": float(np.nanmedian(errors)) if errors else None,
            }
        out[source] = entry
    return out


def table(result: dict, detectors: list[str]) -> str:
    """The markdown table of :func:`compare`'s result."""
    head = "| source (test files) | " + " | ".join(
        f"{d}: found, MAE paired / own" for d in detectors
    )
    lines = [head + " | MAE change | landmark err (median, x IOD) |",
             "|---|" + "---|" * (len(detectors) + 2)]  # fmt: skip
    for source, e in result.items():
        if source == "images_per_s":
            continue
        cells = [f"{e[d]['found']}, {e[d]['mae_paired']:.3f} / {e[d]['mae_own']:.3f}"
                 for d in detectors]  # fmt: skip
        change = e[detectors[-1]]["mae_paired"] - e[detectors[0]]["mae_paired"]
        err = e[detectors[-1]]["landmark_err_median"]
        lines.append(f"| {source} ({e['n']}) | " + " | ".join(cells)
                     + f" | {change:+.3f} | {err:.4f} |")  # fmt: skip
    speed = ", ".join(f"{d} {v:.1f}" for d, v in result["images_per_s"].items())
    return "\n".join(lines) + f"\n\nImages per second through predict (2 workers): {speed}.\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--split", type=Path, required=True, help="the split stage's test.csv")
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--detectors", nargs="+", default=list(DETECTORS), choices=DETECTORS)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True, help="folder for the JSON and the table")
    args = ap.parse_args()
    test = pd.read_csv(args.split)
    result = compare(test, args.model, args.detectors, args.workers)
    meta = {"model": str(args.model), "split": str(args.split), "cpu": cpu_name()}
    write_json({**meta, "detectors": args.detectors, "result": result},
               args.out / "detector_mae.json")  # fmt: skip
    text = table(result, args.detectors)
    (args.out / "detector_mae.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
