"""Which photo corruptions help on a source the model never saw: one augmentation at a time.

Trains the class teacher's recipe (the student's net, no distillation) on the training sources
and scores it on a held-out source, once per setting: no augmentation, then each augmentation
alone. The held-out source is measured on a part that the final pipeline never tests on (APPA-REAL's
``train`` part; its ``valid`` part, the pipeline's test part, is left out entirely), and the
training sources' own final test parts are left out too, so the choice made here touches no test
part. Each run also reports the in-domain validation MAE, so a setting that buys robustness with
accuracy shows it.

    python -m research.augment_screen run --workspace <dir with params.yaml, aligned/> \\
        --holdout appa_real --measure-part train --epochs 6 \\
        --settings none grayscale=0.3 blur=0.3 jpeg=0.3 low_res=0.3 crop_context=0.3 \\
            rotate=10 color=0.3 scale=0.1 --out results/research/augment_screen
    python -m research.augment_screen table --out results/research/augment_screen

The workspace's ``params.yaml`` gives the sources, split and recipe (``profiles/full.yaml``
merged onto the defaults); ``aligned/manifest.csv`` and ``aligned/crops`` are the align stage's
outputs for it. Finished runs (``<out>/runs/*.json``) are skipped, so a killed screen resumes.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from agedistill.config import Params, TrainParams, load_params
from agedistill.data.splits import apply_age_range, make_split
from agedistill.data.tables import load_table
from agedistill.pipeline.outputs import write_json
from agedistill.training.recipes import train_classifier
from research.ablation import test_score


@dataclass(frozen=True)
class Screen:
    """Where the screen reads its faces and writes its runs."""

    workspace: Path
    out: Path
    holdout: str
    measure_part: str


def parse_setting(text: str) -> dict[str, float]:
    """``"none"`` -> ``{}``; ``"blur=0.3"`` -> ``{"blur": 0.3}`` (a TrainParams field)."""
    if text == "none":
        return {}
    key, _, value = text.partition("=")
    if key not in TrainParams.model_fields or not value:
        raise SystemExit(f"setting {text!r}: expected none or FIELD=VALUE with a train field")
    return {key: float(value)}


def screen_tables(screen: Screen, params: Params) -> dict[str, pd.DataFrame]:
    """Train / val rows of the training sources' non-test parts, and the held-out measure rows."""
    manifest = pd.read_csv(screen.workspace / "aligned" / "manifest.csv", dtype={"subject": str})
    ages, s = params.ages, params.split
    kept, _ = apply_age_range(manifest, ages.min_age, ages.max_age, ages.out_of_range)
    final = make_split(
        kept, seed=s.seed, val_fraction=s.val_fraction, test_fraction=s.test_fraction,
        test_size=s.test_size, age_bin=s.age_bin,
        test_parts={src.name: src.test_part for src in params.align.sources if src.test_part},
    )  # fmt: skip
    held = final["source"] == screen.holdout
    measure = final[held & (final["source_part"] == screen.measure_part)]
    return {
        "train": final[~held & (final["split"] == "train")],
        "val": final[~held & (final["split"] == "val")],
        "measure": measure,
    }


def run_setting(
    screen: Screen, setting: str, epochs: int, seed: int, threads: int = 2
) -> dict[str, Any]:
    """Train with one setting (or reuse its finished run) and score it on the held-out part."""
    runs = screen.out / "runs"
    done = runs / f"{setting}_seed{seed}.json"
    if done.is_file():
        return json.loads(done.read_text())
    params = load_params(screen.workspace / "params.yaml")
    tables = screen_tables(screen, params)
    tmp = screen.out / "tables" / f"{setting}_seed{seed}"
    tmp.mkdir(parents=True, exist_ok=True)
    crops, size = screen.workspace / "aligned" / "crops", params.student.input_size
    faces = {}
    for name, rows in tables.items():
        rows.to_csv(tmp / f"{name}.csv", index=False)
        faces[name] = load_table(tmp / f"{name}.csv", crops, size)
    opt = params.class_teacher.model_copy(
        update={"epochs": epochs, "seed": seed, "threads": threads, **parse_setting(setting)}
    )
    model_file = screen.out / "models" / f"{setting}_seed{seed}.pt"
    model_file.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    fit = train_classifier(
        faces["train"], faces["val"], params.student, opt, params.ages, out=model_file,
        loss=params.age_loss, crop=params.align.crop_settings(),
    )  # fmt: skip
    scores = test_score(model_file, faces["measure"], params.evaluate.cs_max)
    result = {
        "setting": setting,
        "seed": seed,
        "epochs": epochs,
        "holdout": screen.holdout,
        "measure_part": screen.measure_part,
        "n_train": len(faces["train"]),
        "n_measure": len(faces["measure"]),
        "val_mae": fit.get("best_val_mae", fit.get("val_mae")),
        "held_out_mae": scores["mae"],
        "held_out_mae_age_group": scores["mae_age_group"],
        "train_wall_s": round(time.perf_counter() - start, 1),
    }
    runs.mkdir(parents=True, exist_ok=True)
    write_json(result, done)
    return result


def table(out: Path) -> str:
    """Markdown table of every finished run: held-out MAE and its change against ``none``."""
    rows = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*.json"))]
    if not rows:
        return "no finished runs"
    df = pd.DataFrame(rows)
    base = df[df["setting"] == "none"].set_index("seed")["held_out_mae"]
    df["vs_none"] = [r.held_out_mae - base.get(r.seed, float("nan")) for r in df.itertuples()]
    df = df.sort_values(["seed", "held_out_mae"])
    first = df.iloc[0]
    lines = [
        f"held out: {first.holdout} ({first.measure_part} part, {first.n_measure} faces); "
        f"{first.epochs} epochs on {first.n_train} faces",
        "",
        "| setting | seed | held-out MAE | vs none | in-domain val MAE |",
        "|---|---|---|---|---|",
    ]
    for r in df.itertuples():
        mae, val = f"{r.held_out_mae:.3f}", f"{r.val_mae:.3f}"
        lines.append(f"| {r.setting} | {r.seed} | {mae} | {r.vs_none:+.3f} | {val} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run")
    run.add_argument("--workspace", type=Path, required=True)
    run.add_argument("--holdout", default="appa_real")
    run.add_argument("--measure-part", default="train")
    run.add_argument("--epochs", type=int, default=6)
    run.add_argument("--seeds", type=int, nargs="+", default=[0])
    run.add_argument("--settings", nargs="+", default=["none"])
    run.add_argument("--threads", type=int, default=2, help="torch threads of this process")
    run.add_argument("--out", type=Path, required=True)
    tab = sub.add_parser("table")
    tab.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    if args.cmd == "table":
        print(table(args.out))
        return
    for setting in args.settings:
        parse_setting(setting)  # fail on a typo before hours of training
    screen = Screen(args.workspace, args.out, args.holdout, args.measure_part)
    for seed in args.seeds:
        for setting in args.settings:
            r = run_setting(screen, setting, args.epochs, seed, args.threads)
            mae, val, wall = r["held_out_mae"], r["val_mae"], r["train_wall_s"]
            print(f"{setting} seed {seed}: held-out MAE {mae:.3f}, val {val:.3f} ({wall:.0f} s)")
    print(table(args.out))


if __name__ == "__main__":
    main()
