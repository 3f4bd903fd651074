"""Images per second of ``agedistill predict`` beside the ``align`` stage and the old predict path.

In one run, on the same files, each repeat back to back (alternating which goes first, so neither
always gets the quieter minute; the headline figures are medians over repeats):

* ``chips``: ``--n`` UTKFace chips (a seeded sample): the new ``predict`` (``run_predict``, CSV
  written, ``--workers``), the ``align`` stage (``align_with_params`` with ``params.yaml``'s
  ``align`` section, crops written) and, on the first ``--old-n`` of them, the old path: the
  ``predict`` command of the release before issue 22 (``--old-ref``, unpacked with ``git
  archive`` and run in its own process: one file, one MTCNN call, one model call at a time,
  ``min_face_size`` 20, torch's default threads, rows written at the end), with the same model
  file. Start-up (model and detector loading, worker processes) is inside every timing; Python's
  imports are not;
* ``photos``: every ``--photo-step``-th file of ``--photos`` (real photos, group shots, PNGs,
  non-images), new vs old;
* ``memory``: the ``predict`` command in a subprocess over the first ``--rss-sizes`` files of the
  whole ``--images`` folder (0: all of it): peak resident memory of its process tree (the command
  and its workers), sampled every 0.2 s: the sum of their PSS (shared pages split between the
  processes that map them: the physical memory the run holds), the sum of their RSS (which counts
  the ~0.7 GB of torch libraries and weights the forked workers share once per process: an upper
  bound) and the command's own RSS; and its images/s over the whole folder.

    flock /tmp/agedistill-bench.lock python benchmarks/bench_predict.py \\
        --images ../shared/data/utkface/images --photos ../shared/data/photos \\
        --n 200 --old-n 16 --photo-step 4 --rss-sizes 300 0 \\
        --out results/benchmarks/bench_predict.json

writes the JSON and a figure beside it (``.png``).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from agedistill.config import AlignParams, load_params
from agedistill.faces.align_dataset import SourceSpec, align_with_params
from agedistill.pipeline.machine import cpu_name
from agedistill.pipeline.outputs import write_json
from agedistill.serving.inputs import iter_input_files
from agedistill.serving.loading import default_model_path
from agedistill.serving.predict_run import PredictOptions, run_predict

# the release before issue 22 (batched, parallel, streaming predict): "old predict"
OLD_REF = "b39d0e1"


def sample_files(folder: Path, n: int, seed: int) -> list[Path]:
    """``n`` files of ``folder`` drawn with ``seed`` (sorted first, so the draw is stable)."""
    files = sorted(p for p in folder.iterdir() if p.is_file())
    return sorted(random.Random(seed).sample(files, min(n, len(files))))


def linked(files: list[Path], folder: Path) -> Path:
    """A folder of links to ``files`` (what the stage and the command read)."""
    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        (folder / f.name).symlink_to(f.resolve())
    return folder


def rate(n: int, fn: Callable[[], Any]) -> float:
    """Images per second of one call of ``fn`` on ``n`` images."""
    start = time.perf_counter()
    fn()
    return n / (time.perf_counter() - start)


def new_predict(folder: Path, out: Path, workers: int) -> None:
    """The ``predict`` command on ``folder`` (as ``agedistill predict FOLDER --out OUT``)."""
    # one reading per face, as the old path and the stored figures
    opts = PredictOptions(out=out, progress=False, workers=workers, flip=False)
    code = run_predict([folder], opts)
    assert code == 0


def released_code(ref: str, dest: Path) -> Path:
    """The ``agedistill`` package of commit ``ref`` (``git archive``), unpacked in ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "archive", ref, "agedistill"], check=True,
                             capture_output=True).stdout  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


OLD_RUN = """
import sys, time
sys.path.insert(0, sys.argv[1])
from agedistill.cli import main
files = open(sys.argv[2]).read().split("\\n")
start = time.perf_counter()
code = main(["predict", *files, "--out", sys.argv[3], "--no-progress", "--model", sys.argv[4]])
print(time.perf_counter() - start)
sys.exit(code)
"""


def old_predict(files: list[Path], out: Path, code: Path, model: Path) -> float:
    """Images/s of the released ``predict`` (the package in ``code``) on ``files``, with its
    defaults, in a fresh process; timed from its ``main`` call (after Python's imports)."""
    listing = out.with_suffix(".files")
    listing.write_text("\n".join(str(f) for f in files))
    proc = subprocess.run([sys.executable, "-c", OLD_RUN, str(code), str(listing), str(out),
                           str(model)], check=True, capture_output=True, text=True)  # fmt: skip
    return len(files) / float(proc.stdout.split()[-1])


