"""Probe levers beyond the shipped distillation recipe, one variant per process, on any device.

Each variant retrains the student on a finished full run's split with that run's ranking teacher,
its recipe read from the run's ``params.yaml`` as plain YAML (so beside ``agedistill`` on the
path it needs only torch, torchvision, numpy, pandas, PIL, PyYAML and tqdm, no pydantic, MLflow
or DVC: what a bare GPU machine has), and changes one thing:

* ``base``: the recipe as shipped (a control for the others, on the same crops and device);
* ``born_again``: the class teacher replaced by the run's own distilled student, then by each new
  generation in turn (Furlanello et al., 2018), generations 2 to 4;
* ``ensemble``: three more class teachers (seeds 1 to 3) trained, and the student distilled from
  the mixture of all four teachers' distributions (the soft-target loss tempers the mixture's log
  probabilities, not each teacher's logits);
* ``ep120``, ``ep120jit``: 120 epochs instead of 60, without and with jitter (rotate 10 degrees,
  zoom +-10 %, colour +-20 %); ``born_again_ep120``: the run's student as teacher, 120 epochs;
* ``t4``: temperature 4 and soft-target weight 2.

Every model is scored on validation (to rank them) and test, with and without flip TTA; results
are appended to ``--out`` as JSON lines; the models go to ``<out stem>_models/<variant>/``. On a
CUDA GPU ``run`` trains the variants side by side in minutes; on 2 CPU cores train one at a time
with ``one`` (1 to 3 hours each).

    # optional: re-encode the crops as JPEG (quality 92) to move a full run in under 30 MB
    python -m research.distill_levers pack --workspace <full run> --to /tmp/levers
    python -m research.distill_levers run --workspace /tmp/levers --models <full run>/models \\
        --variants base born_again ensemble ep120 ep120jit born_again_ep120 t4 --out levers.jsonl
"""

from __future__ import annotations

import argparse
import json
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
from torch import nn

from agedistill.config import AgeLossParams, AgesParams, DistillParams, ModelParams, TrainParams
from agedistill.data.tables import FaceTable, load_table
from agedistill.evaluation.scoring import score
from agedistill.models.files import load_model
from agedistill.models.ordinal import mixture_logits
from agedistill.models.predictions import predict_ages_and_flipped
from agedistill.training.distributed import Context
from agedistill.training.loop import TrainingSetup
from agedistill.training.recipes import Teachers, train_classifier, train_student

VARIANTS = ("base", "born_again", "ensemble", "ep120", "ep120jit", "born_again_ep120", "t4")
JITTER = {"rotate": 10.0, "scale": 0.1, "color": 0.2}


class Ensemble(nn.Module):
    """Teachers whose distributions are mixed in equal parts (the log of the mean probability)."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return mixture_logits(*[m(x) for m in self.members])


def pack(workspace: Path, to: Path, quality: int = 92) -> None:
    """Copy a run's split and params, with its crops re-encoded as JPEG of ``quality``."""
    (to / "data/split").mkdir(parents=True, exist_ok=True)
    (to / "data/aligned/crops").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(workspace / "params.yaml", to / "params.yaml")
    for part in ("train", "val", "test"):
        rows = pd.read_csv(workspace / f"data/split/{part}.csv")
        for i, name in enumerate(rows["crop"]):
            jpg = Path(name).with_suffix(".jpg").name
            with Image.open(workspace / "data/aligned/crops" / name) as im:
                im.convert("RGB").save(to / "data/aligned/crops" / jpg, "JPEG", quality=quality)
            rows.loc[i, "crop"] = jpg
        rows.to_csv(to / f"data/split/{part}.csv", index=False)


class Levers:
    """One workspace's tables and recipe, and the trainings the variants are made of."""

    def __init__(self, workspace: Path, models: Path, out: Path, device: torch.device) -> None:
        self.params = yaml.safe_load((workspace / "params.yaml").read_text())
        self.arch = self.params["student"]
        size = self.arch["input_size"]
        crops, split = workspace / "data/aligned/crops", workspace / "data/split"
        self.train, self.val, self.test = (
            load_table(split / f"{p}.csv", crops, size) for p in ("train", "val", "test")
        )
        self.models, self.out, self.device = models, out, device
        self.fits: dict[str, dict[str, float]] = {}  # each training's result (best epoch, ...)
        self.min_age = self.params["ages"]["min_age"]
        self.ages = AgesParams(**self.params["ages"])
        self.loss = AgeLossParams(**self.params.get("age_loss", {}))
        align = self.params["align"]
        self.crop = {k: align[k] for k in ("margin", "template", "detect_pad")}
        self.rank_input_size = load_model(models / "rank_teacher.pt")[1]["input_size"]

    def teacher(self, name: str) -> nn.Module:
        return load_model(self.models / f"{name}.pt")[0]

    def _opt(self, section: dict[str, Any], **change: Any) -> TrainParams:
        return TrainParams(**{**section, "threads": torch.get_num_threads(), **change})

    def _run(self, tag: str) -> TrainingSetup:
        return TrainingSetup(self.out / f"{tag}.pt", ctx=Context(device=self.device))

    def distill(self, tag: str, class_teacher: nn.Module, temperature: float | None = None,
                kd_weight: float | None = None, **change: Any) -> nn.Module:  # fmt: skip
        d = self.params["distill"]
        distill = DistillParams(**{
            **d, "train": self._opt(d["train"], **change),
            "temperature": temperature or d["temperature"],
            "kd_weight": kd_weight or d["kd_weight"],
        })  # fmt: skip
        rank_hint_stage = self.params["rank_teacher"]["hint_stage"]
        teachers = Teachers(class_teacher, self.teacher("rank_teacher"), rank_hint_stage,
                            self.rank_input_size)  # fmt: skip
        self.fits[tag] = train_student(
            self.train, self.val, ModelParams(**self.arch), distill, self.ages, teachers,
            out=self._run(tag), loss=self.loss, crop=self.crop,
        )  # fmt: skip
        return load_model(self.out / f"{tag}.pt")[0]

    def classifier(self, tag: str, seed: int) -> nn.Module:
        self.fits[tag] = train_classifier(
            self.train, self.val, ModelParams(**self.arch),
            self._opt(self.params["class_teacher"], seed=seed), self.ages, out=self._run(tag),
            loss=self.loss, crop=self.crop,
        )  # fmt: skip
        return load_model(self.out / f"{tag}.pt")[0]

    def score(self, model: nn.Module, table: FaceTable) -> dict[str, Any]:
        """MAE (with flip TTA, ages 21-60, per group) and CS, as ``evaluate`` scores them."""
        pred, flip = predict_ages_and_flipped(model.to(self.device), table.images, self.min_age)
        return score(pred.numpy(), table, self.params["evaluate"]["cs_max"], flip.numpy())


