"""Seconds per step of each training stage's real loop: two codes, or two profiles, in turns.

    python benchmarks/bench_train_loop.py --before <git rev> [--profile profiles/full-prints.yaml]
    python benchmarks/bench_train_loop.py --new profiles/full-fast.yaml \\
        [--profile profiles/full-prints.yaml] [--wall results/full-v12/stage_wall_s.json]
    [--stages rank_teacher class_teacher twin distill] [--steps 30] [--rounds 2] [--out FILE]

Each measurement runs a training stage's own function
(:func:`~agedistill.training.recipes.train_rank_teacher`, ``train_classifier``,
``train_student`` for the twin and for ``distill``) as its stage calls it, for one epoch of
``--steps`` batches of random faces at the profile's sizes, params and corruptions (the cost of
a step does not depend on what the faces show), the teachers of ``distill`` untrained networks of
the profile's architectures. ``evaluate`` runs
:func:`~agedistill.evaluation.scoring.evaluate_models` on untrained models of the profile's
networks, with ``16 x --steps`` test faces and 3.6 times as many training faces (the ranking
teacher's probe reads them; ``full-v12``'s proportions), without its latency timings (code
neither side changes); its "step" is 16 test faces. Every measurement is a fresh process; the
two sides take turns, ``--rounds`` times each, on the same machine, and each figure is the
median over rounds:

* ``--before REV``: the working tree's code against the code at ``REV`` (a temporary ``git
  worktree``, each process run in its tree, with its ``params.yaml``), at ``--profile``;
* ``--new PROFILE``: ``PROFILE`` against ``--profile``, both with the working tree's code.

``--wall``: a measured run's ``stage_wall_s.json``, each measured stage's time scaled by its
ratio (the new side over the other), the other stages kept: a projection of the new side's
full run on the CPU that made ``--wall`` (not a measurement: the run itself is). With ``--new``,
``--code-ratios`` (the JSON of a ``--before`` run against ``--wall``'s code) scales it too.
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
STAGES = ("rank_teacher", "class_teacher", "twin", "distill", "evaluate")
TRAIN_PER_TEST = 19_338 / 5_396  # full-v12's train and test parts: the probe reads both

# the measurement, run in a fresh interpreter with the code under test first on sys.path
MEASURE = r"""
import json, sys, tempfile, time
from pathlib import Path
import pandas as pd, torch
import agedistill
from agedistill.config import parse_params, raw_params
from agedistill.data.tables import FaceTable
from agedistill.models.files import build_model
from agedistill.pipeline.profiles import load_profile, merge
from agedistill.training.recipes import (Teachers, classifier_config, convnet_config,
                                         train_classifier, train_rank_teacher, train_student)

stage, profile, steps, code_root = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
assert Path(agedistill.__file__).is_relative_to(code_root), agedistill.__file__
p = parse_params(merge(raw_params(), load_profile(profile)))
g = torch.Generator().manual_seed(0)

def table(n, side, age=True):
    faces = torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8, generator=g)
    ages = (torch.randint(p.ages.min_age, p.ages.max_age + 1, (n,), generator=g) if age
            else torch.full((n,), -1))
    rows = pd.DataFrame({"crop": [f"{i}.png" for i in range(n)], "age": ages.numpy()})
    return FaceTable(faces, ages, rows)

# the networks as the stages build them (the ranking teacher's config spelled out: the stage
# builds it inline in every release this benchmark compares)
r = p.rank_teacher
student_config = convnet_config(p.student, p.ages)
class_config = classifier_config(p.student, p.class_teacher, p.ages)
rank_config = {"arch": "rank_teacher", "widths": r.model.widths, "stem_stride": r.model.stem_stride,
               "depthwise": r.model.depthwise, "dropout": r.model.dropout,
               "input_size": r.model.input_size, "backbone": r.model.backbone, "k": r.k,
               "feature_dim": r.feature_dim}
one_epoch = lambda section: section.model_copy(update={"epochs": 1})
tmp = tempfile.mkdtemp()
t0 = time.perf_counter()
if stage == "rank_teacher":
    n = steps * r.train.batch_size
    r = r.model_copy(update={"train": one_epoch(r.train), "sequences_per_epoch": n,
                             "val_sequences": r.train.batch_size})
    side = r.model.input_size
    train_rank_teacher(table(2000, side), table(200, side), r, out=f"{tmp}/m.pt")
elif stage == "class_teacher":
    c = one_epoch(p.class_teacher)
    side = c.input_size or p.student.input_size
    train_classifier(table(steps * c.batch_size, side), table(c.batch_size, side), p.student, c,
                     p.ages, out=f"{tmp}/m.pt", loss=p.age_loss)
elif stage == "evaluate":  # the stage's own function on untrained models of the profile's nets
    from agedistill.config import EvaluateParams
    from agedistill.evaluation.scoring import evaluate_models
    from agedistill.models.files import save_model
    configs = {"student": student_config, "twin": student_config, "class_teacher": class_config,
               "rank_teacher": rank_config}
    paths = {}
    for name, config in configs.items():
        save_model(f"{tmp}/{name}.pt", build_model(config).eval(), config)
        paths[name] = f"{tmp}/{name}.pt"
    n_test = steps * 16
    n_train = round(n_test * float(sys.argv[5]))
    test_rows = table(n_test, p.align.size)
    train_rows = table(n_train, p.align.size)
    from agedistill.models.inputs import resize_faces
    def at(t, side):  # the stage loads each table at the model's side
        x = resize_faces(t.images.float(), side).round().clamp(0, 255).to(torch.uint8)
        return FaceTable(x, t.ages, t.rows)
    tables = lambda side: (at(train_rows, side), at(test_rows, side))
    import agedistill.evaluation.scoring as scoring
    # the models' latency is timed by code neither side changes, and would dominate: left out
    scoring.cpu_latency = lambda *a, **k: dict.fromkeys(
        ("faces_per_s", "latency_batch_ms", "latency_single_ms"), 1.0)
    params = EvaluateParams()
    t0 = time.perf_counter()
    evaluate_models(paths, tables, p.ages, params)
