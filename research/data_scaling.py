"""How the no-distillation model's test MAE falls with the number of training faces.

Trains the class teacher's recipe (the student's architecture, ``class_teacher`` params of the
workspace) on nested, age-stratified fractions of a finished pipeline's training part, with the
validation and test parts unchanged, and scores each model once on the test part. A power law with
an asymptote, ``MAE(n) = a + b * n**-c``, fitted to the runs says how far more faces of the same
kind would carry this network, and about how many it would need for a given MAE.

    python -m research.data_scaling run --workspace <pipeline dir> --fractions 0.125 0.25 0.5 1 \\
        --seeds 0 1 --threads 2 --out results/research/data_scaling
    python -m research.data_scaling table --out results/research/data_scaling --target 5.25

Every fraction trains for the recipe's epochs (``class_teacher.epochs``), so smaller parts get
fewer optimizer steps; ``--match-steps`` gives them the whole part's steps instead, to check that
this does not steepen the curve (on UTKFace the longer schedules overfit). Finished runs
(``<out>/runs/*.json``) are skipped, so a killed grid resumes with the next run.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from agedistill.config import TrainParams, load_params
from agedistill.data.tables import FaceTable, load_table
from agedistill.pipeline.outputs import write_json
from agedistill.training.recipes import train_classifier
from research.ablation import Workspace, test_score


def nested_subset(rows: pd.DataFrame, fraction: float, seed: int, age_bin: int = 5) -> np.ndarray:
    """Row positions of an age-stratified ``fraction`` of ``rows``; nested across fractions.

    Each row draws a random rank within its ``age_bin``-year bin (the same draw for every
    fraction); a fraction keeps the rows whose rank falls below ``fraction`` of their bin, at
    least one per bin. So the 1/8 part lies inside the 1/4 part, and so on.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction {fraction}: expected 0 < fraction <= 1")
    rng = np.random.default_rng(seed)
    bins = rows["age"].to_numpy() // age_bin
    keep = np.zeros(len(rows), dtype=bool)
    for b in np.unique(bins):
        pos = np.flatnonzero(bins == b)
        order = pos[rng.permutation(len(pos))]
        keep[order[: max(1, round(fraction * len(pos)))]] = True
    return np.flatnonzero(keep)


def subset(table: FaceTable, positions: np.ndarray) -> FaceTable:
    """The rows of ``table`` at ``positions``."""
    rows = table.rows.iloc[positions].reset_index(drop=True)
    return FaceTable(table.images[positions], table.ages[positions], rows)


def run_grid(args: argparse.Namespace) -> None:
    """Train and score every (fraction, seed) run that has no result yet."""
    ws = Workspace.of(args.workspace)
    params = load_params(ws.params)
    arch, size = params.student, params.student.input_size
    train, val, test = (load_table(ws.split / f"{p}.csv", ws.crops, size)
                        for p in ("train", "val", "test"))  # fmt: skip
    runs = args.out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        for fraction in args.fractions:
            name = f"f{fraction:g}-s{seed}" + ("-steps" if args.match_steps else "")
            if (runs / f"{name}.json").exists():
                continue
            part = subset(train, nested_subset(train.rows, fraction, seed))
            tp = params.class_teacher.model_dump() | {"seed": seed, "threads": args.threads}
            if args.match_steps:  # as many optimizer steps as the whole part gets
                tp["epochs"] = round(tp["epochs"] / fraction)
            model = args.models / f"{name}.pt"
            model.parent.mkdir(parents=True, exist_ok=True)
            print(f"{name}: {len(part)} training faces, {tp['epochs']} epochs", flush=True)
            start = time.perf_counter()
            fit = train_classifier(
                part, val, arch, TrainParams(**tp), params.ages, out=model,
                loss=params.age_loss, crop=params.align.crop_settings(),
            )  # fmt: skip
            scored = test_score(model, test, params.evaluate.cs_max)
            result = {
                "fraction": fraction,
                "seed": seed,
                "train_faces": len(part),
                "epochs": tp["epochs"],
                "schedule": "steps" if args.match_steps else "epochs",
                "val_mae": fit["best_val_mae"],
                "best_epoch": fit["best_epoch"],
                **{f"test_{k}": scored[k] for k in ("mae", "mae_flip", "mae_21_60")},
                "wall_s": round(time.perf_counter() - start, 1),
                "threads": args.threads,
            }
            write_json(result, runs / f"{name}.json")
            print(json.dumps(result), flush=True)


