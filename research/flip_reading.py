"""An age model file on a run's test or validation parts as ``evaluate`` scores it, two ways.

``agedistill predict`` reads each face twice by default, as it is and mirrored, and averages the
two age distributions. This scores a model file (the shipped student, say) on a finished run's
test part through :func:`agedistill.evaluation.scoring.evaluate_models`, the ``evaluate`` stage's
own code, and writes per source both readings' MAE, worst age group over MAE and the share of
true ages within ``age`` +- ``age_std``:

    python -m research.flip_reading --workspace <the full-v10 run> \\
        --model agedistill/assets/student.pt --out results/research/flip_reading.json

``--part val`` scores the validation part instead, the part a recipe may be chosen on.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from agedistill.config import load_params
from agedistill.data.tables import FaceTable, load_table
from agedistill.evaluation.scoring import evaluate_models
from agedistill.pipeline.outputs import write_json

# what each reading is called in evaluate's metrics: (MAE, worst group / MAE, coverage)
READINGS = {
    "one_way": ("mae", "worst_group_ratio", "std_coverage"),
    "flip": ("mae_flip", "worst_group_ratio_flip", "std_coverage_flip"),
}


PARTS = ("test", "val")


def flip_reading(model_file: Path, workspace: Path, part: str = "test") -> dict[str, Any]:
    """Overall and per-source MAE, worst age group / MAE and coverage on ``part``, each way of
    reading."""
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, not {part!r}")
    params = load_params(workspace / "params.yaml")
    split, crops = workspace / "data" / "split", workspace / "data" / "aligned" / "crops"

    def tables(size: int) -> tuple[FaceTable, FaceTable]:  # an age model reads only this part
        faces = load_table(split / f"{part}.csv", crops, size)
        return faces, faces

    results, _ = evaluate_models({"model": model_file}, tables, params.ages, params.evaluate)
    r = results["model"]
    out: dict[str, Any] = {"model": str(model_file), "workspace": str(workspace), "part": part}
    for reading, (m, ratio, cover) in READINGS.items():
        out[reading] = {
            "mae": r[m],
            "std_coverage": r[cover],
            "by_source": {
                s: {"n": v["n"], "mae": v[m], "worst_group_ratio": v[ratio],
                    "std_coverage": v[cover]}
                for s, v in r["by_source"].items()
            },
        }  # fmt: skip
    return out


def summary(scores: dict[str, Any], reading: str) -> str:
    """One line: the reading's MAE, then each source's MAE, worst group ratio and coverage."""
    cells = [f"{reading}: all {scores['mae']:.3f}"] + [
        f"{s} {v['mae']:.3f} (worst group {v['worst_group_ratio']:.3f}x, "
        f"coverage {v['std_coverage']:.1%})"
        for s, v in scores["by_source"].items()
    ]
    return " | ".join(cells)


def reading_parser(description: str) -> argparse.ArgumentParser:
    """The arguments of a script that reads one model file on a finished run's part."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--workspace", type=Path, required=True, help="a finished full run")
    ap.add_argument("--model", type=Path, required=True, help="an age model file (.pt)")
    ap.add_argument("--out", type=Path, required=True, help="JSON written here")
    ap.add_argument("--part", choices=PARTS, default="test", help="the part of the split read")
    ap.add_argument("--threads", type=int, default=2)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = reading_parser(__doc__.splitlines()[0]).parse_args(argv)
    torch.set_num_threads(args.threads)
    result = flip_reading(args.model, args.workspace, args.part)
    write_json(result, args.out)
    print("\n".join(summary(result[reading], reading) for reading in READINGS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
