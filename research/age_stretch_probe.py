"""Would stretching a model's ages away from the mean close the age-group bar?

Age models trained on an absolute-error loss pull their answers toward the training mean: old
faces read younger, children older. This scores a finished age model on its run's test part as
it is and with its ages stretched, ``age + k * (age - c)`` with ``c`` the validation part's mean
age, for each ``k`` given, and prints each source's MAE and worst age group's ratio to it
(the issue's bar: 2x). Read-only; the model file is not changed:

    python -m research.age_stretch_probe --workspace <a full run> \\
        --model agedistill/assets/student.pt --out results/research/age_stretch_probe.json
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from agedistill.data.tables import load_table
from agedistill.evaluation.metrics import mae
from agedistill.evaluation.scoring import by_source
from agedistill.pipeline.outputs import write_json
from agedistill.serving.loading import load_age_model

STRETCHES = (0.0, 0.02, 0.04, 0.06, 0.08)


def predict_part(model_file: Path, workspace: Path, part: str) -> pd.DataFrame:
    """The part's split rows with the model's age (its median, one reading per face: no flip)
    as ``pred``."""
    model = load_age_model(model_file, flip=False)
    table = load_table(workspace / "data" / "split" / f"{part}.csv",
                       workspace / "data" / "aligned" / "crops", size=model.input_size)  # fmt: skip
    crops = table.images.permute(0, 2, 3, 1).numpy()
    preds = [model.ages(crops[i : i + 256])[0] for i in range(0, len(crops), 256)]
    return table.rows.assign(pred=np.concatenate(preds))


def stretch_scores(test: pd.DataFrame, pred: np.ndarray) -> dict[str, Any]:
    """MAE overall, and per source its MAE, its worst age group and that group's ratio to it
    (the ratio :func:`agedistill.evaluation.scoring.by_source` reports)."""
    true = test["age"].to_numpy(float)
    out: dict[str, Any] = {"mae": mae(pred, true), "by_source": {}}
    for source, m in by_source(pred, true, test, cs_max=0).items():
        groups = m["mae_age_group"]
        out["by_source"][source] = {"mae": m["mae"], "worst_group": max(groups, key=groups.get),
                                    "worst_group_ratio": m["worst_group_ratio"]}  # fmt: skip
    return out


def stretched(ages: np.ndarray, centre: float, k: float) -> np.ndarray:
    """``ages`` moved away from ``centre`` by ``k`` times their distance to it."""
    return ages + k * (ages - centre)


def probe(model_file: Path, workspace: Path, stretches: tuple[float, ...]) -> dict[str, Any]:
    """Test-part scores of the model's ages stretched by each ``k`` around the val mean age."""
    centre = float(pd.read_csv(workspace / "data" / "split" / "val.csv")["age"].mean())
    test = predict_part(model_file, workspace, "test")
    pred = test["pred"].to_numpy(float)
    return {"model": str(model_file), "centre": centre,
            "stretch": {f"{k:g}": stretch_scores(test, stretched(pred, centre, k))
                        for k in stretches}}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", type=Path, required=True, help="a finished full run")
    ap.add_argument("--model", type=Path, required=True, help="an age model file (.pt)")
    ap.add_argument("--stretch", type=float, nargs="+", default=list(STRETCHES))
    ap.add_argument("--out", type=Path, required=True, help="JSON written here")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    result = probe(args.model, args.workspace, tuple(args.stretch))
    write_json(result, args.out)
    for k, s in result["stretch"].items():
        parts = " | ".join(
            f"{src} {v['mae']:.3f} ({v['worst_group']} {v['worst_group_ratio']:.3f}x)"
            for src, v in s["by_source"].items()
        )
        print(f"k={k}: all {s['mae']:.3f} | {parts}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
