"""Refit ``age_std_scale`` of finished age models on their run's validation part.

The factor on ``age_std`` is fitted around the age the code reads off the distribution
(:mod:`agedistill.models.predictions`: its median). Models trained before that choice changed
carry a factor fitted around the expectation; this writes a copy of each with the factor refitted
by the function training calls (:func:`agedistill.training.calibration.calibrate_model_file`),
the weights untouched, and prints the validation coverage before and after:

    python -m research.recalibrate --workspace <a full run> --out <folder> \\
        --models models/student.pt models/twin.pt models/class_teacher.pt
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

import torch

from agedistill.data.tables import load_table
from agedistill.models.files import load_model
from agedistill.training.calibration import calibrate_model_file


def recalibrate(workspace: Path, model: Path, out: Path) -> dict[str, Any]:
    """Copy ``model`` (relative to ``workspace``) into ``out`` and refit its factor there."""
    _, config = load_model(workspace / model)
    val = load_table(workspace / "data" / "split" / "val.csv",
                     workspace / "data" / "aligned" / "crops", config["input_size"])  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    copy = out / model.name
    shutil.copyfile(workspace / model, copy)
    result = calibrate_model_file(copy, val)
    return {"model": str(model), "written": str(copy), "before": config.get("age_std_scale"),
            **result}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workspace", type=Path, required=True, help="a run with data/ and models/")
    ap.add_argument("--models", type=Path, nargs="+", required=True, help="relative to it")
    ap.add_argument("--out", type=Path, required=True, help="folder for the refitted copies")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    results = [recalibrate(args.workspace, m, args.out) for m in args.models]
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
