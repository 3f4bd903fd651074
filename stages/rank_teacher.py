"""Stage `rank_teacher`: learn ordinal relation by recovering the age order of shuffled faces."""

import argparse
from pathlib import Path

from agedistill.config import load_params, raw_params
from agedistill.data import load_table
from agedistill.evaluation import write_json
from agedistill.stage import run_stage
from agedistill.tracking import stage_run
from agedistill.train import Optim, train_rank_teacher


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--crops", required=True)
    ap.add_argument("--split", required=True, help="folder with train.csv and val.csv")
    ap.add_argument("--model", required=True, help="output model file (.pt)")
    ap.add_argument("--metrics", required=True)
    args = ap.parse_args()
    p = load_params().rank_teacher
    size = p.model.input_size
    train = load_table(Path(args.split) / "train.csv", args.crops, size)
    val = load_table(Path(args.split) / "val.csv", args.crops, size)
    with stage_run("rank_teacher", p.model_dump(), raw_params()) as run:
        metrics = train_rank_teacher(
            train, val, p.model.model_dump(), Optim(**p.train.model_dump()), p.k, p.min_gap,
            p.sampling, p.sequences_per_epoch, p.val_sequences, p.feature_dim, args.model,
            log=run.log_metrics,
        )  # fmt: skip
        write_json(metrics, args.metrics)
        run.log_artifact(args.model, "model")
        run.log_artifact(Path(args.model).with_suffix(".json"), "model")


if __name__ == "__main__":
    run_stage("rank_teacher", main)
