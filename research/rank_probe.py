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

from research.ablation import Workspace, with_overrides


def probe_score(model_file: Path, ws: Workspace) -> dict[str, Any]:
    """Test metrics of a ranking teacher's ridge probe, as ``evaluate`` scores it."""
    import numpy as np

    from agedistill.config import load_params
    from agedistill.data.tables import load_table
    from agedistill.evaluation.scoring import linear_probe, score
    from agedistill.models.files import load_model

    params = load_params(ws.params)
    model, config = load_model(model_file)
    side = config["input_size"]
    train = load_table(ws.split / "train.csv", ws.crops, side)
    test = load_table(ws.split / "test.csv", ws.crops, side)
    pred, pred_flip = (np.clip(p, params.ages.min_age, params.ages.max_age)
                       for p in linear_probe(model, train, test, size=side))  # fmt: skip
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


def _row(name: str, test: dict[str, Any], fit: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name, "val_kendall_tau": fit.get("best_val_kendall_tau"),
        "val_order_acc": fit.get("val_order_acc"), "train_wall_s": fit.get("train_wall_s"),
        "test_mae": test["mae"], "test_mae_flip": test["mae_flip"],
        "by_source": {s: {"mae": v["mae"], "mae_flip": v["mae_flip"]}
                      for s, v in test.get("by_source", {}).items()},
    }  # fmt: skip


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


def table(ws: Workspace, root: Path) -> list[dict[str, Any]]:
    """The workspace's ranking teacher, then every finished probe under ``root``, as table rows."""
    fit = json.loads((ws.rank_teacher.parent.parent / "metrics" / "rank_teacher.json").read_text())
    rows = [_row("workspace", workspace_score(ws, root), fit)]
    for path in sorted(root.glob("*/result.json")):
        r = json.loads(path.read_text())
        sets = (path.parent / "sets.txt").read_text().split()
        rows.append({**_row(path.parent.name, r["test"], r["fit"]), "sets": sets})
    return rows


def format_rows(rows: list[dict[str, Any]]) -> str:
    """The rows of :func:`table` as a Markdown table, one column per test source."""
    sources = sorted(rows[0]["by_source"])
    head = ["probe", "changes", "val τ", *sources, "all", "all with flip", "train s"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        tau = r["val_kendall_tau"]
        cells = [r["name"], " ".join(r.get("sets", [])) or "(the run's own)",
                 f"{tau:.3f}" if tau is not None else "",
                 *(f"{r['by_source'][s]['mae']:.3f}" for s in sources),
                 f"{r['test_mae']:.3f}", f"{r['test_mae_flip']:.3f}",
                 f"{r['train_wall_s']:.0f}" if r["train_wall_s"] else ""]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("cmd", choices=["run", "table"])
    ap.add_argument("--workspace", type=Path, default=Path("."), help="a finished pipeline")
    ap.add_argument("--out", type=Path,
                    help="probes' parent folder (default <workspace>/rank-probe)")  # fmt: skip
    ap.add_argument("--name", help="run: the probe's folder name")
    ap.add_argument("--set", action="append", default=[], metavar="rank_teacher.KEY=VALUE",
                    help="run: change a rank_teacher param (repeatable)")  # fmt: skip
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: the params')")
    ap.add_argument("--metrics", type=Path, default=Path("results/research/rank_probe"))
    args = ap.parse_args()
    ws = Workspace.of(args.workspace)
    ws.check()
    root = args.out or args.workspace / "rank-probe"
    if args.cmd == "run":
        if not args.name or not args.set:
            ap.error("run needs --name and at least one --set rank_teacher.KEY=VALUE")
        out = root / args.name
        probe = with_overrides(ws, args.set, out, section="rank_teacher")
        (out / "sets.txt").write_text("\n".join(args.set) + "\n")
        train_and_score(probe, out, args.threads)
    rows = table(ws, root)
    args.metrics.mkdir(parents=True, exist_ok=True)
    (args.metrics / "rank_probe.json").write_text(json.dumps(rows, indent=2) + "\n")
    (args.metrics / "rank_probe.md").write_text(format_rows(rows) + "\n")
    print(format_rows(rows))


if __name__ == "__main__":
    main()
