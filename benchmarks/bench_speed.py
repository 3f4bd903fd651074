"""CPU speed of the student, the class teacher and the ranking teacher, side by side.

In one run, on real aligned faces and real photos:

* ``faces_per_s``: aligned faces per second at batch 64 (median batch time);
* ``single_ms``: single-face latency, median of ``--single-calls`` (>= 100) calls;
* ``e2e_ms``: photo to ages per image (decode, MTCNN detection, alignment, model), median and mean
  over the photos in ``--photos``. Decoding and detection do not depend on the age model, so they
  are timed once per photo and added to each model's own alignment-and-forward time;
* ONNX Runtime vs PyTorch for the student (same threads, same faces).

Models (and the two runtimes) are timed in turns, in blocks of calls, so that load from other
processes on a shared machine falls on all of them alike.

The ranking teacher has no age head (its ages come from a linear probe on its embedding, one small
matrix product): its figures are those of its backbone embedding the faces.

Usage::

    python benchmarks/bench_speed.py [--models models] [--photos ../shared/data/photos]
        [--crops data/aligned/crops] [--out results/benchmarks/bench_speed.json] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from agedistill.faces.decode import ImageReadError, load_image
from agedistill.faces.geometry import model_face
from agedistill.faces.mtcnn import MtcnnDetector
from agedistill.models.files import load_model
from agedistill.models.inputs import normalize
from agedistill.models.ordinal import age_std, median_age
from agedistill.pipeline.machine import cpu_name
from agedistill.serving.inference import for_inference
from agedistill.serving.predict import DETECT_DEFAULTS, WORK_SIDE_FACTOR

MODELS = ("student", "class_teacher", "rank_teacher")
REPO = Path(__file__).resolve().parents[1]


def interleaved_seconds(
    fns: dict[str, Callable[[], Any]], calls: int, warmup: int, block: int = 10
) -> dict[str, tuple[float, float]]:
    """Median and 90th percentile seconds of ``calls`` timed calls of each function.

    The functions take turns in blocks of ``block`` calls, so load from other processes on a
    shared machine falls on all of them alike. Each block starts with one untimed call: thread
    pools of the previous function (PyTorch's OpenMP, ONNX Runtime's) spin for a while after
    their last call and would otherwise be charged to the next one.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    while any(len(t) < calls for t in times.values()):
        for name, fn in fns.items():
            fn()
            for _ in range(min(block, calls - len(times[name]))):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    return {k: (statistics.median(t), float(np.percentile(t, 90))) for k, t in times.items()}


