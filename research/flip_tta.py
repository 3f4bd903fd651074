"""Test MAE of saved models with and without test-time flip augmentation, side by side.

Scores, on one pipeline's test part, its student and class teacher (and both on the validation
part too), every finished ablation run's student (grouped by variant: mean and std over seeds) and,
optionally, the brief's reference CNN (trained by ``recipe_search.py``, read on the raw chips it
was trained on). Each face is read once as it is and once mirrored; "flip" averages the two class
distributions (what ``agedistill predict`` reads by default).

    python -m research.flip_tta --workspace <full run> --ablation <full run>/ablation \\
        --reference /work/rs_cache/models/reference.pt --cache /work/rs_cache \\
        --out results/research/flip_tta.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from agedistill.config import load_params
from agedistill.data.tables import load_table
from agedistill.models.files import load_model
from agedistill.pipeline.outputs import write_json
from research.ablation import stats, test_score

KEYS = ("mae", "mae_flip", "mae_21_60", "mae_21_60_flip")


def _row(scored: dict[str, Any]) -> dict[str, float]:
    return {k: round(float(scored[k]), 4) for k in KEYS}


def _grouped(runs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Mean and std over seeds of each ablation variant's figures."""
    by_variant: dict[str, list[dict[str, float]]] = {}
    for run in runs.values():
        by_variant.setdefault(run["variant"], []).append(run)
    out = {}
    for variant, rows in sorted(by_variant.items()):
        out[variant] = {"seeds": sorted(r["seed"] for r in rows)}
        for k in KEYS:
            s = stats([r[k] for r in rows])
            std = None if s["std"] is None else round(s["std"], 4)  # None: one seed
            out[variant][k], out[variant][f"{k}_std"] = round(s["mean"], 4), std
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", type=Path, required=True, help="a finished full pipeline")
    ap.add_argument("--ablation", type=Path, help="research/run_ablation.py --out folder (models/)")
    ap.add_argument("--reference", type=Path, help="the reference CNN from recipe_search.py")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/recipe_search"),
                    help="recipe_search.py's crop cache (the reference's raw chips)")  # fmt: skip
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("results/research/flip_tta.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    w = args.workspace
    params = load_params(w / "params.yaml")
    cs_max = params.evaluate.cs_max
    crops, split = w / "data/aligned/crops", w / "data/split"
    parts = {p: load_table(split / f"{p}.csv", crops, params.student.input_size)
             for p in ("val", "test")}  # fmt: skip
    result: dict[str, Any] = {"test_faces": len(parts["test"]), "pipeline": {}}
    for name in ("student", "class_teacher"):
        for part, faces in parts.items():
            key = name if part == "test" else f"{name} (val)"
            result["pipeline"][key] = _row(test_score(w / "models" / f"{name}.pt", faces, cs_max))
            print(key, result["pipeline"][key])
    if args.ablation:  # finished runs only (a running one already has a best-so-far model file)
        runs = {}
        for f in sorted((args.ablation / "runs").glob("*.json")):
            run = json.loads(f.read_text())
            model = args.ablation / "models" / f"{f.stem}.pt"
            runs[f.stem] = {"variant": run["variant"], "seed": run["seed"],
                            **_row(test_score(model, parts["test"], cs_max))}  # fmt: skip
        result["ablation_runs"] = runs
        result["ablation"] = _grouped(runs)
        for variant, row in result["ablation"].items():
            print("ablation", variant, row)
    if args.reference:
        from recipe_search import tables  # beside this script: the raw chips the reference read

        size = load_model(args.reference)[1]["input_size"]
        (raw,) = tables(split, args.cache, size, None, parts=("test",))
        result["reference"] = _row(test_score(args.reference, raw, cs_max))
        print("reference", result["reference"])
    write_json(result, args.out)


if __name__ == "__main__":
    main()
