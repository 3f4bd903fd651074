"""Distillation ablation at full scale: every signal on/off, over seeds, on one pipeline's teachers.

    agedistill exp profiles/full.yaml -n full       # the pipeline, in the workspace
    python -m research.run_ablation run --jobs 2    # soft / hint / both (and none) x seeds 0 1 2
    python -m research.run_ablation table           # results/research/ablation/ablation.*
    python -m research.run_ablation adopt           # the pipeline's student and twin as their runs
    python -m research.run_ablation rescore --rescored ablation-now   # same models, this code

From an ensemble of the workspace's class teacher and others trained on its split:

    python -m research.run_ablation run --variants both --seeds 0 --out ablation-ensemble \\
        --more-class-teachers teacher-probe/lite0-112/models/class_teacher.pt

A probe of one distillation knob on the same teachers (its own --out and --metrics):

    python -m research.run_ablation run --variants both --set distill.mixup=0.2 \\
        --out ablation-mixup --metrics results/research/probe-mixup

Runs resume: a finished (variant, seed) is skipped, so rerunning after a kill continues the grid.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from research.ablation import (
    VARIANTS,
    Workspace,
    adopt_pipeline_models,
    class_teacher_score,
    format_table,
    plot_table,
    rescore_runs,
    run_grid,
    summarize,
    with_overrides,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("cmd", choices=["run", "table", "adopt", "rescore"])
    ap.add_argument("--workspace", type=Path, default=Path("."), help="a finished pipeline")
    ap.add_argument("--out", type=Path, default=Path("ablation"), help="models and run results")
    ap.add_argument("--variants", nargs="+", default=["both", "soft", "hint", "none"],
                    choices=sorted(VARIANTS))  # fmt: skip
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=1, help="runs trained at once")
    ap.add_argument("--threads", type=int, default=0, help="torch threads per run (0: cores/jobs)")
    ap.add_argument("--metrics", type=Path, default=Path("results/research/ablation"))
    ap.add_argument(
        "--rescored",
        type=Path,
        default=None,
        help="rescore: where the runs scored again go (their table is written)",
    )
    ap.add_argument("--set", action="append", default=[], metavar="distill.KEY=VALUE",
                    help="change a distill param for these runs (repeatable)")  # fmt: skip
    ap.add_argument("--more-class-teachers", type=Path, nargs="+", default=[], metavar="PT",
                    help="run: distil from the ensemble of the workspace's class teacher and "
                         "these (their mean log-probabilities); give them a new --out")  # fmt: skip
    args = ap.parse_args()
    ws = replace(Workspace.of(args.workspace), more_class_teachers=tuple(args.more_class_teachers))
    if args.cmd == "adopt" and (args.set or (args.out / "params.yaml").exists()):
        ap.error("adopt takes the pipeline's own params: no --set, and no probe's --out folder")
    if args.set or (args.out / "params.yaml").exists():  # a probe folder keeps its params
        ws = with_overrides(ws, args.set, args.out)
    if args.cmd == "adopt":
        adopt_pipeline_models(ws, args.out)
    if args.cmd == "run":
        run_grid(ws, args.variants, args.seeds, args.out, args.jobs, args.threads)
    if args.cmd == "rescore":
        if args.rescored is None:
            ap.error("rescore needs --rescored, the folder its runs go to")
        rescore_runs(ws, args.out, args.rescored)
    teacher = class_teacher_score(ws)
    table = summarize(args.rescored if args.cmd == "rescore" else args.out, teacher["mae"])
    args.metrics.mkdir(parents=True, exist_ok=True)
    (args.metrics / "ablation.json").write_text(json.dumps(table, indent=2) + "\n")
    (args.metrics / "ablation.md").write_text(format_table(table) + "\n")
    plot_table(table, args.metrics / "ablation.png")
    print(format_table(table))


if __name__ == "__main__":
    main()
