"""Model files read end to end through ``predict`` on held-out files of every source.

The files are those of ``tests/data/<source>_heldout.csv``: every 13th face, in age order, of
the test part of the full three-source split (``profiles/full.yaml``: UTKFace's 2,002 test chips,
AAF's 2,002 test faces, APPA-REAL's ``valid`` part), never used to train or select a model of
that split. Each file goes through the model's recorded detector, the alignment and the model
exactly as ``agedistill predict`` runs it (each face read both ways, averaged with its mirror
image, unless the model is named in ``--no-flip``); the first face found is scored.

    python -m research.heldout_predict --models full-v10=agedistill/assets/student.pt \\
        full-v10-no-flip=agedistill/assets/student.pt full-v9=previous/student.pt \\
        --no-flip full-v10-no-flip --out results/research/heldout_predict

writes ``heldout_predict.json`` and ``heldout_predict.md`` (MAE, Spearman, faces found).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from agedistill.evaluation.metrics import mae
from agedistill.pipeline.outputs import write_json
from agedistill.serving.age_model import DEFAULT_FLIP
from agedistill.serving.loading import load_age_model
from agedistill.serving.predict import predict_detector, predict_files

TESTS_DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SOURCES = {"utkface": SHARED / "utkface" / "images", "aaf": SHARED / "aaf",
           "appa_real": SHARED / "appa_real"}  # fmt: skip


def heldout_files(source: str) -> tuple[list[Path], np.ndarray]:
    """The held-out files of ``source`` and their ages."""
    with open(TESTS_DATA / f"{source}_heldout.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return [SOURCES[source] / r["file"] for r in rows], np.array([float(r["age"]) for r in rows])


def read_through_predict(
    model_file: Path, files: list[Path], ages: np.ndarray, flip: bool = DEFAULT_FLIP
) -> dict[str, Any]:
    """MAE and Spearman of the first face ``predict`` finds in each file; files with none."""
    model = load_age_model(model_file, flip)
    results = list(predict_files(files, model, predict_detector(model), progress=False))
    found = np.array([bool(r.faces) for r in results])
    pred = np.array([r.faces[0].age if r.faces else np.nan for r in results])
    return {
        "n": len(files),
        "found": int(found.sum()),
        "mae": mae(pred[found], ages[found]),
        "spearman": float(pd.Series(pred[found]).corr(pd.Series(ages[found]), method="spearman")),
        "missed": [str(f.name) for f, ok in zip(files, found, strict=True) if not ok],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", required=True, metavar="NAME=FILE")
    ap.add_argument("--sources", nargs="+", default=list(SOURCES))
    ap.add_argument(
        "--no-flip",
        nargs="+",
        default=[],
        metavar="NAME",
        help="models read once (predict --no-flip)",
    )
    ap.add_argument("--out", type=Path, required=True, help="folder for the JSON and the table")
    args = ap.parse_args()
    models = dict(m.split("=", 1) for m in args.models)
    unknown = set(args.no_flip) - set(models)
    if unknown:
        ap.error(f"--no-flip names no model of --models: {', '.join(sorted(unknown))}")
    table: dict[str, dict[str, Any]] = {}
    for source in args.sources:
        files, ages = heldout_files(source)
        table[source] = {name: read_through_predict(Path(f), files, ages, name not in args.no_flip)
                         for name, f in models.items()}  # fmt: skip
        print(source, {k: round(v["mae"], 2) for k, v in table[source].items()})
    write_json({"models": models, "no_flip": args.no_flip, "by_source": table},
               args.out / "heldout_predict.json")  # fmt: skip
    lines = ["| source (held-out files) | " + " | ".join(models) + " |",
             "|---|" + "---|" * len(models)]  # fmt: skip
    for source, row in table.items():
        cells = [f"{r['mae']:.2f} (Spearman {r['spearman']:.2f}, {r['found']}/{r['n']} found)"
                 for r in row.values()]  # fmt: skip
        lines.append(f"| {source} ({row[next(iter(row))]['n']}) | " + " | ".join(cells) + " |")
    (args.out / "heldout_predict.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
