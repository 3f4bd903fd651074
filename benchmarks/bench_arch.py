"""Cost of candidate student architectures, side by side in one run, next to their accuracy.

    python benchmarks/bench_arch.py [--out results/benchmarks/bench_arch.json]

For each candidate: parameters, multiply-accumulates per face (torch's FLOP counter / 2), file
size of its state dict, and CPU throughput at batch 64 (median of repeated timed forwards) — all
measured in the same process, so the ratios against the reference CNN are comparable. Candidates
that ``research/recipe_search.py`` trained also get that run's validation MAE (``--recipes``):
the same split, seed and 10-epoch schedule for every one.
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from agedistill.evaluation.metrics import cpu_latency
from agedistill.models.nets import ConvNet, count_parameters
from agedistill.serving.inference import for_inference

FIVE = [16, 32, 64, 128, 192]  # a 16-channel stage in front of the reference's four
CANDIDATES = {
    # the brief's reference: four conv-conv-pool blocks 32/64/128/192 at 64 px, stride 1
    "reference (s1, 64px)": dict(widths=[32, 64, 128, 192], stem_stride=1, size=64),
    "student (s2, 64px)": dict(widths=[32, 64, 128, 192], stem_stride=2, size=64, recipe="m0 ce"),
    "5 stages, s2, 96px": dict(widths=FIVE, stem_stride=2, size=96, recipe="m0 ce in96 5stage"),
    "5 stages, s2, 112px": dict(widths=FIVE, stem_stride=2, size=112, recipe="m0 ce in112 5stage"),
    "5 stages, s2, 128px": dict(widths=FIVE, stem_stride=2, size=128, recipe="m0 ce in128 5stage"),
    "5 stages, s1, 64px": dict(widths=FIVE, stem_stride=1, size=64, recipe="m0 ce s1 5stage"),
    "s2, 80px": dict(widths=[32, 64, 128, 192], stem_stride=2, size=80, recipe="m0 ce in80"),
    "wide s2 (48/96/160/256)": dict(widths=[48, 96, 160, 256], stem_stride=2, size=64),
    "s1, 48px": dict(widths=[32, 64, 128, 192], stem_stride=1, size=48),
    "depthwise s1 (64px)": dict(widths=[32, 64, 128, 192], stem_stride=1, size=64, depthwise=True),
    "depthwise wide s1": dict(widths=[48, 96, 192, 320], stem_stride=1, size=64, depthwise=True),
}


def macs(model: torch.nn.Module, size: int) -> int:
    """Multiply-accumulates of one forward on one face."""
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(torch.randn(1, 3, size, size))
    return counter.get_total_flops() // 2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="results/benchmarks/bench_arch.json")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--recipes", default="results/research/recipe_search.json",
                    help="validation MAEs")  # fmt: skip
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    recipes = json.loads(Path(args.recipes).read_text()) if Path(args.recipes).exists() else {}
    rows = {}
    for name, c in CANDIDATES.items():
        m = ConvNet(c["widths"], 101, c["stem_stride"], c.get("depthwise", False)).eval()
        buf = io.BytesIO()
        torch.save(m.state_dict(), buf)
        rows[name] = {
            **c,
            "params": count_parameters(m),
            "mmacs": macs(m, c["size"]) / 1e6,
            "file_mb": len(buf.getvalue()) / 1e6,
            "faces_per_s": cpu_latency(m, c["size"], batch=64, repeats=30)["faces_per_s"],
            # BatchNorm folded, channels-last: how predict and evaluate run it
            "faces_per_s_inference": cpu_latency(for_inference(m), c["size"], batch=64, repeats=30)[
                "faces_per_s"
            ],
            "val_mae_10_epochs": recipes.get(c.get("recipe"), {}).get("val_mae"),
        }
    ref = rows["reference (s1, 64px)"]
    print(f"{'candidate':<30}{'params':>10}{'MMACs':>8}{'MB':>6}{'faces/s':>9}{'x ref':>7}"
          f"{'inf f/s':>9}{'val MAE':>9}")  # fmt: skip
    for name, r in rows.items():
        r["speedup_vs_reference"] = r["faces_per_s"] / ref["faces_per_s"]
        mae = r["val_mae_10_epochs"]
        print(
            f"{name:<30}{r['params']:>10,}{r['mmacs']:>8.1f}{r['file_mb']:>6.2f}"
            f"{r['faces_per_s']:>9.0f}{r['speedup_vs_reference']:>7.2f}"
            f"{r['faces_per_s_inference']:>9.0f}"
            f"{'' if mae is None else f'{mae:.2f}':>9}"
        )
    Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