else:
    d = p.distill.model_copy(update={"train": one_epoch(p.distill.train)})
    bs, side = d.train.batch_size, p.align.size
    teachers, extra = None, None
    if stage == "distill":
        teachers = Teachers(build_model(class_config), build_model(rank_config), r.hint_stage,
                            input_size=r.model.input_size,
                            classifier_input_size=p.class_teacher.input_size or None)
        extra = table(4 * bs, side, age=False)
    train_student(table(steps * bs, side), table(bs, p.student.input_size), p.student, d,
                  p.ages, teachers, out=f"{tmp}/m.pt", loss=p.age_loss, unlabelled=extra)
print(json.dumps({"s_per_step": (time.perf_counter() - t0) / steps}))
"""


def measure(code_root: Path, stage: str, profile: Path, steps: int) -> float:
    """Seconds per step of ``stage`` with the package at ``code_root``, in a fresh process."""
    env = {**os.environ, "PYTHONPATH": str(code_root)}  # before the installed package
    run = subprocess.run(
        [sys.executable, "-c", MEASURE, stage, str(profile), str(steps), str(code_root),
         str(TRAIN_PER_TEST)],
        cwd=code_root, capture_output=True, text=True, env=env,
    )  # fmt: skip
    if run.returncode:
        raise SystemExit(f"measuring {stage} at {code_root} failed:\n{run.stderr[-2000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])["s_per_step"]


def project(wall: dict[str, float], ratios: dict[str, float]) -> dict[str, float]:
    """``wall`` (seconds per stage) with each measured stage scaled by its ratio."""
    return {stage: s * ratios.get(stage, 1.0) for stage, s in wall.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    side = ap.add_mutually_exclusive_group(required=True)
    side.add_argument("--before", help="git revision of the code to compare with")
    side.add_argument("--new", help="profile to compare with --profile (same code)")
    ap.add_argument("--profile", default="profiles/full-prints.yaml")
    ap.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--wall", help="stage_wall_s.json of a measured run to project from")
    ap.add_argument("--code-ratios", help="with --new and --wall: a --before run's JSON, whose "
                    "ratios also scale --wall (a run of that earlier code)")  # fmt: skip
    ap.add_argument("--out", default="results/benchmarks/bench_train_loop.json")
    args = ap.parse_args()
    from agedistill.pipeline.machine import cpu_name

    profile = (ROOT / args.profile).resolve()
    times: dict[str, dict[str, list[float]]] = {s: {"base": [], "new": []} for s in args.stages}
    with tempfile.TemporaryDirectory() as tmp:
        if args.before:
            git = ["git", "rev-parse", "--short", args.before]
            rev = subprocess.run(git, cwd=ROOT, capture_output=True, text=True, check=True)
            rev = rev.stdout.strip()
            before = Path(tmp) / "before"
            subprocess.run(["git", "worktree", "add", "-q", "--detach", str(before), rev],
                           cwd=ROOT, check=True)  # fmt: skip
            sides = {"base": (before, profile), "new": (ROOT, profile)}
        else:
            rev = None
            sides = {"base": (ROOT, profile), "new": (ROOT, (ROOT / args.new).resolve())}
        try:
            for _ in range(args.rounds):
                for stage in args.stages:
                    for label, (code, prof) in sides.items():
                        s = measure(code, stage, prof, args.steps)
                        times[stage][label].append(s)
                        print(f"{stage:14s} {label:5s} {s:.3f} s/step", flush=True)
        finally:
            if args.before:
                subprocess.run(["git", "worktree", "remove", "--force", str(before)], cwd=ROOT,
                               check=True)  # fmt: skip
    med = {st: {k: statistics.median(v) for k, v in t.items()} for st, t in times.items()}
    ratios = {st: m["new"] / m["base"] for st, m in med.items()}
    out = {
        "cpu": cpu_name(),
        "profile": args.profile,
        **({"before": rev} if rev else {"new": args.new}),
        "steps": args.steps,
        "rounds": args.rounds,
        "s_per_step": {st: {k: round(v, 4) for k, v in m.items()} for st, m in med.items()},
        "new_over_base": {st: round(r, 3) for st, r in ratios.items()},
    }
    if args.wall:
        measured = json.loads(Path(args.wall).read_text())["stage_wall_s"]
        scale = dict(ratios)
        if args.code_ratios:
            code = json.loads(Path(args.code_ratios).read_text())["new_over_base"]
            scale = {st: scale.get(st, 1.0) * code.get(st, 1.0) for st in {*scale, *code}}
            out["code_ratios"] = {"from": args.code_ratios, **code}
        projected = project(measured, scale)
        out["wall_from"] = args.wall
        out["projected_stage_wall_s"] = {k: round(v) for k, v in projected.items()}
        out["projected_total_min"] = round(sum(projected.values()) / 60, 1)
        out["measured_total_min"] = round(sum(measured.values()) / 60, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