def align_stage(folder: Path, crops: Path, p: AlignParams, n: int) -> None:
    """The ``align`` stage on ``folder`` (crops and tables, as ``dvc repro align``)."""
    manifest, rejects = align_with_params([SourceSpec(str(folder), "utkface")], crops, p,
                                          progress=False)  # fmt: skip
    assert len(manifest) + len(rejects) == n


def _tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out


def _memory_mb(pids: list[int]) -> tuple[float, float]:
    """Summed RSS and PSS (MB) of ``pids`` from ``/proc/PID/smaps_rollup``."""
    rss = pss = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1])
        except OSError:
            pass
    return rss / 1024, pss / 1024


def command_memory(files: list[Path], workers: int, tmp: Path) -> dict[str, float]:
    """Peak RSS/PSS of ``agedistill predict`` over ``files`` (linked into a folder), and img/s."""
    folder = linked(files, tmp / f"rss_{len(files)}")
    out = tmp / f"rss_{len(files)}.csv"
    cmd = [sys.executable, "-m", "agedistill.cli", "predict", str(folder), "--out", str(out),
           "--workers", str(workers), "--no-progress"]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.Popen(cmd)
    peak_rss = peak_pss = peak_parent = 0.0
    while proc.poll() is None:
        rss, pss = _memory_mb(_tree(proc.pid))
        peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
        peak_parent = max(peak_parent, _memory_mb([proc.pid])[0])
        time.sleep(0.2)
    seconds = time.perf_counter() - start
    assert proc.returncode == 0
    return {"files": len(files), "peak_rss_mb": round(peak_rss), "peak_pss_mb": round(peak_pss),
            "peak_parent_rss_mb": round(peak_parent),
            "img_s": round(len(files) / seconds, 1)}  # fmt: skip


def _median(xs: list[float]) -> float:
    return round(statistics.median(xs), 1)


