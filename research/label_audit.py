"""Faces every model of a run misreads by many years the same way: candidates for wrong labels.

``evaluate`` writes each test face's true age and every model's age (``plots/predictions.csv``).
Where the student, its twin and both teachers, four networks trained differently (two from
ImageNet), all err by at least ``--min-error`` years in the same direction, the label is as likely
wrong as the models. This lists those faces with their files, and per source the student's MAE
and worst age group over MAE with and without them: how much of a group's error a handful of
faces carries. It lists candidates; whether a label is wrong is for a person looking at the file.

    python -m research.label_audit --predictions results/full-v14/plots/predictions.csv \\
        --split <the full-v14 run>/data/split/test.csv --out results/research/label_audit.json

``--workspace <run> --part train`` reads the run's four models on another part of its split
instead, as ``evaluate`` reads the test part (the ranking teacher's probe fitted on the train
part). On the train part the models have learnt the labels they are checked against, so a face
they still all misread by ``--min-error`` is a strong candidate, and fewer wrong labels are
found than there are:

    python -m research.label_audit --workspace <the full-v14 run> --part train \\
        --out results/research/label_audit_train.json
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from agedistill.config import load_params
from agedistill.data.tables import FaceTable, load_table
from agedistill.evaluation.scoring import by_source, evaluate_models
from agedistill.pipeline.outputs import write_json

MIN_ERROR = 30.0  # years every model must be off, the same way, to list a face
KEYS = ("crop", "true_age")  # predictions.csv's columns that are not a model's ages
MODELS = ("student", "twin", "class_teacher", "rank_teacher")  # a run's models/NAME.pt
PARTS = ("train", "val", "test")


def suspects(faces: pd.DataFrame, models: list[str], min_error: float) -> pd.Series:
    """True for each face that every model in ``models`` misreads by ``min_error`` years or more,
    all too old or all too young."""
    err = faces[models].sub(faces["age"], axis=0).to_numpy(float)
    far = (np.abs(err) >= min_error).all(axis=1)
    same_way = (err > 0).all(axis=1) | (err < 0).all(axis=1)
    return pd.Series(far & same_way, index=faces.index)


def _student_scores(faces: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per source: the student's MAE and worst age group over it, as ``evaluate`` scores them."""
    scores = by_source(faces["student"].to_numpy(float), faces["age"].to_numpy(float), faces, 0)
    return {
        source: {"n": s["n"], "mae": s["mae"], "worst_group_ratio": s["worst_group_ratio"],
                 "worst_group": max(s["mae_age_group"], key=s["mae_age_group"].get)}
        for source, s in scores.items()
    }  # fmt: skip


def read_part(workspace: Path, part: str, models: dict[str, Path] | None = None) -> pd.DataFrame:
    """Every model's age for each face of a run's ``part``, as ``evaluate`` reads the test part:
    a ``predictions.csv`` table. ``models`` defaults to the run's four (``models/NAME.pt``)."""
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, not {part!r}")
    if models is None:
        models = {name: workspace / "models" / f"{name}.pt" for name in MODELS}
    params = load_params(workspace / "params.yaml")
    split, crops = workspace / "data" / "split", workspace / "data" / "aligned" / "crops"

    def tables(size: int) -> tuple[FaceTable, FaceTable]:  # the probe is fitted on train
        read = load_table(split / f"{part}.csv", crops, size)
        return (read if part == "train" else load_table(split / "train.csv", crops, size)), read

    _, ages = evaluate_models(models, tables, params.ages, params.evaluate)
    return ages


def label_audit(predictions: Path, split: Path, min_error: float = MIN_ERROR) -> dict[str, Any]:
    """The suspect faces of a run's test part and each source's scores with and without them."""
    out = audit(pd.read_csv(predictions), split, min_error)
    return {"predictions": str(predictions), **out}


def audit(ages: pd.DataFrame, split: Path, min_error: float = MIN_ERROR) -> dict[str, Any]:
    """The suspect faces among ``ages`` (a ``predictions.csv`` table of the faces in ``split``)
    and each source's scores with and without them."""
    models = [c for c in ages.columns if c not in KEYS]
    if "student" not in models:
        raise ValueError("the predictions have no 'student' column: not evaluate's table")
    rows = pd.read_csv(split, usecols=["crop", "source", "path", "age"])
    faces = ages.merge(rows, on="crop", how="left", validate="one_to_one")
    if faces["source"].isna().any() or not (faces["age"] == faces["true_age"]).all():
        raise ValueError(f"{split} does not hold the faces of the predictions with their ages")
    flagged = suspects(faces, models, min_error)
    files = faces["path"].map(lambda p: "/".join(Path(p).parts[-2:]))  # FOLDER/NAME in its source
    listed = faces[flagged].assign(file=files[flagged])
    out: dict[str, Any] = {
        "split": str(split),
        "models": models,
        "min_error": min_error,
        "suspects": listed[["source", "file", "age", *models]].to_dict("records"),
    }
    every, kept = _student_scores(faces), _student_scores(faces[~flagged])
    out["by_source"] = {s: {"all": every[s], "without_suspects": kept[s]} for s in every}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    read = ap.add_mutually_exclusive_group(required=True)
    read.add_argument("--predictions", type=Path, help="evaluate's predictions.csv (with --split)")
    read.add_argument("--workspace", type=Path, help="a finished run: read its models on --part")
    ap.add_argument("--split", type=Path, help="the run's data/split/test.csv")
    ap.add_argument("--part", choices=PARTS, default="train", help="the part --workspace reads")
    ap.add_argument("--min-error", type=float, default=MIN_ERROR)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True, help="JSON written here")
    args = ap.parse_args(argv)
    if args.predictions is not None:
        if args.split is None:
            ap.error("--predictions needs --split")
        result = label_audit(args.predictions, args.split, args.min_error)
    else:
        torch.set_num_threads(args.threads)
        split = args.workspace / "data" / "split" / f"{args.part}.csv"
        ages = read_part(args.workspace, args.part)
        result = {"workspace": str(args.workspace), "part": args.part,
                  **audit(ages, split, args.min_error)}  # fmt: skip
    write_json(result, args.out)
    for s in result["suspects"]:
        ages = " ".join(f"{m} {s[m]:.0f}" for m in result["models"])
        print(f"{s['source']} {s['file']}: labelled {s['age']}, read {ages}")
    for source, v in result["by_source"].items():
        a, b = v["all"], v["without_suspects"]
        print(f"{source}: MAE {a['mae']:.3f}, {a['worst_group']} {a['worst_group_ratio']:.3f}x; "
              f"without {a['n'] - b['n']} suspect(s) {b['mae']:.3f}, "
              f"{b['worst_group']} {b['worst_group_ratio']:.3f}x")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
