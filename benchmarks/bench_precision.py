"""Training speed of float32 against bfloat16 autocast, NCHW against channels-last, side by side.

    python benchmarks/bench_precision.py [--out results/benchmarks/bench_precision.json] \\
        [--threads 2]

For each network the training stages run (the 64-px student, the 128-px five-stage student, the
ranking teacher on a batch of 3-face sequences) and each of the four settings of
``train.precision`` x ``train.channels_last``: the median wall time of one optimiser step
(forward, float32 loss, backward, AdamW) at batch 64, over ``--steps`` timed steps after two
warm-up steps, all in one process so the ratios compare like with like. It also records whether
this CPU runs bfloat16 natively (:func:`agedistill.training.precision.native_bf16`): without AMX or
AVX-512 BF16 the bf16 rows are emulated and slower, which is why ``params.yaml`` keeps fp32.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from agedistill.models.nets import ConvNet, RankTeacher
from agedistill.pipeline.machine import cpu_name
from agedistill.training.precision import autocast, native_bf16, to_memory_format

CPU = torch.device("cpu")
NETWORKS = {
    "student 64px (4 stages)": (lambda: ConvNet([32, 64, 128, 192], 101), (64, 3, 64, 64)),
    "student 128px (5 stages)": (lambda: ConvNet([16, 32, 64, 128, 192], 101), (64, 3, 128, 128)),
    "rank teacher 64px (K=3)": (  # params.yaml's
        lambda: RankTeacher([48, 96, 192, 256], k=3, stem_stride=2),
        (64, 3, 3, 64, 64),
    ),
}
SETTINGS = [("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)]


def step_seconds(
    make: Callable[[], nn.Module], shape: tuple[int, ...], precision: str, cl: bool, steps: int
) -> float:
    """Median seconds of one training step of a fresh network at this setting."""
    torch.manual_seed(0)
    net = make()
    to_memory_format([net], cl)
    opt = torch.optim.AdamW(net.parameters(), 1e-3)
    x = torch.randn(shape)
    times = []
    for _ in range(steps + 2):
        t = time.perf_counter()
        with autocast(precision, CPU):
            out = net(x)
        loss = nn.functional.cross_entropy(out.float(), torch.zeros(len(out), dtype=torch.long))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    return statistics.median(times[2:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="results/benchmarks/bench_precision.json")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = {}
    for name, (make, shape) in NETWORKS.items():
        base = None
        for precision, cl in SETTINGS:
            s = step_seconds(make, shape, precision, cl, args.steps)
            base = base or s
            key = f"{precision}{' channels_last' if cl else ''}"
            rows.setdefault(name, {})[key] = {"ms_per_step": round(1000 * s, 1),
                                              "speedup": round(base / s, 2)}  # fmt: skip
            print(f"{name:26s} {key:20s} {1000 * s:7.1f} ms/step  x{base / s:.2f}", flush=True)
    result = {
        "cpu": cpu_name(),
        "native_bf16": native_bf16(CPU),
        "threads": args.threads,
        "batch": 64,
        "torch": torch.__version__,
        "networks": rows,
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
