"""Stage `twin`: the student's network trained as `distill` trains it, without the teachers."""

import argparse
from pathlib import Path

from agedistill.config import load_params
from agedistill.data.tables import load_table
from agedistill.pipeline.stage import stage_main
from agedistill.training.harness import publish, training_stage
from agedistill.training.recipes import TWIN_DISTILL_FIELDS, train_student


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--crops", required=True)
    ap.add_argument("--split", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--metrics", required=True)
    ap.add_argument("--checkpoints", help="folder for per-epoch state (resume after a kill)")
    args = ap.parse_args()
    params = load_params()
    arch, d = params.student, params.distill
    split = Path(args.split)
    train = load_table(split / "train.csv", args.crops, params.align.size)  # as distill reads it
    val = load_table(split / "val.csv", args.crops, arch.input_size)
    stage_params = {
        **{k: v for k, v in d.model_dump().items() if k in TWIN_DISTILL_FIELDS},
        "model": arch.model_dump(),
        "ages": params.ages.model_dump(),
        "age_loss": params.age_loss.model_dump(),
    }
    data = [train.images, train.ages, val.images, val.ages]
    with training_stage(
        "twin", stage_params, args.model, args.checkpoints, data, params.distributed.backend
    ) as (run, tracker):
        metrics = train_student(
            train, val, arch, d, params.ages, None, out=run, loss=params.age_loss,
            crop=params.align.crop_settings(),
        )  # fmt: skip
        publish(run, tracker, metrics, args.metrics)


if __name__ == "__main__":
    stage_main("twin", main)
