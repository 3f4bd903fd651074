"""Distillation ablation at full scale: every signal on/off, over seeds, on one pipeline's teachers.

    agedistill exp profiles/full.yaml -n full       # the pipeline, in the workspace
    python scripts/ablation.py run --jobs 2         # soft / hint / both (and none) x seeds 0 1 2
    python scripts/ablation.py table                # metrics/ablation.json, .md and .png

Runs resume: a finished (variant, seed) is skipped, so rerunning after a kill continues the grid.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from agedistill.ablation import (
    VARIANTS,
    Workspace,
    class_teacher_score,
    format_table,
    plot_table,
    run_grid,
    summarize,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("cmd", choices=["run", "table"])
    ap.add_argument("--workspace", type=Path, default=Path("."), help="a finished pipeline")
    ap.add_argument("--out", type=Path, default=Path("ablation"), help="models and run results")
    ap.add_argument("--variants", nargs="+", default=["both", "soft", "hint", "none"],
                    choices=sorted(VARIANTS))  # fmt: skip
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=1, help="runs trained at once")
    ap.add_argument("--threads", type=int, default=0, help="torch threads per run (0: cores/jobs)")
    ap.add_argument("--metrics", type=Path, default=Path("metrics/ablation"))
    args = ap.parse_args()
    w = args.workspace
    ws = Workspace(w / "params.yaml", w / "data/aligned/crops", w / "data/split",
                   w / "models/class_teacher.pt", w / "models/rank_teacher.pt")  # fmt: skip
    if args.cmd == "run":
        run_grid(ws, args.variants, args.seeds, args.out, args.jobs, args.threads)
    teacher = class_teacher_score(ws)
    table = summarize(args.out, teacher["mae"])
    args.metrics.mkdir(parents=True, exist_ok=True)
    (args.metrics / "ablation.json").write_text(json.dumps(table, indent=2) + "\n")
    (args.metrics / "ablation.md").write_text(format_table(table) + "\n")
    plot_table(table, args.metrics / "ablation.png")
    print(format_table(table))


if __name__ == "__main__":
    main()
