"""Cross-dataset protocol: train on every source but one, test on all of the held-out one.

For each held-out source, the student's net is trained with the class teacher's recipe (the
no-distillation model: no teacher may have seen the held-out source, and the pipeline's teachers
have) on the other sources, split by ``split.method: cross_dataset``; it is scored on every face
of the held-out source, and again on the rows of that source's in-domain test part (the
pipeline's ``stratified`` split), so the table sets the cross-dataset MAE beside the in-domain
MAE of the pipeline's own no-distillation model on the same faces.

    python -m research.cross_dataset run --workspace <finished pipeline run> \\
        --holdouts utkface aaf appa_real --out runs/cross_dataset \\
        --metrics results/research/cross_dataset
    python -m research.cross_dataset table --out runs/cross_dataset \\
        --metrics results/research/cross_dataset

The workspace is a pipeline run folder (``params.yaml``, ``data/aligned``, ``data/split``,
``models/class_teacher.pt``). Each run checkpoints every epoch (``<out>/checkpoints/HOLDOUT``)
and a finished run (``<out>/runs/HOLDOUT.json``) is skipped, so a killed grid resumes.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from agedistill.config import Params, load_params
from agedistill.data.splits import apply_age_range, make_split
from agedistill.data.tables import FaceTable, load_table
from agedistill.pipeline.outputs import write_json
from agedistill.training.checkpoints import TrainState, fingerprint
from agedistill.training.loop import TrainingSetup
from agedistill.training.recipes import train_classifier
from research.ablation import test_score


@dataclass(frozen=True)
class Grid:
    """Where the protocol reads the pipeline run and writes its own runs."""

    workspace: Path
    out: Path
    threads: int = 2
    epochs: int = 0  # 0: the class teacher's

    @property
    def crops(self) -> Path:
        return self.workspace / "data" / "aligned" / "crops"

    def params(self) -> Params:
        return load_params(self.workspace / "params.yaml")


def cross_tables(grid: Grid, params: Params, holdout: str) -> dict[str, pd.DataFrame]:
    """Train / val rows of the other sources and the held-out source's rows (all of them)."""
    manifest = pd.read_csv(grid.workspace / "data" / "aligned" / "manifest.csv",
                           dtype={"subject": str})  # fmt: skip
    ages, s = params.ages, params.split
    kept, _ = apply_age_range(manifest, ages.min_age, ages.max_age, ages.out_of_range)
    split = make_split(kept, method="cross_dataset", holdout=holdout, seed=s.seed,
                       val_fraction=s.val_fraction, age_bin=s.age_bin)  # fmt: skip
    return {part: split[split["split"] == part] for part in ("train", "val", "test")}


def _table(rows: pd.DataFrame, folder: Path, name: str, crops: Path, size: int) -> FaceTable:
    folder.mkdir(parents=True, exist_ok=True)
    rows.to_csv(folder / f"{name}.csv", index=False)
    return load_table(folder / f"{name}.csv", crops, size)


def run_holdout(grid: Grid, holdout: str) -> dict[str, Any]:
    """Train without ``holdout`` (or reuse the finished run) and score on it."""
    done = grid.out / "runs" / f"{holdout}.json"
    if done.is_file():
        return json.loads(done.read_text())
    params = grid.params()
    size = params.student.input_size
    tables = cross_tables(grid, params, holdout)
    folder = grid.out / "tables" / holdout
    faces = {k: _table(v, folder, k, grid.crops, size) for k, v in tables.items()}
    in_domain = pd.read_csv(grid.workspace / "data" / "split" / "test.csv")
    in_domain = in_domain[in_domain["source"] == holdout]
    same_rows = _table(in_domain, folder, "in_domain_test", grid.crops, size)
    opt = params.class_teacher.model_copy(
        update={"threads": grid.threads, "epochs": grid.epochs or params.class_teacher.epochs}
    )
    model_file = grid.out / "models" / f"{holdout}.pt"
    model_file.parent.mkdir(parents=True, exist_ok=True)
    key = fingerprint("cross_dataset", holdout, opt.model_dump(), params.student.model_dump(),
                      params.age_loss.model_dump(), faces["train"].ages, faces["val"].ages,
                      tables["train"]["path"].tolist())  # fmt: skip
    state = TrainState(grid.out / "checkpoints" / holdout, key)
    start = time.perf_counter()
    fit = train_classifier(
        faces["train"], faces["val"], params.student, opt, params.ages,
        out=TrainingSetup(model_file, state=state), loss=params.age_loss,
        crop=params.align.crop_settings(),
    )  # fmt: skip
    cs_max = params.evaluate.cs_max
    whole = test_score(model_file, faces["test"], cs_max)
    pipeline_model = grid.workspace / "models" / "class_teacher.pt"
    result = {
        "holdout": holdout,
        "trained_on": sorted(set(tables["train"]["source"])),
        "n_train": len(faces["train"]),
        "n_val": len(faces["val"]),
        "n_test": len(faces["test"]),
        "epochs": opt.epochs,
        "val_mae": fit.get("best_val_mae", fit.get("val_mae")),
        "test": whole,
        "in_domain_test_rows": len(same_rows),
        "cross_on_in_domain_rows": test_score(model_file, same_rows, cs_max),
        "in_domain_model_on_same_rows": test_score(pipeline_model, same_rows, cs_max),
        "train_wall_s": round(time.perf_counter() - start, 1),
    }
    write_json(result, done)
    return result