def distill_grid(args: argparse.Namespace) -> None:
    """Distil a soft-target student from each fraction's class teacher, on the same faces.

    Each (fraction, seed) gets a pipeline-shaped workspace under ``--work``: the fraction's
    training rows as its split, the run's class teacher, and the pipeline's ranking teacher
    (which only the hint term reads, so only the ``soft`` variant runs here). The ablation's own
    runner trains and scores the student, so it is the ablation's ``soft`` row trained on fewer
    faces; its result lands in ``<out>/students/``. A run of ``--ablation`` (a finished
    ablation's folder) distilled from a bit-identical class teacher is taken instead of training
    it again.
    """
    from research.ablation import run_grid

    ws = Workspace.of(args.workspace)
    rows = pd.read_csv(ws.split / "train.csv")
    (args.out / "students").mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        for fraction in args.fractions:
            name = f"f{fraction:g}-s{seed}"
            teacher = args.models / f"{name}.pt"
            if not teacher.exists():
                raise SystemExit(f"{teacher}: missing; `run` this fraction and seed first")
            result = args.out / "students" / f"{name}.json"
            done = args.ablation / "runs" / f"soft-s{seed}.json" if args.ablation else None
            if (done and done.exists() and same_weights(teacher, ws.class_teacher)
                    and json.loads(done.read_text())["teachers"]["class_teacher"]
                    == ws.digests()["class_teacher"]):  # fmt: skip
                print(f"{name}: {done} was distilled from a class teacher of these very weights")
                shutil.copy(done, result)
            if result.exists():
                continue
            work = args.work / name
            split = work / "split"
            split.mkdir(parents=True, exist_ok=True)
            rows.iloc[nested_subset(rows, fraction, seed)].to_csv(split / "train.csv", index=False)
            for part in ("val", "test"):
                shutil.copy(ws.split / f"{part}.csv", split / f"{part}.csv")
            here = replace(ws, split=split, class_teacher=teacher)
            run_grid(here, ["soft"], [seed], work, 1, args.threads)
            shutil.copy(work / "runs" / f"soft-s{seed}.json", result)


def same_weights(a: Path, b: Path) -> bool:
    """Whether two model files hold equal tensors under the same names (file bytes may differ)."""
    import torch

    sa, sb = (torch.load(p, weights_only=True, map_location="cpu") for p in (a, b))
    sa, sb = (s.get("state_dict", s) for s in (sa, sb))
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def fit_power_law(n: np.ndarray, mae: np.ndarray, asymptote: bool = True) -> dict[str, float]:
    """Least-squares ``mae = a + b * n**-c``: ``c`` on a fine grid, ``a`` and ``b`` exact for each.

    ``asymptote=False`` holds ``a`` at 0 (a straight line on log-log axes): the curve then falls
    for ever, which is the most hopeful reading of the same runs.
    """
    best: dict[str, float] = {}
    for c in np.linspace(0.02, 2.0, 991):
        if asymptote:
            design = np.stack([np.ones_like(n), n**-c], axis=1)
            (a, b), *_ = np.linalg.lstsq(design, mae, rcond=None)
        else:
            (b,), *_ = np.linalg.lstsq((n**-c)[:, None], mae, rcond=None)
            a, design = 0.0, np.stack([np.zeros_like(n), n**-c], axis=1)
        sse = float(np.sum((design @ np.array([a, b]) - mae) ** 2))
        if b > 0 and (not best or sse < best["sse"]):
            best = {"a": float(a), "b": float(b), "c": float(c), "sse": sse}
    if not best:
        raise ValueError("MAE does not fall with more faces: no power law with b > 0 fits")
    best["rmse"] = float(np.sqrt(best["sse"] / len(n)))
    return best


def faces_for(fit: dict[str, float], target: float) -> float:
    """Training faces at which the fitted curve reaches ``target`` (inf: below its asymptote)."""
    if target <= fit["a"]:
        return float("inf")
    return float((fit["b"] / (target - fit["a"])) ** (1 / fit["c"]))


SCHEDULES = {"epochs": "the recipe's epochs", "steps": "the whole part's steps"}


