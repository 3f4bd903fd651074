"""``agedistill predict`` on a machine whose cores are busy: torch threads 1 against the default.

    python benchmarks/bench_busy_cores.py [--images 12] \\
        [--out results/benchmarks/bench_busy_cores.json]

Predicts ages for ``--images`` held-out UTKFace chips (``tests/data/utkface_heldout.csv``) one
file at a time, as ``agedistill predict`` does, with torch's default thread count (one per core)
and with one thread, each with the cores idle and with a competing load: a separate process
running float32 matrix products on as many threads as there are cores (what a training run in the
background does). Settings alternate image by image, so the four are measured side by side under
the same conditions; the figure is the median seconds per image. Torch's OpenMP threads wait for
each other at every operation, so on busy cores every wait becomes a scheduler time slice.
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing as mp
import multiprocessing.synchronize
import os
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

from agedistill.faces.mtcnn import MtcnnDetector
from agedistill.pipeline.machine import cpu_name
from agedistill.serving.loading import load_age_model
from agedistill.serving.predict import DETECT_DEFAULTS, predict_files

REPO = Path(__file__).resolve().parents[1]
HELDOUT = REPO / "tests" / "data" / "utkface_heldout.csv"


def _busy(threads: int, stop: multiprocessing.synchronize.Event) -> None:
    """Matrix products on ``threads`` threads until ``stop`` is set: the competing load."""
    torch.set_num_threads(threads)
    a = torch.randn(1024, 1024)
    while not stop.is_set():
        a = torch.tanh(a @ a)


def _time_one(path: Path, threads: int, model, detector) -> float:
    torch.set_num_threads(threads)
    t = time.perf_counter()
    (result,) = predict_files([path], model, detector, progress=False)
    took = time.perf_counter() - t
    if not result.faces:
        raise RuntimeError(f"{path}: {result.error}")
    return took


def measure(files: list[Path], settings: dict[str, int], model, detector) -> dict[str, float]:
    """Median seconds per image of each setting, alternating settings image by image."""
    times: dict[str, list[float]] = {name: [] for name in settings}
    _time_one(files[0], max(settings.values()), model, detector)  # warm-up
    for path in files:
        for name, threads in settings.items():
            times[name].append(_time_one(path, threads, model, detector))
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--images", type=int, default=12)
    ap.add_argument("--utkface", type=Path, default=REPO.parent / "shared/data/utkface/images")
    ap.add_argument("--out", type=Path, default=REPO / "results/benchmarks/bench_busy_cores.json")
    args = ap.parse_args()
    with open(HELDOUT, newline="") as f:
        names = [row["file"] for row in csv.DictReader(f)]
    step = max(1, len(names) // args.images)
    files = [args.utkface / n for n in names[::step][: args.images]]
    cores = os.cpu_count() or 1
    default = torch.get_num_threads()
    settings = {f"{default} threads (default)": default, "1 thread": 1}
    model = load_age_model(flip=False)  # one reading per face, as the stored figures
    detector = MtcnnDetector(**DETECT_DEFAULTS)

    result: dict = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": cpu_name(),
        "cores": cores,
        "torch": torch.__version__,
        "images": len(files),
        "competing_load": f"a process of float32 1024x1024 matmuls on {cores} threads",
        "idle_s_per_image": measure(files, settings, model, detector),
    }
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    load = ctx.Process(target=_busy, args=(cores, stop), daemon=True)
    load.start()
    try:
        time.sleep(2)  # let the load reach its steady state
        result["busy_s_per_image"] = measure(files, settings, model, detector)
    finally:
        stop.set()
        load.join(timeout=30)
    for when in ("idle", "busy"):
        t = result[f"{when}_s_per_image"]
        result[f"{when}_default_over_1_thread"] = t[next(iter(settings))] / t["1 thread"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