def table(out: Path) -> dict[str, Any]:
    """Every finished run as a JSON-able summary and a markdown table."""
    runs = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*.json"))]
    rows = []
    for r in runs:
        # the held-out source's own rows (a copy of one of its images in another source follows
        # it into the test part, but is not a face of the held-out source)
        test = r["test"].get("by_source", {}).get(r["holdout"], r["test"])
        groups = test["mae_age_group"]
        rows.append({
            "holdout": r["holdout"], "trained_on": r["trained_on"],
            "n_test": test.get("n", r["n_test"]), "mae": test["mae"], "cs5": test.get("cs5"),
            "worst_group": max(groups, key=groups.get), "worst_group_mae": max(groups.values()),
            "in_domain_rows": r["in_domain_test_rows"],
            "cross_mae_on_in_domain_rows": r["cross_on_in_domain_rows"]["mae"],
            "in_domain_mae_on_same_rows": r["in_domain_model_on_same_rows"]["mae"],
            "val_mae": r["val_mae"], "train_wall_s": r["train_wall_s"],
        })  # fmt: skip
    lines = [
        "| held out | trained on | test faces | MAE (all of it) | CS(5) | worst age group | "
        "MAE on its in-domain test part: cross / in-domain | val MAE (other sources) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['holdout']} | {' + '.join(r['trained_on'])} | {r['n_test']:,} | "
            f"**{r['mae']:.2f}** | {r['cs5']:.3f} | {r['worst_group']} ({r['worst_group_mae']:.2f})"
            f" | {r['cross_mae_on_in_domain_rows']:.2f} / {r['in_domain_mae_on_same_rows']:.2f}"
            f" ({r['in_domain_rows']:,} faces) | {r['val_mae']:.2f} |"
        )
    return {"runs": rows, "markdown": "\n".join(lines)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run")
    run.add_argument("--workspace", type=Path, required=True)
    run.add_argument("--holdouts", nargs="+", required=True)
    run.add_argument("--threads", type=int, default=2, help="torch threads of this process")
    run.add_argument("--epochs", type=int, default=0, help="0: the class teacher's (smoke tests)")
    for p in (run, sub.add_parser("table")):
        p.add_argument("--out", type=Path, required=True, help="models, checkpoints and runs")
        p.add_argument("--metrics", type=Path, help="folder for cross_dataset.json and .md")
    args = ap.parse_args()
    if args.cmd == "run":
        grid = Grid(args.workspace, args.out, args.threads, args.epochs)
        names = [src.name for src in grid.params().align.sources]
        unknown = sorted(set(args.holdouts) - set(names))
        if unknown:
            raise SystemExit(f"--holdouts {unknown}: not sources of the workspace ({names})")
        for holdout in args.holdouts:
            r = run_holdout(grid, holdout)
            print(f"held out {holdout}: MAE {r['test']['mae']:.3f} on {r['n_test']} faces")
    summary = table(args.out)
    if args.metrics:
        write_json(summary, args.metrics / "cross_dataset.json")
        (args.metrics / "cross_dataset.md").write_text(summary["markdown"] + "\n")
    print(summary["markdown"])


if __name__ == "__main__":
    main()