def load_runs(out: Path) -> pd.DataFrame:
    """Every finished run under ``out/runs``, with its soft-target student's test MAE if any."""
    files = sorted((out / "runs").glob("*.json"))
    if not files:
        raise SystemExit(f"{out}/runs: no finished runs; run `run` first")
    df = pd.DataFrame([json.loads(f.read_text()) for f in files])
    df["schedule"] = df.get("schedule", pd.Series(index=df.index, dtype=object)).fillna("epochs")
    taught = students(out)
    df["student_test_mae"] = [taught.get(f"f{r.fraction:g}-s{r.seed}", np.nan)
                              if r.schedule == "epochs" else np.nan
                              for r in df.itertuples()]  # fmt: skip
    df["student_gain"] = df["test_mae"] - df["student_test_mae"]
    return df.sort_values(["schedule", "train_faces", "seed"]).reset_index(drop=True)


def schedule_runs(df: pd.DataFrame, schedule: str) -> pd.DataFrame:
    """The runs of one schedule; the whole part (fraction 1) is the same run under both."""
    return df[(df["schedule"] == schedule) | (df["fraction"] == 1)].drop_duplicates(
        ["fraction", "seed"]
    )


def fit_both(runs: pd.DataFrame, targets: list[float]) -> dict[str, dict]:
    """Both power laws on these runs, each with its MAE at 1x, 2x, 4x the faces and its needs."""
    n, mae = runs["train_faces"].to_numpy(float), runs["test_mae"].to_numpy(float)
    full = float(n.max())
    fits = {"asymptote": fit_power_law(n, mae), "no_asymptote": fit_power_law(n, mae, False)}
    for fit in fits.values():
        fit |= {f"at_{k}x": fit["a"] + fit["b"] * (k * full) ** -fit["c"] for k in (1, 2, 4)}
        fit["faces_for_target"] = {f"{t:g}": faces_for(fit, t) for t in targets}
    return fits


def finite(x: Any) -> Any:
    """``x`` with infinite floats as None, so the metrics JSON stays valid JSON."""
    if isinstance(x, dict):
        return {k: finite(v) for k, v in x.items()}
    return None if isinstance(x, float) and math.isinf(x) else x