def run_variant(levers: Levers, variant: str, report) -> None:
    """Train ``variant`` and ``report(name, model)`` every model it makes."""
    if variant == "base":
        report(variant, levers.distill(variant, levers.teacher("class_teacher")))
    elif variant == "born_again":
        teacher = levers.teacher("student")
        for gen in (2, 3, 4):
            teacher = levers.distill(f"born_again_gen{gen}", teacher)
            report(f"born_again_gen{gen}", teacher)
    elif variant == "ensemble":
        members = [levers.teacher("class_teacher")]
        for seed in (1, 2, 3):
            members.append(levers.classifier(f"class_teacher_s{seed}", seed))
            report(f"class_teacher_s{seed}", members[-1])
        ensemble = Ensemble(members)
        report("ensemble_of_4_teachers", ensemble)
        report("ensemble_student", levers.distill("ensemble_student", ensemble))
    elif variant in ("ep120", "ep120jit"):
        jitter = JITTER if variant.endswith("jit") else {}
        report(variant, levers.distill(variant, levers.teacher("class_teacher"), epochs=120,
                                       **jitter))  # fmt: skip
    elif variant == "born_again_ep120":
        report(variant, levers.distill(variant, levers.teacher("student"), epochs=120))
    elif variant == "t4":
        report(variant, levers.distill(variant, levers.teacher("class_teacher"), 4.0, 2.0))
    else:
        raise ValueError(f"unknown variant {variant!r}; choose from {VARIANTS}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cmd", choices=["pack", "run", "one"],
                    help="pack: JPEG copy; run: side by side; one: a single variant")  # fmt: skip
    ap.add_argument("--workspace", type=Path, required=True, help="a finished full run (or pack)")
    ap.add_argument("--to", type=Path, help="pack: where the JPEG copy goes")
    ap.add_argument("--models", type=Path, help="the run's models/ (teachers and student)")
    ap.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    ap.add_argument("--threads", type=int, default=2, help="torch threads per variant")
    ap.add_argument("--out", type=Path, default=Path("levers.jsonl"),
                    help="results (JSON lines, appended); models go to <stem>_models/")  # fmt: skip
    args = ap.parse_args()
    if args.cmd == "pack":
        if args.to is None:
            ap.error("pack needs --to")
        pack(args.workspace, args.to)
        return
    if args.models is None or not (args.models / "rank_teacher.pt").is_file():
        ap.error("--models must name a full run's models/ folder (with rank_teacher.pt)")
    if args.out.is_dir() or args.out.suffix == "":
        ap.error("--out must name a file, such as levers.jsonl")
    if len(set(args.variants)) != len(args.variants):
        ap.error("--variants lists a variant twice")
    if args.cmd == "run":  # one process per variant, side by side
        base = [sys.executable, "-m", "research.distill_levers", "one",
                "--workspace", str(args.workspace),
                "--models", str(args.models), "--threads", str(args.threads),
                "--out", str(args.out)]  # fmt: skip
        procs = [subprocess.Popen([*base, "--variants", v]) for v in args.variants]
        codes = [p.wait() for p in procs]
        sys.exit(1 if any(codes) else 0)
    if len(args.variants) != 1:
        ap.error("one trains exactly one variant: name it with --variants")
    variant = args.variants[0]
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    start = time.time()
    work = args.out.parent / f"{args.out.stem}_models" / variant
    work.mkdir(parents=True, exist_ok=True)
    levers = Levers(args.workspace, args.models, work, device)

    def report(name: str, model: nn.Module) -> None:
        result = {"variant": name, "device": device.type,
                  "best_epoch": levers.fits.get(name, {}).get("best_epoch"),
                  "val": levers.score(model, levers.val), "test": levers.score(model, levers.test),
                  "wall_s": round(time.time() - start, 1)}  # fmt: skip
        print(json.dumps(result), flush=True)
        with open(args.out, "a") as f:  # one short line per write: safe to share between variants
            f.write(json.dumps(result) + "\n")

    run_variant(levers, variant, report)


if __name__ == "__main__":
    main()
