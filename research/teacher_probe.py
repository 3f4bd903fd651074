"""Class-teacher recipes at full scale: ``class_teacher`` knobs changed, on a pipeline's split.

Each probe trains the class teacher exactly as the ``class_teacher`` stage does
(:func:`~agedistill.training.recipes.train_classifier`), on the workspace's crops and split, with
some ``class_teacher.*`` params changed, and scores it on the test part; the table puts every probe
beside the workspace's own class teacher. A probe checkpoints every epoch, so a killed one resumes.

    python -m research.teacher_probe run --workspace <run> --name px144 \\
        --set class_teacher.input_size=144 --set class_teacher.max_shift=9 --threads 1
    python -m research.teacher_probe table --workspace <run> \\
        --metrics results/research/teacher_probe

The mean of several class teachers' expected ages (the expected age of their mean predicted
distribution), scored on the same test part, each teacher at its own input side:

    python -m research.teacher_probe ensemble --workspace <run> \\
        --models <run>/models/class_teacher.pt <run>/teacher-probe/px144/models/class_teacher.pt

Probes go to ``<workspace>/teacher-probe/<name>/`` (``--out`` changes the parent folder): its
``params.yaml``, ``models/class_teacher.pt``, ``checkpoints/`` and ``result.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from research.ablation import Workspace, class_teacher_score, test_score
from research.probes import ProbeKind, add_probe_args, run_or_table


def train_and_score(ws: Workspace, out: Path, threads: int) -> dict[str, Any]:
    """Train the class teacher with ``ws.params`` into ``out``; score it on the test part."""
    from agedistill.config import load_params, raw_params
    from agedistill.data.tables import load_table
    from agedistill.pipeline.tracking import mlflow_run
    from agedistill.training.checkpoints import TrainState, fingerprint
    from agedistill.training.loop import TrainingSetup
    from agedistill.training.recipes import train_classifier

    params = load_params(ws.params)
    arch = params.student
    tp = params.class_teacher.model_copy(update={"threads": threads} if threads else {})
    size = tp.input_size or arch.input_size
    train = load_table(ws.split / "train.csv", ws.crops, size)
    val = load_table(ws.split / "val.csv", ws.crops, size)
    stage_params = {"train": tp.model_dump(), "model": arch.model_dump(),
                    "ages": params.ages.model_dump(),
                    "age_loss": params.age_loss.model_dump()}  # fmt: skip
    model_file = out / "models" / "class_teacher.pt"
    model_file.parent.mkdir(parents=True, exist_ok=True)
    key = fingerprint("teacher_probe", stage_params, train.images, train.ages, val.images, val.ages)
    state = TrainState(out / "checkpoints", key)  # a killed probe resumes its last epoch
    with mlflow_run("teacher_probe", stage_params, raw_params(ws.params),
                    state.mlflow_run_id()) as run:  # fmt: skip
        fit = train_classifier(
            train, val, arch, tp, params.ages,
            out=TrainingSetup(model_file, state=state, log=run.log_metrics,
                              mlflow_run_id=run.run_id, has_logged=run.has_metric),
            loss=params.age_loss, crop=params.align.crop_settings(),
        )  # fmt: skip
        del train, val
        test = load_table(ws.split / "test.csv", ws.crops, size)
        result = {"fit": fit, "test": test_score(model_file, test, params.evaluate.cs_max)}
        run.log_metrics({f"test_{k}": v for k, v in result["test"].items()
                         if isinstance(v, float)})  # fmt: skip
    (out / "result.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    return result


def ensemble_score(ws: Workspace, models: list[Path], cs_max: int) -> dict[str, dict[str, Any]]:
    """Test scores of each model and of their mean expected age, each model at its own side."""
    import numpy as np

    from agedistill.data.tables import load_table
    from agedistill.evaluation.scoring import score
    from agedistill.models.files import load_model
    from agedistill.models.predictions import predict_ages_and_flipped

    preds, tables = {}, {}
    for path in models:
        net, config = load_model(path)
        side = config["input_size"]
        if side not in tables:
            tables[side] = load_table(ws.split / "test.csv", ws.crops, side)
        plain, flipped = predict_ages_and_flipped(net, tables[side].images, config["min_age"])
        preds[str(path)] = (plain.numpy(), flipped.numpy())
    test = next(iter(tables.values()))  # the same rows and ages at every side

    def mean_score(keys: list[str]) -> dict[str, Any]:
        plain = np.mean([preds[k][0] for k in keys], axis=0)
        flipped = np.mean([preds[k][1] for k in keys], axis=0)
        return score(plain, test, cs_max, flipped)

    return {**{k: mean_score([k]) for k in preds}, "ensemble": mean_score(list(preds))}


KIND = ProbeKind(section="class_teacher", folder="teacher-probe", stem="teacher_probe",
                 val_key="best_val_mae", val_head="val MAE")  # fmt: skip


def own_teacher(ws: Workspace, root: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The workspace's class teacher: its test metrics and its stage's fit metrics."""
    fit = json.loads((ws.class_teacher.parent.parent / "metrics" / "class_teacher.json")
                     .read_text())  # fmt: skip
    return class_teacher_score(ws), fit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("cmd", choices=["run", "table", "ensemble"])
    add_probe_args(ap, KIND)
    ap.add_argument("--models", type=Path, nargs="+", help="ensemble: class-teacher files")
    args = ap.parse_args()
    if args.cmd != "ensemble":
        run_or_table(args, ap, KIND, train_and_score, own_teacher)
        return
    if not args.models or len(args.models) < 2:
        ap.error("ensemble needs --models with two or more class-teacher files")
    from agedistill.config import load_params

    ws = Workspace.of(args.workspace)
    ws.check()
    scores = ensemble_score(ws, args.models, load_params(ws.params).evaluate.cs_max)
    args.metrics.mkdir(parents=True, exist_ok=True)
    (args.metrics / "ensemble.json").write_text(json.dumps(scores, indent=2) + "\n")
    print(json.dumps({k: {"mae": v["mae"], "mae_flip": v["mae_flip"]}
                      for k, v in scores.items()}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
