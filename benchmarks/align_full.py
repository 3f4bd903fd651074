"""Run the ``align`` stage over a whole folder and record counts, wall time and peak memory.

Crops and tables go to ``--work`` (outside the repository); the figures to ``--out``. Memory is
that of the whole process tree (the stage's worker processes included): see ``memory.py``.

    python benchmarks/align_full.py --images ../shared/data/utkface/images \\
        --work /tmp/align_full --out results/benchmarks/align_full.json
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

from memory import PeakMemory

from agedistill.config import load_params
from agedistill.faces.align_dataset import SourceSpec, align_with_params, summarize
from agedistill.pipeline.outputs import write_json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=Path, default=Path("../shared/data/utkface/images"))
    ap.add_argument("--reader", default="utkface")
    ap.add_argument("--work", type=Path, default=Path("/tmp/align_full"))
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", type=Path, default=Path("results/benchmarks/align_full.json"))
    args = ap.parse_args()
    p = load_params(args.params).align
    start = time.perf_counter()
    with PeakMemory() as memory:
        sources = [SourceSpec(str(args.images), args.reader)]
        manifest, rejects = align_with_params(sources, args.work / "crops", p)
    wall = time.perf_counter() - start
    manifest.to_csv(args.work / "manifest.csv", index=False)
    rejects.to_csv(args.work / "rejects.csv", index=False)
    counts = summarize(manifest, rejects)
    figures = {
        "folder": str(args.images),
        **counts,
        "wall_s": round(wall, 1),
        "img_s": round(counts["processed"] / wall, 1),
        "workers": p.workers,
        # the stage's whole process tree (parent + worker processes), sampled every 0.25 s
        "peak_pss_mb": round(memory.peak_pss_mb),
        "peak_rss_sum_mb": round(memory.peak_rss_mb),
        "peak_rss_parent_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "cpus": os.cpu_count(),
        "load_avg_1min_at_end": round(os.getloadavg()[0], 2),
    }
    write_json(figures, args.out)
    print(figures)


if __name__ == "__main__":
    main()
