"""Seconds per step of the real twin and distill training loops, this code against an earlier one.

    python benchmarks/bench_train_loop.py --before <git rev> [--profile profiles/full-prints.yaml]
        [--steps 30] [--rounds 2] [--out results/benchmarks/bench_train_loop.json]

Runs :func:`agedistill.training.recipes.train_student` as the ``twin`` and ``distill`` stages
call it, for one epoch of ``--steps`` batches of random faces at the profile's sizes, params and
corruptions (the cost of a step does not depend on what the faces show), with untrained teachers
of the profile's networks. Each measurement is a fresh process in that code's tree (its
``params.yaml``); the working tree's code and the code at ``--before`` (a temporary
``git worktree``) take turns, ``--rounds`` times each, on the same machine, and the figure is
the median over rounds. Writes the seconds per step of each and their ratio (this code over
``--before``'s).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# the measurement, run in a fresh interpreter with the code under test first on sys.path
MEASURE = r"""
import json, sys, tempfile, time
from pathlib import Path
import pandas as pd, torch
import agedistill
from agedistill.config import parse_params, raw_params
from agedistill.data.tables import FaceTable
from agedistill.models.nets import PretrainedNet, RankTeacher, ConvNet
from agedistill.pipeline.profiles import load_profile, merge
from agedistill.training.recipes import Teachers, train_student

stage, profile, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
assert Path(agedistill.__file__).is_relative_to(sys.argv[4]), agedistill.__file__  # code under test
p = parse_params(merge(raw_params(), load_profile(profile)))
d = p.distill
g = torch.Generator().manual_seed(0)
side, vs, bs = p.align.size, p.student.input_size, d.train.batch_size
n = bs * steps
faces = torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8, generator=g)
ages = torch.randint(p.ages.min_age, p.ages.max_age + 1, (n,), generator=g)
rows = pd.DataFrame({"crop": [f"{i}.png" for i in range(n)]})
train = FaceTable(faces, ages, rows)
val = FaceTable(torch.randint(0, 256, (bs, 3, vs, vs), dtype=torch.uint8, generator=g),
                ages[:bs], rows[:bs])
unlabelled = FaceTable(faces[: 4 * bs], torch.full((4 * bs,), -1), rows[: 4 * bs])
d = d.model_copy(update={"train": d.train.model_copy(update={"epochs": 1})})
teachers = None
if stage == "distill":
    ct_p, rt_p = p.class_teacher, p.rank_teacher
    ct = (PretrainedNet(ct_p.backbone, p.ages.num_classes) if ct_p.backbone != "student"
          else ConvNet(p.student.widths, p.ages.num_classes, p.student.stem_stride))
    rt = RankTeacher(rt_p.model.widths, rt_p.k, rt_p.feature_dim, rt_p.model.stem_stride,
                     rt_p.model.depthwise, backbone=rt_p.model.backbone)
    teachers = Teachers(ct, rt, rt_p.hint_stage, input_size=rt_p.model.input_size,
                        classifier_input_size=ct_p.input_size or None)
with tempfile.TemporaryDirectory() as tmp:
    t0 = time.perf_counter()
    train_student(train, val, p.student, d, p.ages, teachers, out=f"{tmp}/m.pt", loss=p.age_loss,
                  unlabelled=unlabelled if stage == "distill" else None)
    print(json.dumps({"s_per_step": (time.perf_counter() - t0) / steps}))
"""


def measure(code_root: Path, stage: str, profile: Path, steps: int) -> float:
    """Seconds per step of ``stage`` with the package at ``code_root``, in a fresh process."""
    env = {**os.environ, "PYTHONPATH": str(code_root)}  # before the installed package
    run = subprocess.run(
        [sys.executable, "-c", MEASURE, stage, str(profile), str(steps), str(code_root)],
        cwd=code_root, capture_output=True, text=True, env=env,
    )  # fmt: skip
    if run.returncode:
        raise SystemExit(f"measuring {stage} at {code_root} failed:\n{run.stderr[-2000:]}")
    out = run
    return json.loads(out.stdout.strip().splitlines()[-1])["s_per_step"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", required=True, help="git revision of the code to compare with")
    ap.add_argument("--profile", default="profiles/full-prints.yaml")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default="results/benchmarks/bench_train_loop.json")
    args = ap.parse_args()
    from agedistill.pipeline.machine import cpu_name

    profile = Path(args.profile).resolve()
    rev = subprocess.run(["git", "rev-parse", "--short", args.before], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    times: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        before = Path(tmp) / "before"
        subprocess.run(["git", "worktree", "add", "-q", "--detach", str(before), rev], cwd=ROOT,
                       check=True)  # fmt: skip
        try:
            for _ in range(args.rounds):
                for stage in ("twin", "distill"):
                    for label, root in (("before", before), ("this", ROOT)):
                        s = measure(root, stage, profile, args.steps)
                        times.setdefault(stage, {}).setdefault(label, []).append(s)
                        print(f"{stage:8s} {label:6s} {s:.3f} s/step", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(before)], cwd=ROOT,
                           check=True)  # fmt: skip
    med = {st: {k: statistics.median(v) for k, v in t.items()} for st, t in times.items()}
    out = {
        "cpu": cpu_name(),
        "profile": args.profile,
        "before": rev,
        "steps": args.steps,
        "rounds": args.rounds,
        "s_per_step": {st: {k: round(v, 4) for k, v in m.items()} for st, m in med.items()},
        "this_over_before": {st: round(m["this"] / m["before"], 3) for st, m in med.items()},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
