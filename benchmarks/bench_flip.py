"""What ``predict``'s default flip costs: each face read both ways against once, side by side.

In one run, with the shipped model as ``predict`` serves it (``--model``: default, its ONNX twin):

* ``photos``: photo to ages, steady state (model and detector loaded once): every file of
  ``--photos`` (group shots, PNGs, non-images) through ``predict_files`` with the model's own
  detector, flip on and off in turns (which goes first alternates), ``--repeats`` times; the
  wall time of each pass over the folder, medians and their ratio;
* ``faces``: the age model alone on ``--n`` real aligned faces at batch 64, flip on and off in
  blocks of calls (``bench_speed.interleaved_seconds``): faces/s, medians and their ratio; for
  an ONNX model also ``flip_graph``, the same weights exported with ``--flip`` (the mirror
  reading inside one graph call) in the same blocks.

    python benchmarks/bench_flip.py --crops <a run>/data/aligned/crops \\
        --out results/benchmarks/bench_flip.json
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from bench_speed import environment, interleaved_seconds, photo_files
from PIL import Image

from agedistill.pipeline.outputs import write_json
from agedistill.serving.age_model import AgeModel
from agedistill.serving.export import export_model
from agedistill.serving.loading import default_serving_path, load_age_model
from agedistill.serving.onnx_model import ONNX_SUFFIX
from agedistill.serving.predict import predict_detector, predict_files

REPO = Path(__file__).resolve().parents[1]
BATCH = 64


def aligned_faces(crops: Path, n: int, side: int) -> np.ndarray:
    """``n`` aligned crops (sorted by name, every k-th) at ``side``: uint8 (n, side, side, 3)."""
    files = sorted(crops.glob("*.png"))
    if len(files) < n:
        raise SystemExit(f"{crops}: {len(files)} crops, --n asks for {n}")
    picked = files[:: len(files) // n][:n]
    faces = []
    for f in picked:
        with Image.open(f) as im:
            faces.append(np.asarray(im.convert("RGB").resize((side, side), Image.BILINEAR)))
    return np.stack(faces)


def photo_seconds(
    photos: list[Path], models: dict[str, AgeModel], repeats: int
) -> dict[str, list[float]]:
    """Seconds per pass over ``photos`` of each model, in turns, the first one alternating."""
    detector = predict_detector(next(iter(models.values())))
    for model in models.values():  # warm-up: sessions, thread pools, file cache
        list(predict_files(photos[:3], model, detector, progress=False))
    times: dict[str, list[float]] = {name: [] for name in models}
    order = list(models)
    for r in range(repeats):
        for name in order if r % 2 == 0 else order[::-1]:
            t0 = time.perf_counter()
            list(predict_files(photos, models[name], detector, progress=False))
            times[name].append(time.perf_counter() - t0)
    return times


def photo_result(photos: list[Path], models: dict[str, AgeModel], repeats: int) -> dict[str, Any]:
    """Seconds per pass over the photos each way, their medians and the ratio flip / one way."""
    times = photo_seconds(photos, models, repeats)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"n_files": len(photos), "seconds_per_pass": times, "median_s": med,
            "flip_over_one_way": med["flip"] / med["one_way"]}  # fmt: skip


def face_result(faces: np.ndarray, models: dict[str, AgeModel], calls: int) -> dict[str, Any]:
    """Faces/s of the age model alone each way on one batch, and the ratio one way / flip (and
    flip graph / flip, when ``models`` has a ``flip_graph``)."""
    secs = interleaved_seconds({k: lambda m=m: m.ages(faces) for k, m in models.items()},
                               calls, warmup=3)  # fmt: skip
    per_s = {k: len(faces) / median for k, (median, _) in secs.items()}
    out = {"batch": len(faces), "faces_per_s": per_s,
           "one_way_over_flip": per_s["one_way"] / per_s["flip"]}  # fmt: skip
    if "flip_graph" in per_s:
        out["flip_graph_over_flip"] = per_s["flip_graph"] / per_s["flip"]
    return out


def flip_graph(served: AgeModel, folder: Path) -> AgeModel | None:
    """The served ONNX model's weights exported with ``--flip`` (None for a PyTorch model or an
    ONNX file without its ``.pt`` beside it)."""
    source = served.path.with_suffix(".pt")
    if served.path.suffix != ONNX_SUFFIX or not source.is_file():
        return None
    return load_age_model(export_model("onnx", folder / "flip.onnx", source, flip=True))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="model file (default: the one predict serves)")
    ap.add_argument("--photos", type=Path, default=REPO.parent / "shared" / "data" / "photos")
    ap.add_argument("--crops", type=Path, required=True, help="a folder of aligned face crops")
    ap.add_argument("--n", type=int, default=BATCH, help="aligned faces per call")
    ap.add_argument("--repeats", type=int, default=7, help="passes over the photos per setting")
    ap.add_argument("--calls", type=int, default=60, help="timed batch calls per setting")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    served = load_age_model(args.model or default_serving_path())
    models = {"flip": dataclasses.replace(served, flip=True),
              "one_way": dataclasses.replace(served, flip=False)}  # fmt: skip
    result: dict[str, Any] = {"environment": environment(args.threads), "model": str(served.path)}

    result["photos"] = photo_result(photo_files(args.photos), models, args.repeats)
    faces = aligned_faces(args.crops, args.n, served.input_size)
    with tempfile.TemporaryDirectory() as tmp:
        graph = flip_graph(served, Path(tmp))
        result["faces"] = face_result(faces, models | ({"flip_graph": graph} if graph else {}),
                                      args.calls)  # fmt: skip
    result["environment"]["load_avg_1m_end"] = os.getloadavg()[0]
    write_json(result, args.out)
    p, f = result["photos"], result["faces"]
    med, per_s = p["median_s"], f["faces_per_s"]
    print(
        f"{p['n_files']} files per pass: flip {med['flip']:.2f} s, one way {med['one_way']:.2f} s "
        f"(x{p['flip_over_one_way']:.3f}); faces/s at batch {f['batch']}: flip "
        f"{per_s['flip']:,.0f}, one way {per_s['one_way']:,.0f} (x{f['one_way_over_flip']:.2f})"
        + (f", flip graph {per_s['flip_graph']:,.0f}" if "flip_graph" in per_s else "")
    )


if __name__ == "__main__":
    main()
