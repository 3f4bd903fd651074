"""Compare training recipes of the no-distillation model (crop margin, ground-truth loss, size).

Every variant trains the student architecture as a plain age classifier on the same split with the
same seed and schedule, one thread each, ``--jobs`` at a time; variants are ranked by *validation*
MAE (the test part stays untouched for the final table). Crops are re-made from the split's
landmarks for every margin, so all variants see the same faces.

    python -m research.recipe_search --split /tmp/full/data/split --epochs 12 --jobs 2 \\
        --out results/research/recipe_search.json

``--test`` also scores each saved model once on the test part: for the brief's reference CNN,
trained on the same split for a like-for-like comparison with the pipeline's test figures:

    python -m research.recipe_search --split /tmp/full/data/split --variants reference \\
        --epochs 30 --jobs 1 --threads 2 --test --out results/research/reference_cnn.json

``--seed N`` trains with another seed than ``class_teacher.seed`` (model files get a ``-sN``
suffix), to measure a variant's spread over seeds.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm import tqdm

from agedistill.config import AgeLossParams, ModelParams, TrainParams, load_params
from agedistill.data.tables import FaceTable
from agedistill.faces.geometry import align_face
from agedistill.pipeline.outputs import write_json
from agedistill.training.recipes import train_classifier
from research.ablation import test_score

# Every variant starts from this network (the reference's widths at stride 2, 64 px; the first
# student) and the ``student`` params' other keys (dropout, depthwise).
BASE_ARCH = {"widths": [32, 64, 128, 192], "stem_stride": 2, "input_size": 64}

FIVE = [16, 32, 64, 128, 192]

# the training knobs a variant may override (the rest of class_teacher's section stays)
KNOBS = ("max_shift", "rotate", "scale", "color", "grayscale", "blur", "jpeg", "low_res",
         "crop_context", "ema_epochs", "weight_decay")  # fmt: skip

# name: overrides of (margin, template, input_size, stem_stride, widths, label_sigma, mae_weight,
# and the KNOBS)
# margin None: the source chips resized, not aligned
VARIANTS: dict[str, dict] = {
    "m0 ce": {"margin": 0.0},
    "m0.25 ce": {"margin": 0.25},
    "m0 dldl": {"margin": 0.0, "label_sigma": 2.0, "mae_weight": 1.0},
    "m0.25 dldl": {"margin": 0.25, "label_sigma": 2.0, "mae_weight": 1.0},
    "m0.4 dldl": {"margin": 0.4, "label_sigma": 2.0, "mae_weight": 1.0},
    "m0.15 dldl": {"margin": 0.15, "label_sigma": 2.0, "mae_weight": 1.0},
    "m0.25 sigma3": {"margin": 0.25, "label_sigma": 3.0, "mae_weight": 0.0},
    "m0.25 dldl shift6": {"margin": 0.25, "label_sigma": 2.0, "mae_weight": 1.0, "max_shift": 6},
    "m0.25 dldl in80": {"margin": 0.25, "label_sigma": 2.0, "mae_weight": 1.0, "input_size": 80},
    "m0.4 dldl in80": {"margin": 0.4, "label_sigma": 2.0, "mae_weight": 1.0, "input_size": 80},
    "m0 ce in80": {"margin": 0.0, "input_size": 80},
    "m0 sigma2": {"margin": 0.0, "label_sigma": 2.0},
    "m0 ce in72": {"margin": 0.0, "input_size": 72},
    "m0 mae0.1": {"margin": 0.0, "mae_weight": 0.1},
    "m0.4 ce": {"margin": 0.4},
    "m0.25 ce in80": {"margin": 0.25, "input_size": 80},
    "m0 ce s1 5stage": {"margin": 0.0, "stem_stride": 1, "widths": FIVE},
    "m0 ce in96 5stage": {"margin": 0.0, "input_size": 96, "widths": FIVE},
    "m0 ce in112 5stage": {
        "margin": 0.0,
        "input_size": 112,
        "widths": FIVE,
        "max_shift": 7,
    },
    "m-0.1 ce": {"margin": -0.1},  # ArcFace's framing zoomed in towards the chips' scale
    "m-0.1 ce in96 5stage": {"margin": -0.1, "input_size": 96, "widths": FIVE},
    "raw chips ce": {"margin": None},  # the source chips resized, no alignment
    "utk ce": {"template": "utkface"},  # UTKFace's own framing, aligned
    "utk ce in96 5stage": {"template": "utkface", "input_size": 96, "widths": FIVE},
    "raw chips ce in96 5stage": {
        "margin": None,
        "input_size": 96,
        "widths": FIVE,
    },
    "utk ema2": {"template": "utkface", "ema_epochs": 2.0},  # moving average of the weights
    "utk jitter": {"template": "utkface", "rotate": 10.0, "scale": 0.1, "color": 0.2},
    "utk jitter ema2": {
        "template": "utkface",
        "rotate": 10.0,
        "scale": 0.1,
        "color": 0.2,
        "ema_epochs": 2.0,
    },
    "utk mild jitter ema2": {
        "template": "utkface",
        "rotate": 5.0,
        "scale": 0.05,
        "color": 0.1,
        "ema_epochs": 2.0,
    },
    "utk wd0.05": {"template": "utkface", "weight_decay": 0.05},  # AdamW's usual decay
    "utk s1 5stage": {"template": "utkface", "stem_stride": 1, "widths": FIVE},
    # the brief's reference CNN: four conv-conv-pool blocks at stride 1 on the chips, 64 px
    "reference": {"margin": None, "stem_stride": 1},
    "utk dldl": {"template": "utkface", "label_sigma": 2.0, "mae_weight": 1.0},  # DLDL-v2
    "utk sigma2": {"template": "utkface", "label_sigma": 2.0},  # label distribution only
    "m0 ce in128 5stage": {
        "margin": 0.0,
        "input_size": 128,
        "widths": FIVE,
        "max_shift": 8,
    },
}


def recrop(
    rows: pd.DataFrame, size: int, margin: float | None, template: str = "arcface"
) -> FaceTable:
    """Align every row's source image with its recorded landmarks to ``template`` at ``margin``.

    ``margin=None`` skips alignment: the source image (a UTKFace chip) is only resized.
    """
    arrays = []
    for path, marks in tqdm(zip(rows["path"], rows["landmarks"], strict=True), total=len(rows),
                            desc=f"crop m={margin}", leave=False):  # fmt: skip
        pts = np.array(marks.split(), dtype=np.float64).reshape(5, 2)
        with Image.open(path) as im:
            im = im.convert("RGB")
            if margin is None:
                arrays.append(np.asarray(im.resize((size, size), Image.Resampling.BILINEAR)))
            else:
                arrays.append(np.asarray(align_face(im, pts, size, margin, template)))
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return FaceTable(images, torch.tensor(rows["age"].to_numpy(), dtype=torch.long), rows)


def tables(
    split: Path,
    cache: Path,
    size: int,
    margin: float | None,
    template: str = "arcface",
    parts: tuple[str, ...] = ("train", "val"),
) -> tuple[FaceTable, ...]:
    """Tables of these split parts in this crop framing (each part cached as a tensor file)."""
    name = "raw" if margin is None else f"m{margin}" + ("" if template == "arcface" else template)
    f = cache / f"crops_s{size}_{name}.pt"
    rows = {p: pd.read_csv(split / f"{p}.csv") for p in parts}
    saved = torch.load(f, weights_only=True) if f.exists() else {}
    if missing := [p for p in parts if p not in saved]:
        f.parent.mkdir(parents=True, exist_ok=True)
        saved |= {p: recrop(rows[p], size, margin, template).images for p in missing}
        torch.save(saved, f)
    return tuple(
        FaceTable(saved[p], torch.tensor(rows[p]["age"].to_numpy(), dtype=torch.long), rows[p])
        for p in parts
    )


def run_variant(job: tuple[str, dict, argparse.Namespace]) -> dict:
    """Train one variant and return its validation figures."""
    name, over, args = job
    params = load_params(args.params)
    arch = params.student.model_dump() | BASE_ARCH
    for k in ("input_size", "stem_stride", "widths"):
        if k in over:
            arch[k] = over[k]
    tp = params.class_teacher.model_dump() | {"epochs": args.epochs, "threads": args.threads}
    if args.seed is not None:
        tp["seed"] = args.seed
    for k in KNOBS:
        tp[k] = over.get(k, tp[k])
    train, val = tables(args.split, args.cache, arch["input_size"], over.get("margin", 0.0),
                        over.get("template", "arcface"))  # fmt: skip
    suffix = "" if args.seed is None else f"-s{args.seed}"
    out = args.cache / "models" / (name.replace(" ", "_") + suffix + ".pt")
    start = time.perf_counter()
    loss = AgeLossParams(label_sigma=over.get("label_sigma", 0.0),
                         mae_weight=over.get("mae_weight", 0.0))  # fmt: skip
    fit = train_classifier(
        train, val, ModelParams(**arch), TrainParams(**tp), params.ages, out=out, loss=loss
    )
    result = {
        "variant": name,
        **over,
        "epochs": args.epochs,
        "val_mae": fit["best_val_mae"],  # the saved (best) model's validation MAE
        "best_epoch": fit["best_epoch"],
        "wall_s": round(time.perf_counter() - start, 1),
        "threads": args.threads,
        "seed": tp["seed"],
    }
    if args.test:  # score the saved model once on the test part (after every choice is made)
        (test,) = tables(args.split, args.cache, arch["input_size"], over.get("margin", 0.0),
                         over.get("template", "arcface"), ("test",))  # fmt: skip
        scored = test_score(out, test, params.evaluate.cs_max)
        for k in ("mae", "mae_21_60", "mae_flip", "mae_21_60_flip"):
            result[f"test_{k}"] = scored[k]
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", type=Path, required=True, help="split folder with path+landmarks")
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS))
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per variant")
    ap.add_argument("--seed", type=int, default=None,
                    help="training seed (default: class_teacher.seed of --params)")  # fmt: skip
    ap.add_argument("--test", action="store_true", help="also score each model on the test part")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/recipe_search"))
    ap.add_argument("--out", type=Path, default=Path("results/research/recipe_search.json"))
    args = ap.parse_args()
    unknown = set(args.variants) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"unknown variants {sorted(unknown)}; known: {sorted(VARIANTS)}")
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    todo = [(v, VARIANTS[v], args) for v in args.variants if v not in results]
    size = BASE_ARCH["input_size"]
    crops = {(o.get("input_size", size), o.get("margin", 0.0), o.get("template", "arcface"))
             for _, o, _ in todo}  # fmt: skip
    for crop in crops:  # crop once, up front
        tables(args.split, args.cache, *crop)
    with mp.get_context("spawn").Pool(args.jobs) as pool:
        for r in pool.imap_unordered(run_variant, todo):
            results[r["variant"]] = r
            write_json(results, args.out)
            print(json.dumps(r))


if __name__ == "__main__":
    main()
