"""Stage `class_teacher`: the student's architecture trained as plain age classification.

It is both the source of soft targets for `distill` and the no-distillation baseline.
"""

import argparse
from pathlib import Path

from agedistill.config import load_params, raw_params
from agedistill.data import load_table
from agedistill.evaluation import write_json
from agedistill.stage import run_stage
from agedistill.tracking import stage_run
from agedistill.train import Optim, train_classifier


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--crops", required=True)
    ap.add_argument("--split", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--metrics", required=True)
    args = ap.parse_args()
    params = load_params()
    arch, tp = params.student, params.class_teacher
    train = load_table(Path(args.split) / "train.csv", args.crops, arch.input_size)
    val = load_table(Path(args.split) / "val.csv", args.crops, arch.input_size)
    stage_params = {
        "train": tp.model_dump(),
        "model": arch.model_dump(),
        "ages": params.ages.model_dump(),
    }
    with stage_run("class_teacher", stage_params, raw_params()) as run:
        metrics = train_classifier(
            train, val, arch.model_dump(), Optim(**tp.model_dump()), params.ages.min_age,
            params.ages.num_classes, args.model, log=run.log_metrics,
            align_margin=params.align.margin,
        )  # fmt: skip
        write_json(metrics, args.metrics)
        run.log_artifact(args.model, "model")
        run.log_artifact(Path(args.model).with_suffix(".json"), "model")


if __name__ == "__main__":
    run_stage("class_teacher", main)
