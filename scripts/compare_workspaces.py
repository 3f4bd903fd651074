"""Compare two pipeline workspaces after ``dvc repro --force``: metrics, plots, split, models.

    python scripts/compare_workspaces.py BEFORE AFTER     # exit status 0: all the same

Each stage's metrics JSON is compared byte for byte; one that differs is compared again without
its wall-clock fields (``TIMING``: training time, throughput, latency), which are listed. Plot
tables, split tables, the manifest and every crop must be byte-identical, and each model file
must hold the same config and the same tensors.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import torch

TIMING = {"train_wall_s", "faces_per_s", "faces_per_s_eager", "latency_batch_ms",
          "latency_single_ms"}  # fmt: skip
STAGES = ["align", "split", "rank_teacher", "class_teacher", "distill", "evaluate"]
TABLES = ("metrics/plots/*.csv", "data/split/*.csv", "data/aligned/*.csv")
MODELS = ("rank_teacher", "class_teacher", "student")


def without_timing(d: Any) -> Any:
    """``d`` with every wall-clock field removed, at any depth."""
    if isinstance(d, dict):
        return {k: without_timing(v) for k, v in d.items() if k not in TIMING}
    return d


def timing_keys(d: dict[str, Any], prefix: str = "") -> list[str]:
    """The dotted keys of the wall-clock fields in ``d``."""
    out = []
    for k, v in d.items():
        if isinstance(v, dict):
            out += timing_keys(v, f"{prefix}{k}.")
        elif k in TIMING:
            out.append(f"{prefix}{k}")
    return out


def tree_digest(root: Path) -> str:
    """One digest of every file's relative name and bytes under ``root``."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def same_model(a: Path, b: Path) -> bool:
    """Whether two model files hold the same config and bit-identical tensors."""
    sa, sb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    wa, wb = sa["state_dict"], sb["state_dict"]
    return (
        sa["config"] == sb["config"]
        and wa.keys() == wb.keys()
        and all(torch.equal(wa[k], wb[k]) for k in wa)
    )


def compare(a: Path, b: Path) -> bool:
    """Print one line per output; True when everything matches."""
    ok = True
    for name in STAGES:
        fa, fb = a / "metrics" / f"{name}.json", b / "metrics" / f"{name}.json"
        if fa.read_bytes() == fb.read_bytes():
            print(f"metrics/{name}.json: byte-identical")
            continue
        ja, jb = json.loads(fa.read_text()), json.loads(fb.read_text())
        same = without_timing(ja) == without_timing(jb)
        ok &= same
        verdict = "identical except wall-clock fields" if same else "DIFFERENT"
        print(f"metrics/{name}.json: {verdict} {timing_keys(ja)}")
    for rel in sorted({p.relative_to(a) for pattern in TABLES for p in a.glob(pattern)}):
        same = (a / rel).read_bytes() == (b / rel).read_bytes()
        ok &= same
        print(f"{rel}: {'byte-identical' if same else 'DIFFERENT'}")
    crops = "data/aligned/crops"
    same = tree_digest(a / crops) == tree_digest(b / crops)
    ok &= same
    n = sum(1 for p in (a / crops).rglob("*") if p.is_file())
    print(f"{crops} ({n} files): {'byte-identical' if same else 'DIFFERENT'}")
    for m in MODELS:
        pa, pb = a / "models" / f"{m}.pt", b / "models" / f"{m}.pt"
        ja, jb = pa.with_suffix(".json"), pb.with_suffix(".json")
        tensors, same_bytes = same_model(pa, pb), pa.read_bytes() == pb.read_bytes()
        config = ja.read_bytes() == jb.read_bytes()
        ok &= tensors and config
        verdict = (
            "byte-identical"
            if same_bytes
            else ("same config and tensors" if tensors else "DIFFERENT")
        )
        print(f"models/{m}.pt: {verdict}; models/{m}.json: "
              f"{'byte-identical' if config else 'DIFFERENT'}")  # fmt: skip
    print("ALL SAME" if ok else "SOMETHING DIFFERS")
    return ok


if __name__ == "__main__":
    sys.exit(0 if compare(Path(sys.argv[1]), Path(sys.argv[2])) else 1)
