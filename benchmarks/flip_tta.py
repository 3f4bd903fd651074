"""Test MAE of saved models with and without test-time flip augmentation, side by side.

Scores, on one pipeline's test part, its student and class teacher, every ablation run's student
(grouped by variant: mean and std over seeds) and, optionally, the brief's reference CNN (trained
by ``recipe_search.py``, read on the raw chips it was trained on). Each face is read once as it is
and once mirrored; "flip" averages the two class distributions (``agedistill predict --flip``).

    python benchmarks/flip_tta.py --workspace <full run> --ablation <full run>/ablation \\
        --reference /work/rs_cache/models/reference.pt --cache /work/rs_cache \\
        --out metrics/flip_tta.json
"""

from __future__ import annotations

import argparse
import re
import statistics
from pathlib import Path
from typing import Any

import torch

from agedistill.ablation import test_score
from agedistill.config import load_params
from agedistill.data import load_table
from agedistill.evaluation import write_json

KEYS = ("mae", "mae_flip", "mae_21_60", "mae_21_60_flip")


def _row(scored: dict[str, Any]) -> dict[str, float]:
    return {k: round(float(scored[k]), 4) for k in KEYS}


def _grouped(runs: dict[str, dict[str, float]]) -> dict[str, dict[str, Any]]:
    """Mean and std over seeds of each ablation variant (run names ``<variant>-s<seed>``)."""
    by_variant: dict[str, list[dict[str, float]]] = {}
    for name, row in sorted(runs.items()):
        by_variant.setdefault(re.sub(r"-s\d+$", "", name), []).append(row)
    out = {}
    for variant, rows in by_variant.items():
        out[variant] = {"seeds": len(rows)}
        for k in KEYS:
            values = [r[k] for r in rows]
            out[variant][k] = round(statistics.mean(values), 4)
            out[variant][f"{k}_std"] = round(statistics.stdev(values), 4) if len(rows) > 1 else 0.0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", type=Path, required=True, help="a finished full pipeline")
    ap.add_argument("--ablation", type=Path, help="scripts/ablation.py --out folder (models/)")
    ap.add_argument("--reference", type=Path, help="the reference CNN from recipe_search.py")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/recipe_search"),
                    help="recipe_search.py's crop cache (the reference's raw chips)")  # fmt: skip
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("metrics/flip_tta.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    w = args.workspace
    params = load_params(w / "params.yaml")
    cs_max = params.evaluate.cs_max
    size = params.student.input_size
    test = load_table(w / "data/split/test.csv", w / "data/aligned/crops", size)
    result: dict[str, Any] = {"test_faces": len(test), "pipeline": {}}
    for name in ("student", "class_teacher"):
        result["pipeline"][name] = _row(test_score(w / "models" / f"{name}.pt", test, cs_max))
        print(name, result["pipeline"][name])
    if args.ablation:
        runs = {
            f.stem: _row(test_score(f, test, cs_max))
            for f in sorted((args.ablation / "models").glob("*.pt"))
        }
        result["ablation_runs"] = runs
        result["ablation"] = _grouped(runs)
        for variant, row in result["ablation"].items():
            print("ablation", variant, row)
    if args.reference:
        from benchmarks.recipe_search import tables  # the raw chips the reference trained on

        (raw,) = tables(w / "data/split", args.cache, 64, None, parts=("test",))
        result["reference"] = _row(test_score(args.reference, raw, cs_max))
        print("reference", result["reference"])
    write_json(result, args.out)


if __name__ == "__main__":
    main()
