"""Stage `rank_teacher`: learn ordinal relation by recovering the age order of shuffled faces."""

import argparse
from pathlib import Path

from agedistill.config import load_params
from agedistill.data.tables import load_table
from agedistill.pipeline.stage import stage_main
from agedistill.training.harness import publish, training_stage
from agedistill.training.recipes import train_rank_teacher


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--crops", required=True)
    ap.add_argument("--split", required=True, help="folder with train.csv and val.csv")
    ap.add_argument("--model", required=True, help="output model file (.pt)")
    ap.add_argument("--metrics", required=True)
    ap.add_argument("--checkpoints", help="folder for per-epoch state (resume after a kill)")
    args = ap.parse_args()
    params = load_params()
    p = params.rank_teacher
    size = p.model.input_size
    train = load_table(Path(args.split) / "train.csv", args.crops, size)
    val = load_table(Path(args.split) / "val.csv", args.crops, size)
    data = [train.images, train.ages, val.images, val.ages]
    with training_stage(
        "rank_teacher", p.model_dump(), args.model, args.checkpoints, data,
        params.distributed.backend,
    ) as (run, tracker):  # fmt: skip
        metrics = train_rank_teacher(train, val, p, out=run)
        publish(run, tracker, metrics, args.metrics)


if __name__ == "__main__":
    stage_main("rank_teacher", main)