def side_by_side(
    runs: dict[str, Callable[[], float]], repeats: int, label: str
) -> dict[str, list[float]]:
    """Each run once per repeat, the order rotated every repeat; images/s per run."""
    out: dict[str, list[float]] = {k: [] for k in runs}
    names = list(runs)
    for r in range(repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            out[name].append(runs[name]())
        print(f"{label} repeat {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in out.items()))
    return out


def figure(results: dict[str, Any], path: Path) -> None:
    """Three panels: chips img/s, photos img/s, peak memory against the number of files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    for ax, key, title in ((axes[0], "chips", "UTKFace chips"), (axes[1], "photos", "real photos")):
        if key not in results:  # a run still going: the blocks so far
            continue
        runs = results[key]["runs"]
        names = list(runs)
        meds = [statistics.median(runs[k]) for k in names]
        colours = {"align stage": "#4c72b0", "new predict": "#55a868", "old predict": "#c44e52"}
        ax.bar(names, meds, color=[colours[k] for k in names])
        for i, k in enumerate(names):
            ax.plot([i] * len(runs[k]), runs[k], "k.", ms=5)
            ax.text(i, meds[i], f"{meds[i]:.1f}", ha="center", va="bottom")
        ax.set_ylabel("images / s (median of repeats, dots: runs)")
        ax.set_title(f"{title} ({results[key]['files']} files)")
    mem = results.get("memory", {}).get("runs", [])
    xs = [m["files"] for m in mem]
    axes[2].plot(xs, [m["peak_rss_mb"] for m in mem], "o-", label="RSS, summed over processes")
    axes[2].plot(xs, [m["peak_pss_mb"] for m in mem], "s-", label="PSS (shared pages split)")
    axes[2].plot(xs, [m["peak_parent_rss_mb"] for m in mem], "^-", label="the command's own RSS")
    axes[2].axhline(1536, color="grey", ls="--", label="1.5 GB")
    axes[2].set_xlabel("files predicted")
    axes[2].set_ylabel("peak memory of predict (MB)")
    axes[2].set_ylim(0, max([1800] + [1.1 * m["peak_rss_mb"] for m in mem]))
    axes[2].legend(fontsize=8)
    axes[2].set_title("memory over the folder")
    load = results["environment"]
    fig.suptitle(
        f"agedistill predict, {load['cpus']} CPUs, load avg {load['load_avg_1min_start']}"
        f" -> {load['load_avg_1min_end']} (shared machine): benchmarks/bench_predict.py",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=Path, default=Path("../shared/data/utkface/images"))
    ap.add_argument("--photos", type=Path, default=Path("../shared/data/photos"))
    ap.add_argument("--n", type=int, default=1000, help="chips timed side by side")
    ap.add_argument("--old-n", type=int, default=100, help="chips the old path is timed on")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--photo-step", type=int, default=1, help="every k-th file of --photos")
    ap.add_argument("--rss-sizes", type=int, nargs="+", default=[1000, 4000, 0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--blocks", nargs="+", choices=["chips", "photos", "memory"],
                    default=["chips", "photos", "memory"], help="what to measure")  # fmt: skip
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--old-ref", default=OLD_REF, help="commit whose predict is the old path")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", type=Path, default=Path("results/benchmarks/bench_predict.json"))
    args = ap.parse_args()
    p = load_params(args.params).align
    load_start = os.getloadavg()[0]
    chips = sample_files(args.images, args.n, args.seed)
    old_chips = chips[: args.old_n]
    photos = [f for f, _ in iter_input_files([args.photos])][:: args.photo_step]
    results: dict[str, Any] = {}

    def save() -> None:  # after every block, so a run cut short keeps what it measured
        results["environment"] = {
            "machine": cpu_name(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "load_avg_1min_start": round(load_start, 2),
            "load_avg_1min_end": round(os.getloadavg()[0], 2),
            "workers": args.workers, "repeats": args.repeats,
            "align_params": {k: getattr(p, k) for k in ("min_face_size", "batch_size", "workers",
                                                        "threads")},
            "old_path_code": args.old_ref,
        }  # fmt: skip
        write_json(results, args.out)
        figure(results, args.out.with_suffix(".png"))

    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        folder = linked(chips, tmp / "chips")
        photo_dir = tmp / "photos"  # the same files for both, in their subfolders
        for f in photos:
            link = photo_dir / f.relative_to(args.photos)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(f.resolve())
        counter = iter(range(10**6))
        old_code = released_code(args.old_ref, tmp / "old_code")
        model = default_model_path()  # the same model file for the old and the new path

        def fresh(name: str) -> Path:
            return tmp / f"{name}_{next(counter)}"

        if "chips" in args.blocks:
            chip_runs = {
                "align stage": lambda: rate(len(chips), lambda: align_stage(
                    folder, fresh("crops"), p, len(chips))),
                "new predict": lambda: rate(len(chips), lambda: new_predict(
                    folder, fresh("new").with_suffix(".csv"), args.workers)),
                "old predict": lambda: old_predict(
                    old_chips, fresh("old").with_suffix(".csv"), old_code, model),
            }  # fmt: skip
            runs = side_by_side(chip_runs, args.repeats, "chips")
            ratio_align = [
                n / a for n, a in zip(runs["new predict"], runs["align stage"], strict=True)
            ]
            ratio_old = [
                n / o for n, o in zip(runs["new predict"], runs["old predict"], strict=True)
            ]
            results["chips"] = {
                "files": len(chips), "old_path_files": len(old_chips), "runs": runs,
                "img_s": {k: _median(v) for k, v in runs.items()},
                "new_over_align": round(statistics.median(ratio_align), 2),
                "new_over_align_runs": [round(r, 2) for r in ratio_align],
                "new_over_old": round(statistics.median(ratio_old), 1),
                "new_over_old_runs": [round(r, 1) for r in ratio_old],
            }  # fmt: skip
            save()
        if "photos" in args.blocks:
            photo_runs = {
                "new predict": lambda: rate(len(photos), lambda: new_predict(
                    photo_dir, fresh("pnew").with_suffix(".csv"), args.workers)),
                "old predict": lambda: old_predict(
                    photos, fresh("pold").with_suffix(".csv"), old_code, model),
            }  # fmt: skip
            pruns = side_by_side(photo_runs, args.repeats, "photos")
            pratio = [
                n / o for n, o in zip(pruns["new predict"], pruns["old predict"], strict=True)
            ]
            results["photos"] = {
                "files": len(photos), "runs": pruns,
                "img_s": {k: _median(v) for k, v in pruns.items()},
                "new_over_old": round(statistics.median(pratio), 2),
                "new_over_old_runs": [round(r, 2) for r in pratio],
            }  # fmt: skip
            save()
        if "memory" in args.blocks:
            everything = sorted(f for f in args.images.iterdir() if f.is_file())
            mem = []
            for size in args.rss_sizes:
                files = everything[:size] if size else everything
                mem.append(command_memory(files, args.workers, tmp))
                print("memory", mem[-1])
                results["memory"] = {
                    "runs": mem, "peak_rss_mb_max": max(m["peak_rss_mb"] for m in mem),
                    "peak_pss_mb_max": max(m["peak_pss_mb"] for m in mem),
                }  # fmt: skip
                save()
    print(results)


if __name__ == "__main__":
    main()