def age_forward(model: torch.nn.Module, config: dict[str, Any]) -> Callable[[torch.Tensor], Any]:
    """Normalised faces -> what the model gives a user: ages and spreads, or embeddings."""
    if config["arch"] == "rank_teacher":
        return model.embed  # no age head; see the module docstring

    def ages(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(x)
        return median_age(logits, config["min_age"]), age_std(logits)

    return ages


def real_faces(crops_dir: Path, n: int, size: int) -> torch.Tensor:
    """``n`` aligned crops from the ``align`` stage as uint8 (n, 3, size, size), cycled if fewer."""
    files = sorted(crops_dir.glob("*.png"))
    if not files:
        raise SystemExit(f"no aligned crops in {crops_dir}: run the align stage or pass --crops")
    arrays = []
    for f in (files * (n // len(files) + 1))[:n]:
        with Image.open(f) as im:
            arrays.append(np.asarray(im.convert("RGB").resize((size, size))))
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


@torch.inference_mode()
def speeds(
    forwards: dict[str, Callable[[Any], Any]],
    x: Any | dict[str, Any],
    batch_repeats: int,
    single_calls: int,
) -> dict[str, dict[str, float]]:
    """faces/s at the batch size of ``x`` and single-face latency (ms) of each forward.

    ``x``: one batch for every forward, or a batch per forward's name (each model's own size).
    """
    xs = x if isinstance(x, dict) else dict.fromkeys(forwards, x)
    ones = {k: v[:1].copy() if isinstance(v, np.ndarray) else v[:1].clone() for k, v in xs.items()}
    batch = interleaved_seconds(
        {k: partial(f, xs[k]) for k, f in forwards.items()}, batch_repeats, 3
    )
    single = interleaved_seconds(
        {k: partial(f, ones[k]) for k, f in forwards.items()}, single_calls, 10
    )
    return {
        name: {
            "faces_per_s": len(xs[name]) / batch[name][0],
            "batch_ms": 1e3 * batch[name][0],
            "single_ms": 1e3 * single[name][0],
            "single_p90_ms": 1e3 * single[name][1],
        }
        for name in forwards
    }


def photo_files(photos: Path) -> list[Path]:
    """Every file under ``photos``; non-images are skipped when they fail to decode."""
    return sorted(p for p in photos.rglob("*") if p.is_file())


@torch.inference_mode()
def end_to_end(
    photos: list[Path], detector: MtcnnDetector, models: dict[str, tuple[Callable, dict]]
) -> dict[str, Any]:
    """Per-photo wall time: decode + detect once, then align + forward for each model."""
    work_side = WORK_SIDE_FACTOR * detector.detect_max_side
    shared_ms: list[float] = []
    own_ms: dict[str, list[float]] = {name: [] for name in models}
    n_faces = 0
    detector.detect([Image.new("RGB", (320, 240))])  # first-call overhead out of the timings
    for path in photos:
        t0 = time.perf_counter()
        try:
            image, _ = load_image(path, max_side=work_side)
        except ImageReadError:
            continue  # licence texts and tables beside the photos
        faces = detector.detect([image])[0].faces
        shared_ms.append(1e3 * (time.perf_counter() - t0))
        n_faces += len(faces)
        for name, (forward, config) in models.items():
            t1 = time.perf_counter()
            if faces:  # the same steps as agedistill.serving.predict.ages_for_detection
                crops = [np.asarray(model_face(image, f.landmarks, config)) for f in faces]
                forward(normalize(torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2)))
            own_ms[name].append(1e3 * (time.perf_counter() - t1))
    out: dict[str, Any] = {
        "n_images": len(shared_ms),
        "n_faces": n_faces,
        "decode_detect_ms_median": statistics.median(shared_ms),
        "decode_detect_ms_mean": statistics.fmean(shared_ms),
    }
    for name, own in own_ms.items():
        total = [s + o for s, o in zip(shared_ms, own, strict=True)]
        out[name] = {
            "e2e_ms_median": statistics.median(total),
            "e2e_ms_mean": statistics.fmean(total),
            "align_model_ms_mean": statistics.fmean(own),
        }
    return out


def onnx_vs_torch(
    model: torch.nn.Module, config: dict[str, Any], faces: torch.Tensor, threads: int, args
) -> dict[str, Any]:
    """The student exported to ONNX and run by ONNX Runtime, timed in turns with PyTorch."""
    import onnxruntime as ort

    from agedistill.serving.age_model import AgeModel
    from agedistill.serving.export import INPUT_NAME, OUTPUT_NAMES, export_onnx, torch_outputs

    age_model = AgeModel(model, config, Path(args.models) / "student.pt")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "student.onnx"
        export_onnx(age_model, path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    x = normalize(faces)
    result = speeds(
        {"pytorch": lambda b: torch_outputs(age_model, torch.from_numpy(b)),
         "onnxruntime": lambda b: session.run(OUTPUT_NAMES, {INPUT_NAME: b})},
        x.numpy(), args.batch_repeats, args.single_calls,
    )  # fmt: skip
    ref = torch_outputs(age_model, x)
    got = session.run(OUTPUT_NAMES, {INPUT_NAME: x.numpy()})
    result["max_abs_diff"] = {
        k: float(np.abs(g - ref[k]).max()) for k, g in zip(OUTPUT_NAMES, got, strict=True)
    }
    return result


def environment(threads: int) -> dict[str, Any]:
    """What the figures depend on, including how busy the shared machine was."""
    import onnxruntime as ort

    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": threads,
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "load_avg_1m_start": os.getloadavg()[0],
    }


def print_table(result: dict[str, Any]) -> None:
    """The README table: one row per model, then ONNX Runtime vs PyTorch for the student."""
    e2e = result["end_to_end"]
    print(f"\n{'model':<15}{'faces/s @64':>12}{'1 face ms':>11}{'e2e ms/img (median)':>21}")
    for name in MODELS:
        m = result["models"][name]
        print(
            f"{name:<15}{m['faces_per_s']:>12.0f}{m['single_ms']:>11.2f}"
            f"{e2e[name]['e2e_ms_median']:>21.0f}"
        )
    m = result["models"]["student (inference)"]
    print(f"{'student, inference copy':<15}  {m['faces_per_s']:>10.0f}{m['single_ms']:>11.2f}")
    print(f"\nstudent runtime  {'faces/s @64':>12}{'1 face ms':>11}")
    for runtime in ("pytorch", "onnxruntime"):
        m = result["student_runtimes"][runtime]
        print(f"{runtime:<17}{m['faces_per_s']:>12.0f}{m['single_ms']:>11.2f}")
    print(
        f"\n{e2e['n_images']} photos, {e2e['n_faces']} faces; decode + detection "
        f"{e2e['decode_detect_ms_median']:.0f} ms/img median"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=str(REPO / "models"), help="folder of the three .pt files")
    ap.add_argument("--photos", default=str(REPO.parent / "shared" / "data" / "photos"))
    ap.add_argument("--crops", default=str(REPO / "data" / "aligned" / "crops"))
    ap.add_argument("--out", default=str(REPO / "results" / "benchmarks" / "bench_speed.json"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--batch-repeats", type=int, default=30)
    ap.add_argument("--single-calls", type=int, default=200)
    args = ap.parse_args()
    if args.single_calls < 100:
        ap.error("--single-calls must be at least 100")
    torch.set_num_threads(args.threads)

    loaded = {name: load_model(Path(args.models) / f"{name}.pt") for name in MODELS}
    # each model reads faces at its own input size (the ranking teacher may read smaller ones)
    raw = {name: real_faces(Path(args.crops), args.batch, c["input_size"])
           for name, (_, c) in loaded.items()}  # fmt: skip
    faces = raw["student"]
    inputs = {name: normalize(x) for name, x in raw.items()}
    inputs["student (inference)"] = inputs["student"]
    forwards = {name: (age_forward(m, c), c) for name, (m, c) in loaded.items()}
    result: dict[str, Any] = {"environment": environment(args.threads), "batch": args.batch}
    models = {name: fwd for name, (fwd, _) in forwards.items()}
    # as `predict` and `evaluate` run it: BatchNorm folded, channels-last (serving/inference.py)
    models["student (inference)"] = age_forward(for_inference(loaded["student"][0]),
                                                loaded["student"][1])  # fmt: skip
    result["models"] = speeds(models, inputs, args.batch_repeats, args.single_calls)
    student, config = loaded["student"]
    result["student_runtimes"] = onnx_vs_torch(student, config, faces, args.threads, args)
    detector = MtcnnDetector(**DETECT_DEFAULTS)
    result["detection"] = dict(
        DETECT_DEFAULTS, work_side=WORK_SIDE_FACTOR * detector.detect_max_side
    )
    result["end_to_end"] = end_to_end(photo_files(Path(args.photos)), detector, forwards)
    result["environment"]["load_avg_1m_end"] = os.getloadavg()[0]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
