"""Distillation ablation grid: queue it, then tabulate it.

    python scripts/ablation.py queue [--profile profiles/full.yaml] [--seeds 0 1 2]
    dvc queue start -j 1            # runs the queued experiments (one at a time on 2 cores)
    python scripts/ablation.py table [--out metrics/ablation.json]

Variants: ``soft`` (kd only), ``hint`` (hints only), ``both``; each at every seed. The class teacher
(no distillation) is the baseline every row is compared with: its MAE comes from the same
experiments' ``evaluate`` (it is trained once, seeds vary only the student). The table gives the
test MAE mean and standard deviation over seeds, and the margin over the class teacher in units of
its standard error.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
from pathlib import Path

from agedistill.profiles import hydra_value, profile_overrides

VARIANTS = {
    "soft": {"distill.kd_weight": 1.0, "distill.hint_weight": 0.0},
    "hint": {"distill.kd_weight": 0.0, "distill.hint_weight": 1.0},
    "both": {"distill.kd_weight": 1.0, "distill.hint_weight": 1.0},
}


def queue(profile: str, seeds: list[int], prefix: str) -> None:
    """Queue one ``dvc exp run`` per (variant, seed) on top of ``profile``."""
    base = profile_overrides(profile) if profile else []
    for variant, sets in VARIANTS.items():
        for seed in seeds:
            extra = [a for k, v in {**sets, "distill.train.seed": seed}.items()
                     for a in ("-S", f"{k}={hydra_value(v)}")]  # fmt: skip
            name = f"{prefix}-{variant}-s{seed}"
            subprocess.run(["dvc", "exp", "run", "--queue", "-n", name, *base, *extra], check=True)


def _stats(values: list[float]) -> dict[str, float]:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.mean(values), "std": sd, "n": len(values),
            "sem": sd / math.sqrt(len(values))}  # fmt: skip


def table(prefix: str, out: str) -> dict:
    """Mean/std test MAE per variant from ``dvc exp show``; written to ``out`` and printed."""
    import dvc.api

    rows = dvc.api.exp_show()
    groups: dict[str, list[float]] = {}
    groups_adult: dict[str, list[float]] = {}
    teacher: list[float] = []
    for r in rows:
        name = r.get("Experiment") or ""
        if not name.startswith(f"{prefix}-") or r.get("student.mae") is None:
            continue
        variant = name[len(prefix) + 1 :].rsplit("-s", 1)[0]
        groups.setdefault(variant, []).append(float(r["student.mae"]))
        groups_adult.setdefault(variant, []).append(float(r["student.mae_21_60"]))
        teacher.append(float(r["class_teacher.mae"]))
    if not groups:
        raise SystemExit(f"no finished experiments named {prefix}-*: run the queue first")
    result = {"class_teacher": _stats(sorted(set(teacher)))}
    for v, maes in groups.items():
        s = _stats(maes)
        s["mae_21_60"] = _stats(groups_adult[v])["mean"]
        s["margin_in_sem"] = (result["class_teacher"]["mean"] - s["mean"]) / max(s["sem"], 1e-9)
        result[v] = s
    Path(out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'model':<15}{'MAE mean':>9}{'std':>7}{'n':>3}")
    for k, s in result.items():
        print(f"{k:<15}{s['mean']:>9.3f}{s['std']:>7.3f}{s['n']:>3}")
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("queue")
    q.add_argument("--profile", default="profiles/full.yaml")
    q.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    q.add_argument("--prefix", default="abl")
    t = sub.add_parser("table")
    t.add_argument("--prefix", default="abl")
    t.add_argument("--out", default="metrics/ablation.json")
    args = ap.parse_args()
    if args.cmd == "queue":
        queue(args.profile, args.seeds, args.prefix)
    else:
        table(args.prefix, args.out)


if __name__ == "__main__":
    main()
