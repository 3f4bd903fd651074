"""Which age to read off a model's predicted distribution: its expectation or its median.

For a model file and one pipeline run's validation and test parts (the crops as ``evaluate``
reads them), the MAE per source and the mean signed error per age group of each point estimate,
with and without test-time flip averaging. The median minimises the expected absolute error under
the predicted distribution; the expectation, which the pipeline reports, the squared error.

    python -m research.point_estimate --workspace <a full run> \\
        --out results/research/point_estimate.json      # --model: default the shipped student
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from agedistill.data.tables import load_table
from agedistill.evaluation.metrics import group_label
from agedistill.models.files import load_model
from agedistill.models.ordinal import expected_age, median_age
from agedistill.models.predictions import predict_logits
from agedistill.pipeline.outputs import write_json
from agedistill.serving.loading import default_model_path

ESTIMATES = {"mean": expected_age, "median": median_age}


def scores(ages: torch.Tensor, rows: pd.DataFrame) -> dict[str, Any]:
    """MAE overall and per source, and mean signed error per age group (+: too old)."""
    err = pd.Series(ages.double().numpy(), index=rows.index) - rows["age"]
    groups = rows["age"].map(group_label)
    return {
        "mae": round(float(err.abs().mean()), 4),
        "mae_by_source": {
            s: round(float(e.abs().mean()), 4) for s, e in err.groupby(rows["source"])
        },
        "bias_by_age_group": {g: round(float(e.mean()), 3) for g, e in err.groupby(groups)},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workspace", type=Path, required=True, help="a run with data/ and models/")
    ap.add_argument("--model", type=Path, default=None, help="default: the shipped student")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model_file = args.model or default_model_path()
    model, config = load_model(model_file)
    result: dict[str, Any] = {"model": str(model_file), "workspace": str(args.workspace)}
    data = args.workspace / "data"
    for part in ("val", "test"):
        table = load_table(data / "split" / f"{part}.csv", data / "aligned" / "crops",
                           config["input_size"])  # fmt: skip
        for flip in (False, True):
            logits = predict_logits(model, table.images, flip=flip)
            for name, estimate in ESTIMATES.items():
                key = f"{part}_{name}{'_flip' if flip else ''}"
                result[key] = scores(estimate(logits, config["min_age"]), table.rows)
                print(key, result[key]["mae"], result[key]["mae_by_source"])
    write_json(result, args.out)


if __name__ == "__main__":
    main()