def table(args: argparse.Namespace) -> None:
    """Fit the curves to the finished runs; write ``data_scaling.{json,md,png}`` under ``--out``."""
    df = load_runs(args.out)
    full = int(df["train_faces"].max())
    fits = {}
    for schedule in SCHEDULES:
        runs = schedule_runs(df, schedule)
        if runs["fraction"].nunique() >= 3:  # three parameters want three sizes at least
            fits[schedule] = fit_both(runs, args.target)
    per = df.groupby(["schedule", "train_faces"]).agg(
        fraction=("fraction", "first"), epochs=("epochs", "first"), runs=("seed", "size"),
        test_mae=("test_mae", "mean"), test_mae_sd=("test_mae", "std"),
        val_mae=("val_mae", "mean"), wall_s=("wall_s", "median"),
        student_test_mae=("student_test_mae", "mean"), student_gain=("student_gain", "mean"),
    ).reset_index()  # fmt: skip
    summary = {
        "model": "test MAE = a + b * train_faces ** -c (least squares over every run of a "
        "schedule); no_asymptote: a = 0",
        "schedules": SCHEDULES,
        "train_faces_now": full,
        "fits": finite(fits),  # faces_for_target None: never (below the asymptote)
        "per_size": per.to_dict(orient="records"),
        "runs": df.to_dict(orient="records"),
    }
    write_json(summary, args.out / "data_scaling.json")
    lines = ["| schedule | training faces | fraction | epochs | runs | test MAE (mean) | sd "
             "| val MAE | time (s) | soft-target student, test MAE | its gain |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for r in per.itertuples():
        sd = "" if np.isnan(r.test_mae_sd) else f"{r.test_mae_sd:.3f}"
        st, gain = (("", "") if np.isnan(r.student_test_mae)
                    else (f"{r.student_test_mae:.3f}", f"{r.student_gain:.3f}"))  # fmt: skip
        lines.append(f"| {r.schedule} | {r.train_faces} | {r.fraction:g} | {r.epochs} | {r.runs} "
                     f"| {r.test_mae:.3f} | {sd} | {r.val_mae:.3f} | {r.wall_s:.0f} | {st} "
                     f"| {gain} |")  # fmt: skip
    lines.append("")
    for schedule, both in fits.items():
        for name, fit in both.items():
            lines.append(f"- {SCHEDULES[schedule]}, fit {name.replace('_', ' ')}: MAE = "
                         f"{fit['a']:.3f} + {fit['b']:.2f} · n^-{fit['c']:.3f} (rmse "
                         f"{fit['rmse']:.3f}); at 2x today's faces {fit['at_2x']:.3f}, at 4x "
                         f"{fit['at_4x']:.3f}")  # fmt: skip
            for t, need in fit["faces_for_target"].items():
                said = "never (below the asymptote)"
                if not np.isinf(need):
                    said = f"{need:,.0f} faces ({need / full:.1f}x today's {full:,})"
                lines.append(f"  - test MAE {t}: {said}")
    (args.out / "data_scaling.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot(df, fits, args.target, args.out / "data_scaling.png")


def students(out: Path) -> dict[str, float]:
    """Test MAE of each soft-target student of ``distill``, by run name (``f0.5-s0``)."""
    return {p.stem: json.loads(p.read_text())["test"]["mae"]
            for p in sorted((out / "students").glob("*.json"))}  # fmt: skip


def plot(df: pd.DataFrame, fits: dict[str, dict], targets: list[float], path: Path) -> None:
    """Test MAE of every run against training faces (log axis), with the fitted curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    grid = np.geomspace(df["train_faces"].min(), df["train_faces"].max() * 8, 200)
    styles = zip(SCHEDULES.items(), ("C0", "C2"), "os", strict=True)
    for (schedule, label), colour, marker in styles:
        runs = schedule_runs(df, schedule)
        if schedule != "epochs" and (runs["schedule"] == schedule).sum() == 0:
            continue
        ax.scatter(runs["train_faces"], runs["test_mae"], color=colour, marker=marker, zorder=3,
                   label=f"no distillation, {label}")  # fmt: skip
        for name, fit in fits.get(schedule, {}).items():
            ax.plot(grid, fit["a"] + fit["b"] * grid ** -fit["c"], color=colour,
                    ls="-" if name == "asymptote" else "-.", lw=1,
                    label=f"  fit {fit['a']:.2f} + {fit['b']:.1f}·n^-{fit['c']:.2f}")  # fmt: skip
    if df["student_test_mae"].notna().any():
        ax.scatter(df["train_faces"], df["student_test_mae"], marker="^", color="C3", zorder=3,
                   label="soft-target student of the recipe's-epochs run")  # fmt: skip
    for t in targets:
        ax.axhline(t, ls="--", lw=1, color="grey")
        ax.annotate(f"{t:g}", (grid[0], t), va="bottom", fontsize=8, color="grey")
    ax.axvline(df["train_faces"].max(), ls=":", color="k", lw=1, label="all training faces")
    ax.set(xscale="log", xlabel="training faces", ylabel="test MAE (years)",
           title="Test MAE against training faces")  # fmt: skip
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="train and score the grid")
    r.add_argument("--workspace", type=Path, required=True, help="a finished pipeline's folder")
    r.add_argument("--fractions", type=float, nargs="+", default=[0.125, 0.25, 0.5, 1.0])
    r.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--match-steps", action="store_true",
                   help="fraction f trains epochs/f epochs (the whole part's steps)")  # fmt: skip
    r.add_argument("--models", type=Path, default=Path("/tmp/data_scaling/models"))
    r.add_argument("--out", type=Path, default=Path("results/research/data_scaling"))
    d = sub.add_parser("distill", help="soft-target students of the fractions' class teachers")
    d.add_argument("--workspace", type=Path, required=True, help="a finished pipeline's folder")
    d.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5])
    d.add_argument("--seeds", type=int, nargs="+", default=[0])
    d.add_argument("--threads", type=int, default=2)
    d.add_argument("--models", type=Path, default=Path("/tmp/data_scaling/models"))
    d.add_argument("--work", type=Path, default=Path("/tmp/data_scaling/distill"),
                   help="the students' workspaces, models and checkpoints")  # fmt: skip
    d.add_argument("--ablation", type=Path, help="a finished ablation's folder to take runs from")
    d.add_argument("--out", type=Path, default=Path("results/research/data_scaling"))
    t = sub.add_parser("table", help="fit and tabulate the finished runs")
    t.add_argument("--out", type=Path, default=Path("results/research/data_scaling"))
    t.add_argument("--target", type=float, nargs="+", default=[5.25],
                   help="test MAEs to find the faces for")  # fmt: skip
    args = ap.parse_args()
    {"run": run_grid, "distill": distill_grid, "table": table}[args.cmd](args)


if __name__ == "__main__":
    main()
