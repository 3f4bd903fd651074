"""Stage `distill`: train the student on ground truth, soft targets and ranking hints."""

import argparse
from pathlib import Path

from agedistill.checkpoint import load_model
from agedistill.config import load_params, raw_params
from agedistill.data import load_table
from agedistill.evaluation import write_json
from agedistill.stage import run_stage
from agedistill.tracking import stage_run
from agedistill.train import Optim, train_student


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--crops", required=True)
    ap.add_argument("--split", required=True)
    ap.add_argument("--class-teacher", required=True)
    ap.add_argument("--rank-teacher", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--metrics", required=True)
    args = ap.parse_args()
    params = load_params()
    arch, d = params.student, params.distill
    train = load_table(Path(args.split) / "train.csv", args.crops, arch.input_size)
    val = load_table(Path(args.split) / "val.csv", args.crops, arch.input_size)
    class_teacher, _ = load_model(args.class_teacher)
    rank_teacher, _ = load_model(args.rank_teacher)
    stage_params = {
        **d.model_dump(),
        "model": arch.model_dump(),
        "ages": params.ages.model_dump(),
        "rank_teacher_hint_stage": params.rank_teacher.hint_stage,
    }
    with stage_run("distill", stage_params, raw_params()) as run:
        metrics = train_student(
            train, val, arch.model_dump(), Optim(**d.train.model_dump()), params.ages.min_age,
            params.ages.num_classes, class_teacher, rank_teacher, d.temperature, d.gt_weight,
            d.kd_weight, d.hint_weight, d.hint_stage, params.rank_teacher.hint_stage, args.model,
            log=run.log_metrics, align_margin=params.align.margin,
        )  # fmt: skip
        write_json(metrics, args.metrics)
        run.log_artifact(args.model, "model")
        run.log_artifact(Path(args.model).with_suffix(".json"), "model")


if __name__ == "__main__":
    run_stage("distill", main)
