"""Stage `evaluate`: test-set metrics, plots and cost of the student, its twin and both teachers."""

import argparse
from functools import cache
from pathlib import Path

from agedistill.config import load_params, raw_params
from agedistill.data.tables import FaceTable, load_table
from agedistill.evaluation.scoring import evaluate_models, summary_table, write_plots
from agedistill.pipeline.headline import headline, source_key
from agedistill.pipeline.outputs import write_json
from agedistill.pipeline.stage import stage_main
from agedistill.pipeline.tracking import mlflow_run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--crops", required=True)
    ap.add_argument("--split", required=True)
    ap.add_argument("--student", required=True)
    ap.add_argument("--twin", required=True, help="the student's no-distillation twin")
    ap.add_argument("--class-teacher", required=True)
    ap.add_argument("--rank-teacher", required=True)
    ap.add_argument("--metrics", required=True)
    ap.add_argument("--plots", required=True, help="folder for plot tables and PNGs")
    args = ap.parse_args()
    params = load_params()
    e, ages = params.evaluate, params.ages

    @cache
    def tables(size: int) -> tuple[FaceTable, FaceTable]:  # each model's faces at its side
        split = Path(args.split)
        return load_table(split / "train.csv", args.crops, size), load_table(
            split / "test.csv", args.crops, size
        )

    paths = {
        "student": args.student,
        "twin": args.twin,
        "class_teacher": args.class_teacher,
        "rank_teacher": args.rank_teacher,
    }
    with mlflow_run("evaluate", e.model_dump(), raw_params()) as run:
        results, preds = evaluate_models(paths, tables, ages, e)
        write_json(results, args.metrics)
        pngs = write_plots(results, preds, args.plots)
        for name, r in results.items():
            per_source = {source_key(s): m for s, m in r.get("by_source", {}).items()}
            run.log_metrics({f"{name}_{k}": v for k, v in {**r, "by_source": per_source}.items()})
        run.log_pipeline_metrics(headline(results))  # the parent run: this execution's row
        for png in pngs.values():
            run.log_artifact(png, "plots")
        run.log_artifact(args.metrics)
        if e.register_model:
            run.log_student(args.student)
    print(summary_table(results))


if __name__ == "__main__":
    stage_main("evaluate", main)
