"""The default pipeline on the bundled sample over seeds: student against its twin, wall time.

Copies the repository (tracked and unignored files, no outputs) into a fresh git+DVC folder,
times a from-scratch ``dvc repro`` there (seed 0: the pipeline a new user runs first), then, for
each further seed, ``dvc exp run -S <stage>.seed=S`` for every training stage (the ranking
teacher, the class teacher and the student get the same seed; the split, hence the test part,
stays fixed). Each run's test MAEs come from its ``metrics/evaluate.json``.

    flock /tmp/agedistill-bench.lock python -m research.sample_seeds \\
        --out results/research/sample_seeds.json

``--set KEY=VALUE`` (repeatable) changes params for every seed, to try a setting before making
it the default; ``--cache DIR`` shares a DVC cache between tries (then ``align`` and ``split`` are
restored, not rerun, and the first run's wall time no longer counts them).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SEED_KEYS = ("rank_teacher.train.seed", "class_teacher.seed", "distill.train.seed")
MODELS = ("student", "twin", "class_teacher", "rank_teacher")
TRAINING_STAGES = ("rank_teacher", "class_teacher", "twin", "distill")


def _env() -> dict[str, str]:
    e = dict(os.environ)
    e["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{e.get('PATH', '')}"
    for k in ("MLFLOW_TRACKING_URI", "DVC_ROOT"):
        e.pop(k, None)
    e.update({"DVC_NO_ANALYTICS": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1"})
    return e


def _run(cmd: list[str], cwd: Path) -> float:
    """Run ``cmd`` in ``cwd`` (output to this terminal); its wall time in seconds."""
    print("+", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=_env(), check=True)
    return time.perf_counter() - t0


def copy_repo(src: Path, dst: Path) -> Path:
    """A new git repo ``dst`` holding ``src``'s tracked and unignored files, without outputs."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=src, capture_output=True,
        text=True, check=True,
    ).stdout.splitlines()  # fmt: skip
    for rel in listed:
        if not (src / rel).is_file() or rel.startswith(("metrics/", "dvc.lock", "results/")):
            continue
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / rel, dst / rel)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.email=b@example.com", "-c", "user.name=bench", "commit",
                 "-qm", "copy"]):  # fmt: skip
        subprocess.run(cmd, cwd=dst, check=True, env=_env())
    return dst


def scores(repo: Path) -> dict[str, Any]:
    """Test MAEs of the models, and each training stage's training wall time."""
    ev = json.loads((repo / "metrics/evaluate.json").read_text())
    out: dict[str, Any] = {f"{m}_mae": round(ev[m]["mae"], 4) for m in MODELS if m in ev}
    for stage in TRAINING_STAGES:
        if not (repo / f"metrics/{stage}.json").is_file():
            continue
        out[f"{stage}_train_s"] = round(json.loads((repo / f"metrics/{stage}.json").read_text())
                                        ["train_wall_s"], 1)  # fmt: skip
    return out


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sample std over seeds per model, and the student's gain over its twin.

    The gain is paired by seed (the twin trains on the seed's split and batches); ``gain_se`` is
    its standard error over seeds and ``gain_in_se`` the mean gain in those units.
    """
    out: dict[str, Any] = {}
    for m in MODELS:
        values = [r[f"{m}_mae"] for r in runs if f"{m}_mae" in r]
        if not values:
            continue
        std = round(statistics.stdev(values), 4) if len(values) > 1 else None
        out[m] = {"mean": round(statistics.mean(values), 4), "std": std}
    baseline = "twin" if all("twin_mae" in r for r in runs) else "class_teacher"
    gains = [r[f"{baseline}_mae"] - r["student_mae"] for r in runs]
    out["gain_over"] = baseline
    out["gain_per_seed"] = [round(g, 4) for g in gains]
    out["student_wins"] = sum(g > 0 for g in gains)
    if len(gains) > 1:
        se = statistics.stdev(gains) / len(gains) ** 0.5
        out["gain_mean"] = round(statistics.mean(gains), 4)
        out["gain_se"] = round(se, 4)
        out["gain_in_se"] = round(statistics.mean(gains) / se, 2) if se > 0 else None
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--cache", type=Path, help="a DVC cache folder shared between tries")
    ap.add_argument("--keep", type=Path, help="build the copy here and keep it (default: temp)")
    ap.add_argument("--out", type=Path, default=Path("results/research/sample_seeds.json"))
    ap.add_argument("--save-first", type=Path, metavar="DIR",
                    help="copy the first run's dvc.lock and metrics/ here")  # fmt: skip
    args = ap.parse_args()
    src = Path(__file__).resolve().parents[1]
    work = args.keep or Path(tempfile.mkdtemp(prefix="sample_seeds-"))
    work.mkdir(parents=True, exist_ok=True)
    repo = copy_repo(src, work)
    if args.cache:
        _run(["dvc", "cache", "dir", str(args.cache.resolve())], repo)
    sets = [x for kv in args.set for x in ("-S", kv)]
    runs = []
    for i, seed in enumerate(args.seeds):
        seed_sets = [x for k in SEED_KEYS for x in ("-S", f"{k}={seed}")]
        if i == 0 and seed == 0 and not sets:
            wall = _run(["dvc", "repro"], repo)
        else:
            wall = _run(["dvc", "exp", "run", *sets, *seed_sets], repo)
        runs.append({"seed": seed, "wall_s": round(wall, 1), "first": i == 0, **scores(repo)})
        if i == 0 and args.save_first:
            args.save_first.mkdir(parents=True, exist_ok=True)
            shutil.copy2(repo / "dvc.lock", args.save_first / "dvc.lock")
            shutil.copytree(repo / "metrics", args.save_first / "metrics", dirs_exist_ok=True)
        print(json.dumps(runs[-1]), flush=True)
    result = {
        "what": "default dvc repro on the bundled sample, per seed (all training stages seeded)",
        "command": "python -m research.sample_seeds " + " ".join(sys.argv[1:]),
        "set": args.set,
        "shared_cache": bool(args.cache),
        "cpus": os.cpu_count(),
        "load_avg_1min_at_end": round(os.getloadavg()[0], 2),
        "runs": runs,
        "summary": summarize(runs),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["summary"], indent=2))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
