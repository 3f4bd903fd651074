"""The sample's twins over seeds: class teacher and distilled student, trained as the stages do.

On one finished pipeline's crops, split and ranking teacher (a workspace after ``dvc repro``),
trains for each seed the class teacher (``train_classifier``) and, from it, the distilled student
(``train_student``), with the workspace's params except those given here, and scores both on the
test part. Cheaper than ``research/sample_seeds.py`` (which reruns the whole pipeline per
seed, the ranking teacher included): the ranking teacher stays the workspace's.

    python -m research.sample_twins --workspace <finished sample pipeline> \\
        --epochs 20 --mixup 0.2 --seeds 0 1 2 --out results/research/sample_twins.json

One torch thread per run (several probes can share the cores without oversubscribing them).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from agedistill.config import load_params
from agedistill.data.tables import load_table
from agedistill.models.files import load_model
from agedistill.training.recipes import Teachers, train_classifier, train_student
from research.ablation import Workspace, test_score


def twins(ws: Workspace, epochs: int, mixup: float, temperature: float | None, seed: int,
          out: Path) -> dict[str, Any]:  # fmt: skip
    """Train one seed's class teacher and student into ``out``; their test MAEs and wall times."""
    p = load_params(ws.params)
    arch, d = p.student, p.distill
    size = arch.input_size
    train, val, test = (load_table(ws.split / f"{part}.csv", ws.crops, size)
                        for part in ("train", "val", "test"))  # fmt: skip
    rank, rank_config = load_model(ws.rank_teacher)
    t0 = time.perf_counter()
    teacher_file = out / f"class_teacher_s{seed}.pt"
    opt = p.class_teacher.model_copy(update={"epochs": epochs, "seed": seed, "threads": 1})
    crop = p.align.crop_settings()
    train_classifier(train, val, arch, opt, p.ages, out=teacher_file, loss=p.age_loss, crop=crop)
    t1 = time.perf_counter()
    teacher, _ = load_model(teacher_file)
    student_file = out / f"student_s{seed}.pt"
    update: dict[str, Any] = {
        "train": d.train.model_copy(update={"epochs": epochs, "seed": seed, "threads": 1}),
        "mixup": mixup,
    }
    if temperature is not None:
        update["temperature"] = temperature
    teachers = Teachers(teacher, rank, p.rank_teacher.hint_stage, rank_config["input_size"])
    train_student(train, val, arch, d.model_copy(update=update), p.ages, teachers,
                  out=student_file, loss=p.age_loss, crop=crop)  # fmt: skip
    t2 = time.perf_counter()
    cs_max = p.evaluate.cs_max
    return {"seed": seed,
            "class_teacher_mae": round(test_score(teacher_file, test, cs_max)["mae"], 4),
            "student_mae": round(test_score(student_file, test, cs_max)["mae"], 4),
            "class_teacher_s": round(t1 - t0), "student_s": round(t2 - t1)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--workspace", type=Path, required=True, help="a finished sample pipeline")
    ap.add_argument("--epochs", type=int, required=True, help="both twins' epochs")
    ap.add_argument("--mixup", type=float, default=0.0, help="distill.mixup of the student")
    ap.add_argument("--temperature", type=float, help="default: the workspace's")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--models", type=Path, default=Path("/tmp/sample_twins"))
    ap.add_argument("--out", type=Path, default=Path("results/research/sample_twins.json"))
    args = ap.parse_args()
    ws = Workspace.of(args.workspace)
    ws.check()
    args.models.mkdir(parents=True, exist_ok=True)
    runs = []
    for seed in args.seeds:
        runs.append(twins(ws, args.epochs, args.mixup, args.temperature, seed, args.models))
        print(json.dumps(runs[-1]), flush=True)
    summary: dict[str, Any] = {}
    for model in ("student", "class_teacher"):
        values = [r[f"{model}_mae"] for r in runs]
        std = round(statistics.stdev(values), 4) if len(values) > 1 else None
        summary[model] = {"mean": round(statistics.mean(values), 4), "std": std}
    gains = [round(r["class_teacher_mae"] - r["student_mae"], 4) for r in runs]
    summary.update(gain_per_seed=gains, student_wins=sum(g > 0 for g in gains))
    result = {"what": "class teacher and distilled student per seed on the sample's test part",
              "command": "python -m research.sample_twins " + " ".join(sys.argv[1:]),
              "epochs": args.epochs, "mixup": args.mixup, "runs": runs,
              "summary": summary}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
