"""Stage `class_teacher`: the student's architecture trained as plain age classification.

It is both the source of soft targets for `distill` and the no-distillation baseline.
"""

import argparse
from pathlib import Path

from agedistill.config import load_params
from agedistill.data.tables import load_table
from agedistill.pipeline.stage import stage_main
from agedistill.training.harness import publish, training_stage
from agedistill.training.recipes import train_classifier


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--crops", required=True)
    ap.add_argument("--split", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--metrics", required=True)
    ap.add_argument("--checkpoints", help="folder for per-epoch state (resume after a kill)")
    args = ap.parse_args()
    params = load_params()
    arch, tp = params.student, params.class_teacher
    size = tp.input_size or arch.input_size
    train = load_table(Path(args.split) / "train.csv", args.crops, size)
    val = load_table(Path(args.split) / "val.csv", args.crops, size)
    stage_params = {
        "train": tp.model_dump(),
        "model": arch.model_dump(),
        "ages": params.ages.model_dump(),
        "age_loss": params.age_loss.model_dump(),
    }
    data = [train.images, train.ages, val.images, val.ages]
    with training_stage(
        "class_teacher", stage_params, args.model, args.checkpoints, data,
        params.distributed.backend,
    ) as (run, tracker):  # fmt: skip
        metrics = train_classifier(
            train, val, arch, tp, params.ages, out=run, loss=params.age_loss,
            crop=params.align.crop_settings(),
        )  # fmt: skip
        publish(run, tracker, metrics, args.metrics)


if __name__ == "__main__":
    stage_main("class_teacher", main)
