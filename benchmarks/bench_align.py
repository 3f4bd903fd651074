"""Benchmark the ``align`` stage against a naive one-image-at-a-time MTCNN loop.

Both run in one process on the same ``--n`` chips (a seeded sample of ``--images``), back to
back, ``--repeats`` times; the headline ratio is the median of the per-repeat ratios. The naive
loop decodes each file with PIL, adds the same black border as the stage (``align.detect_pad``:
without it MTCNN's landmarks on tight chips are wrong, so it would not be doing the same job) and
calls ``MTCNN(keep_all=True).detect(img, landmarks=True)`` with facenet-pytorch's defaults (one
image per call). The stage runs ``align_dataset`` with the
``align`` params of ``params.yaml`` (``workers`` processes, start-up included) and does strictly
more work per image (content hash, EXIF-aware decoding, alignment, PNG crop). The naive loop is
also timed with one torch thread (``naive_1thread_*``). Peak RSS is this process's, over
everything it ran.

    python benchmarks/bench_align.py --images ../shared/data/utkface/images \\
        --out results/benchmarks/bench_align.json
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image, ImageOps

from agedistill.config import AlignParams, load_params
from agedistill.faces.align_dataset import SourceSpec, align_with_params
from agedistill.pipeline.machine import cpu_name
from agedistill.pipeline.outputs import write_json


def sample_files(folder: Path, n: int, seed: int) -> list[Path]:
    """``n`` files of ``folder`` drawn with ``seed`` (sorted first, so the draw is stable)."""
    files = sorted(p for p in folder.iterdir() if p.is_file())
    return sorted(random.Random(seed).sample(files, min(n, len(files))))


def naive_loop(files: list[Path], pad: float, threads: int = 0) -> float:
    """Images per second of a plain facenet-pytorch loop, one image per ``detect`` call.

    ``threads=0`` keeps torch's default (the baseline); ``threads=1`` is shown beside it, so the
    share of the stage's speed-up that comes from its thread setting alone is visible.
    """
    from facenet_pytorch import MTCNN

    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    mtcnn = MTCNN(keep_all=True)
    start = time.perf_counter()
    for f in files:
        with Image.open(f) as im:
            rgb = im.convert("RGB")
        border = round(pad * max(rgb.size))
        mtcnn.detect(ImageOps.expand(rgb, border, fill=0) if border else rgb, landmarks=True)
    seconds = time.perf_counter() - start
    torch.set_num_threads(before)
    return len(files) / seconds


def stage(folder: Path, n: int, p: AlignParams) -> tuple[float, int]:
    """Images per second of :func:`align_dataset` on ``folder``; also the number aligned."""
    with tempfile.TemporaryDirectory() as crops:
        start = time.perf_counter()
        sources = [SourceSpec(str(folder), "utkface")]
        manifest, rejects = align_with_params(sources, crops, p, progress=False)
        seconds = time.perf_counter() - start
    assert len(manifest) + len(rejects) == n, "every file must be accounted for"
    return n / seconds, len(manifest)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=Path, default=Path("../shared/data/utkface/images"))
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", type=Path, default=Path("results/benchmarks/bench_align.json"))
    args = ap.parse_args()
    p = load_params(args.params).align
    files = sample_files(args.images, args.n, args.seed)
    naive, staged, naive_1t, aligned = [], [], [], 0
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for f in files:  # the same chips for both, linked into a folder the stage can read
            (folder / f.name).symlink_to(f.resolve())
        for r in range(args.repeats):
            if r % 2:  # alternate which goes first, so neither always gets the quieter minute
                rate, aligned = stage(folder, len(files), p)
                naive.append(naive_loop(files, p.detect_pad))
            else:
                naive.append(naive_loop(files, p.detect_pad))
                rate, aligned = stage(folder, len(files), p)
            staged.append(rate)
            naive_1t.append(naive_loop(files, p.detect_pad, threads=1))
            print(
                f"run {r + 1}: naive {naive[-1]:.1f} img/s, stage {staged[-1]:.1f} img/s, "
                f"naive with 1 torch thread {naive_1t[-1]:.1f} img/s"
            )
    ratios = [s / n for s, n in zip(staged, naive, strict=True)]
    figures = {
        "images": len(files),
        "repeats": args.repeats,
        # the machine is shared: each repeat runs both back to back, so the ratio within a repeat
        # compares like with like; its median is the headline, best-of-repeats is shown beside it
        "ratio": round(statistics.median(ratios), 2),
        "ratio_runs": [round(r, 2) for r in ratios],
        "naive_img_s": round(statistics.median(naive), 1),
        "stage_img_s": round(statistics.median(staged), 1),
        "naive_best_img_s": round(max(naive), 1),
        "stage_best_img_s": round(max(staged), 1),
        "ratio_of_bests": round(max(staged) / max(naive), 2),
        "naive_runs": [round(x, 1) for x in naive],
        "naive_1thread_runs": [round(x, 1) for x in naive_1t],
        "naive_1thread_img_s": round(statistics.median(naive_1t), 1),
        "stage_runs": [round(x, 1) for x in staged],
        "stage_aligned": aligned,
        "peak_rss_mb": round(peak_rss_mb()),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_avg_1min_at_end": round(os.getloadavg()[0], 2),
        "machine": cpu_name(),
        "stage_params": {
            k: getattr(p, k)
            for k in ("min_face_size", "detect_pad", "batch_size", "workers", "threads")
        },
    }
    write_json(figures, args.out)
    print(figures)


if __name__ == "__main__":
    main()
