"""Stage `distill`: train the student on ground truth, soft targets and ranking hints."""

import argparse
from pathlib import Path

from agedistill.config import load_params
from agedistill.data.tables import load_table
from agedistill.models.files import load_model
from agedistill.pipeline.stage import stage_main
from agedistill.training.checkpoints import file_digest
from agedistill.training.harness import publish, training_stage
from agedistill.training.recipes import Teachers, train_student


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--crops", required=True)
    ap.add_argument("--split", required=True)
    ap.add_argument("--class-teacher", required=True)
    ap.add_argument("--rank-teacher", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--metrics", required=True)
    ap.add_argument("--checkpoints", help="folder for per-epoch state (resume after a kill)")
    args = ap.parse_args()
    params = load_params()
    arch, d = params.student, params.distill
    class_teacher, class_config = load_model(args.class_teacher)
    rank_teacher, rank_config = load_model(args.rank_teacher)
    size = params.align.size  # each network reads the batch resized to its own side
    split = Path(args.split)
    train = load_table(split / "train.csv", args.crops, size)
    val = load_table(split / "val.csv", args.crops, arch.input_size)
    unlabelled = None
    if d.unlabelled_ratio > 0:
        unlabelled = load_table(split / "unlabelled.csv", args.crops, size, labelled=False)
    stage_params = {
        **d.model_dump(),
        "model": arch.model_dump(),
        "ages": params.ages.model_dump(),
        "age_loss": params.age_loss.model_dump(),
        "rank_teacher_hint_stage": params.rank_teacher.hint_stage,
    }
    data = [train.images, train.ages, val.images, val.ages,
            file_digest(args.class_teacher), file_digest(args.rank_teacher)]  # fmt: skip
    if unlabelled is not None:
        data.append(unlabelled.images)
    with training_stage(
        "distill", stage_params, args.model, args.checkpoints, data, params.distributed.backend
    ) as (run, tracker):
        teachers = Teachers(
            class_teacher, rank_teacher, params.rank_teacher.hint_stage,
            rank_config["input_size"], class_config["input_size"],
        )  # fmt: skip
        metrics = train_student(
            train, val, arch, d, params.ages, teachers, out=run, loss=params.age_loss,
            crop=params.align.crop_settings(), unlabelled=unlabelled,
        )  # fmt: skip
        publish(run, tracker, metrics, args.metrics)


if __name__ == "__main__":
    stage_main("distill", main)
