"""Probe input resolution at the full schedule, and the reference CNN's spread over seeds.

Two questions the shipped figures leave open, answered on the raw UTKFace chips (resized, not
re-aligned: the framing the brief's reference reads) of a finished full run's split:

* ``r<side>-<arch>-s<seed>``: does a compact net that reads *more pixels* for the same compute
  end better at the full schedule? The class teacher's recipe (30 epochs) trains the net at
  ``side`` px, then a student of the same net is distilled from it with soft targets only and the
  shipped recipe (mixup 0.2, 60 epochs, T = 2; hints off: the ablation shows soft targets carry
  the gain). ``arch`` is ``4st`` (the student: 32/64/128/192, stride-2 stem; 47.5 MMACs at 64 px)
  or ``5st`` (a 16-channel stage in front: 35.2 MMACs at 96 px, 62.5 at 128). Shifts scale with
  the side (4 px at 64).
* ``ref-s<seed>``: the brief's reference CNN (the 4-stage net at stride 1, 64 px, 190 MMACs),
  30 epochs of the class teacher's recipe, to measure how far one run of it moves with the seed.

``pack`` writes the chips of a run's split at one side as JPEG, small enough to move to another
machine; every variant reads that pack and resizes it to its own side. ``run`` trains the variants
side by side, one process each (a CUDA GPU when there is one); ``one`` trains one variant. Every
model is scored on validation and test, with and without flip TTA, appended to ``--out`` as JSON
lines.

    python -m research.resolution_probe pack --workspace <full run> --to /tmp/res --side 128
    python -m research.resolution_probe run --workspace /tmp/res \\
        --variants r64-4st-s0 r96-5st-s0 r128-5st-s0 ref-s0 ref-s1 --out res.jsonl
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import yaml
from PIL import Image

from agedistill.config import AgeLossParams, AgesParams, DistillParams, ModelParams, TrainParams
from agedistill.data.tables import FaceTable, load_table
from agedistill.models.files import load_model
from agedistill.models.nets import RankTeacher
from agedistill.training.distributed import Context
from agedistill.training.loop import TrainingSetup
from agedistill.training.recipes import Teachers, train_classifier, train_student
from research.ablation import test_score

ARCHS = {"4st": [32, 64, 128, 192], "5st": [16, 32, 64, 128, 192]}
VARIANT = re.compile(r"^(?:r(?P<side>\d+)-(?P<arch>4st|5st)|(?P<ref>ref))-s(?P<seed>\d+)$")


def pack(workspace: Path, to: Path, side: int, quality: int = 88) -> None:
    """Copy a run's split and params, with each row's source chip resized to ``side`` as JPEG."""
    (to / "split").mkdir(parents=True, exist_ok=True)
    (to / "chips").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(workspace / "params.yaml", to / "params.yaml")
    for part in ("train", "val", "test"):
        rows = pd.read_csv(workspace / f"data/split/{part}.csv")
        names = []
        for crop, path in zip(rows["crop"], rows["path"], strict=True):
            name = Path(crop).with_suffix(".jpg").name
            with Image.open(path) as im:
                im = im.convert("RGB").resize((side, side), Image.Resampling.LANCZOS)
                im.save(to / "chips" / name, "JPEG", quality=quality)
            names.append(name)
        rows["crop"] = names
        rows.to_csv(to / f"split/{part}.csv", index=False)


def parse_variant(name: str) -> dict[str, Any]:
    """``r96-5st-s1`` -> side 96, 5-stage widths, stride-2 stem, seed 1; ``ref-s2`` likewise."""
    m = VARIANT.match(name)
    if m is None:
        raise ValueError(f"variant {name!r} is neither r<side>-<4st|5st>-s<seed> nor ref-s<seed>")
    if m["ref"]:
        return {"side": 64, "widths": ARCHS["4st"], "stem_stride": 1, "seed": int(m["seed"]),
                "distill": False}  # fmt: skip
    side = int(m["side"])
    if side < 32 or side % 16:
        raise ValueError(f"variant {name!r}: side must be a multiple of 16, at least 32")
    return {"side": side, "widths": ARCHS[m["arch"]], "stem_stride": 2, "seed": int(m["seed"]),
            "distill": True}  # fmt: skip


def run_variant(workspace: Path, name: str, work: Path, device: torch.device, report) -> None:
    """Train variant ``name`` on the pack in ``workspace``; ``report(tag, file, fit, tables)``."""
    spec = parse_variant(name)
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    side = spec["side"]
    train, val, test = (  # held on the device: augmentation runs there too
        _on(load_table(workspace / f"split/{p}.csv", workspace / "chips", side), device)
        for p in ("train", "val", "test")
    )
    arch = {**params["student"], "widths": spec["widths"], "stem_stride": spec["stem_stride"],
            "input_size": side}  # fmt: skip
    shift = round(4 * side / 64)
    threads = torch.get_num_threads()
    ctx = Context(device=device)
    teach = TrainParams(**{**params["class_teacher"], "seed": spec["seed"], "max_shift": shift,
                           "threads": threads})  # fmt: skip
    ages, loss, model = (
        AgesParams(**params["ages"]),
        AgeLossParams(**params["age_loss"]),
        ModelParams(**arch),
    )
    run = TrainingSetup(work / f"{name}-teacher.pt", ctx=ctx)
    fit = train_classifier(train, val, model, teach, ages, out=run, loss=loss)
    report(f"{name}-teacher" if spec["distill"] else name, run.out, fit, (val, test))
    if not spec["distill"]:
        return
    d = params["distill"]
    rt = params["rank_teacher"]
    unused = RankTeacher(rt["model"]["widths"], rt["k"], rt["feature_dim"])  # hints are off
    student_opt = TrainParams(**{**d["train"], "seed": spec["seed"], "max_shift": shift,
                                 "threads": threads})  # fmt: skip
    distill = DistillParams(**{**d, "train": student_opt, "hint_weight": 0.0})
    teacher = load_model(run.out)[0]
    fit = train_student(
        train, val, model, distill, ages, Teachers(teacher, unused, rt["hint_stage"]),
        out=TrainingSetup(work / f"{name}-student.pt", ctx=ctx), loss=loss,
    )  # fmt: skip
    report(f"{name}-student", work / f"{name}-student.pt", fit, (val, test))


def _on(table: FaceTable, device: torch.device) -> FaceTable:
    return FaceTable(table.images.to(device), table.ages, table.rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cmd", choices=["pack", "run", "one"],
                    help="pack: JPEG chips; run: side by side; one: a single variant")  # fmt: skip
    ap.add_argument("--workspace", type=Path, required=True,
                    help="pack: a finished full run; run/one: a pack")  # fmt: skip
    ap.add_argument("--to", type=Path, help="pack: where the chips go")
    ap.add_argument("--side", type=int, default=128, help="pack: chip side, px")
    ap.add_argument("--variants", nargs="+", default=["r64-4st-s0"])
    ap.add_argument("--threads", type=int, default=2, help="torch threads per variant")
    ap.add_argument("--out", type=Path, default=Path("resolution.jsonl"),
                    help="results (JSON lines, appended)")  # fmt: skip
    ap.add_argument("--models", type=Path, help="where models go (default: <out stem>_models/)")
    args = ap.parse_args()
    if args.cmd == "pack":
        if args.to is None:
            ap.error("pack needs --to")
        pack(args.workspace, args.to, args.side)
        return
    if not (args.workspace / "chips").is_dir():
        ap.error(f"--workspace {args.workspace} is not a pack (no chips/): run pack first")
    for v in args.variants:
        try:
            parse_variant(v)
        except ValueError as e:
            ap.error(str(e))
    if len(set(args.variants)) != len(args.variants):
        ap.error("--variants lists a variant twice")
    if args.cmd == "run":  # one process per variant, side by side
        base = [sys.executable, "-m", "research.resolution_probe", "one",
                "--workspace", str(args.workspace),
                "--threads", str(args.threads), "--out", str(args.out)]  # fmt: skip
        if args.models:
            base += ["--models", str(args.models)]
        procs = [subprocess.Popen([*base, "--variants", v]) for v in args.variants]
        sys.exit(1 if any(p.wait() for p in procs) else 0)
    if len(args.variants) != 1:
        ap.error("one trains exactly one variant: name it with --variants")
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    start = time.time()
    work = args.models or args.out.parent / f"{args.out.stem}_models"
    work.mkdir(parents=True, exist_ok=True)
    params = yaml.safe_load((args.workspace / "params.yaml").read_text())
    cs_max = params["evaluate"]["cs_max"]

    def report(tag: str, model_file: Path, fit: dict, tables: tuple[FaceTable, ...]) -> None:
        result: dict[str, Any] = {"variant": tag, "device": device.type,
                                  "best_epoch": fit.get("best_epoch")}  # fmt: skip
        for part, table in zip(("val", "test"), tables, strict=True):
            s = test_score(model_file, table, cs_max)
            result[part] = {k: s[k] for k in ("mae", "mae_flip", "mae_21_60")}
        result["wall_s"] = round(time.time() - start, 1)
        print(json.dumps(result), flush=True)
        with open(args.out, "a") as f:  # one short line per write: safe to share between variants
            f.write(json.dumps(result) + "\n")

    run_variant(args.workspace, args.variants[0], work, device, report)


if __name__ == "__main__":
    main()
