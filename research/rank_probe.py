"""Ranking-teacher recipes at full scale: ``rank_teacher`` knobs changed, on a pipeline's split.

Each probe trains the ranking teacher exactly as the ``rank_teacher`` stage does
(:func:`~agedistill.training.recipes.train_rank_teacher`), on the workspace's crops and split,
with some ``rank_teacher.*`` params changed, and scores it as ``evaluate`` does: a ridge
regression of age on its frozen pooled features (fitted on the train part, read on the test
part, also with each face's features averaged with its mirror image's). A probe checkpoints every
epoch, so a killed one resumes.

    python -m research.rank_probe run --workspace <run> --name px144 \\
        --set rank_teacher.model.input_size=144 --set rank_teacher.train.precision=bf16
    python -m research.rank_probe table --workspace <run> --metrics results/research/rank_probe

A probe's folder (``<workspace>/rank-probe/<name>/``) is laid out as a workspace: its own
``params.yaml`` and ``models/rank_teacher.pt``, with the workspace's ``data/`` and class teacher
linked in, so a student distils from the probed ranking teacher with the ablation:

    python -m research.run_ablation run --workspace <run>/rank-probe/px144 --variants both \\
        --seeds 0 --out <run>/rank-probe/px144/ablation
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from research.ablation import Workspace
from research.probes import ProbeKind, add_probe_args, run_or_table

KIND = ProbeKind(section="rank_teacher", folder="rank-probe", stem="rank_probe",
                 val_key="best_val_kendall_tau", val_head="val τ")  # fmt: skip


def probe_score(model_file: Path, ws: Workspace) -> dict[str, Any]:
    """Test metrics of a ranking teacher's ridge probe, as ``evaluate`` scores it."""
    from agedistill.config import load_params
    from agedistill.data.tables import load_table
    from agedistill.evaluation.scoring import probe_ages, score
    from agedistill.models.files import load_model

    params = load_params(ws.params)
    model, config = load_model(model_file)
    side = config["input_size"]
    train = load_table(ws.split / "train.csv", ws.crops, side)
    test = load_table(ws.split / "test.csv", ws.crops, side)
    pred, pred_flip = probe_ages(model, train, test, params.ages, side)
    return score(pred, test, params.evaluate.cs_max, pred_flip)


def link_workspace(ws: Workspace, out: Path) -> None:
    """Link the workspace's data and class teacher into the probe folder ``out``."""
    (out / "models").mkdir(parents=True, exist_ok=True)
    links = {out / "data": ws.crops.parent.parent, out / "models" / "class_teacher.pt":
             ws.class_teacher}  # fmt: skip
    for link, target in links.items():
        if not link.exists():
            link.symlink_to(target.resolve())


def train_and_score(ws: Workspace, out: Path, threads: int) -> dict[str, Any]:
    """Train the ranking teacher with ``ws.params`` into ``out``; score its probe on test."""
    from agedistill.config import load_params, raw_params
    from agedistill.data.tables import load_table
    from agedistill.pipeline.tracking import mlflow_run
    from agedistill.training.checkpoints import TrainState, fingerprint
    from agedistill.training.loop import TrainingSetup
    from agedistill.training.recipes import train_rank_teacher

    params = load_params(ws.params)
    p = params.rank_teacher
    if threads:
        p = p.model_copy(update={"train": p.train.model_copy(update={"threads": threads})})
    size = p.model.input_size
    train = load_table(ws.split / "train.csv", ws.crops, size)
    val = load_table(ws.split / "val.csv", ws.crops, size)
    model_file = out / "models" / "rank_teacher.pt"
    link_workspace(ws, out)
    key = fingerprint("rank_probe", p.model_dump(), train.images, train.ages, val.images,
                      val.ages)  # fmt: skip
    state = TrainState(out / "checkpoints", key)  # a killed probe resumes its last epoch
    with mlflow_run("rank_probe", p.model_dump(), raw_params(ws.params),
                    state.mlflow_run_id()) as run:  # fmt: skip
        fit = train_rank_teacher(
            train, val, p,
            out=TrainingSetup(model_file, state=state, log=run.log_metrics,
                              mlflow_run_id=run.run_id, has_logged=run.has_metric),
        )  # fmt: skip
        del train, val
        result = {"fit": fit, "test": probe_score(model_file, ws)}
        run.log_metrics({f"test_{k}": v for k, v in result["test"].items()
                         if isinstance(v, float)})  # fmt: skip
    (out / "result.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    return result


def workspace_score(ws: Workspace, root: Path) -> dict[str, Any]:
    """The workspace ranking teacher's probe metrics, kept in ``root/workspace.json`` by digest."""
    from agedistill.training.checkpoints import file_digest

    digest, kept = file_digest(ws.rank_teacher), root / "workspace.json"
    if kept.exists() and (saved := json.loads(kept.read_text()))["rank_teacher"] == digest:
        return saved["test"]
    test = probe_score(ws.rank_teacher, ws)
    root.mkdir(parents=True, exist_ok=True)
    kept.write_text(json.dumps({"rank_teacher": digest, "test": test}, default=float) + "\n")
    return test


def own_teacher(ws: Workspace, root: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The workspace's ranking teacher: its probe's test metrics and its stage's fit metrics."""
    fit = json.loads((ws.rank_teacher.parent.parent / "metrics" / "rank_teacher.json").read_text())
    return workspace_score(ws, root), fit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("cmd", choices=["run", "table"])
    add_probe_args(ap, KIND)
    run_or_table(ap.parse_args(), ap, KIND, train_and_score, own_teacher)


if __name__ == "__main__":
    main()
