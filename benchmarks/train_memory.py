"""Peak memory of each training stage over a full-scale workspace (e.g. the whole UTKFace folder).

Runs ``rank_teacher``, ``class_teacher`` and ``distill`` as DVC would (``python -m
agedistill.training.launch stages.X``), one epoch each (memory does not grow with epochs: the data
tables, the models and one batch's activations are all allocated in the first), in a scratch copy of
``--workspace`` whose outputs go elsewhere, and samples the whole process tree (torchrun ranks
included) with ``memory.PeakMemory``.

    python benchmarks/train_memory.py --workspace /path/to/full-run \\
        --out results/benchmarks/train_memory.json
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from memory import PeakMemory

from agedistill.pipeline.outputs import write_json

STAGES = {
    "rank_teacher": ["--model", "models/rank_teacher.pt", "--metrics", "m/rank_teacher.json"],
    "class_teacher": ["--model", "models/class_teacher.pt", "--metrics", "m/class_teacher.json"],
    "distill": [
        "--class-teacher",
        "teachers/class_teacher.pt",
        "--rank-teacher",
        "teachers/rank_teacher.pt",
        "--model",
        "models/student.pt",
        "--metrics",
        "m/distill.json",
    ],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", type=Path, required=True, help="a finished full-scale pipeline")
    ap.add_argument("--nproc", type=int, default=1, help="data-parallel processes per stage")
    ap.add_argument("--stages", nargs="+", default=list(STAGES), choices=list(STAGES))
    ap.add_argument("--out", type=Path, default=Path("results/benchmarks/train_memory.json"))
    args = ap.parse_args()
    ws = args.workspace.resolve()
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["rank_teacher"]["train"]["epochs"] = 1
    params["rank_teacher"]["sequences_per_epoch"] = 1000
    params["class_teacher"]["epochs"] = 1
    params["distill"]["train"]["epochs"] = 1
    params["distributed"] = {"nproc": args.nproc, "backend": "gloo"}
    figures: dict = {"workspace": str(ws), "train_images": None, "stages": {}}
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp)
        (run / "params.yaml").write_text(yaml.safe_dump(params))
        (run / "data").symlink_to(ws / "data")
        (run / "teachers").symlink_to(ws / "models")
        repo = Path(__file__).resolve().parents[1]  # where stages/ is
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{run / 'mlflow.db'}",
               "PYTHONPATH": str(repo)}  # fmt: skip
        for stage in args.stages:
            extra = STAGES[stage]
            cmd = [sys.executable, "-m", "agedistill.training.launch", f"stages.{stage}", "--crops",
                   "data/aligned/crops", "--split", "data/split", *extra]  # fmt: skip
            start = time.perf_counter()
            proc = subprocess.Popen(cmd, cwd=run, env=env, stdout=subprocess.DEVNULL)
            with PeakMemory(proc.pid) as memory:
                rc = proc.wait()
            if rc:
                raise SystemExit(f"{stage} failed ({rc})")
            figures["stages"][stage] = {
                "peak_pss_mb": round(memory.peak_pss_mb),
                "peak_rss_sum_mb": round(memory.peak_rss_mb),
                "wall_s_one_epoch": round(time.perf_counter() - start, 1),
            }
            print(stage, figures["stages"][stage], flush=True)
    figures["train_images"] = len((ws / "data/split/train.csv").read_text().splitlines()) - 1
    figures["nproc"] = args.nproc
    write_json(figures, args.out)


if __name__ == "__main__":
    main()
