"""Build a throw-away git+DVC copy of the repository with tiny params, for pipeline tests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

LIMIT = 250  # sample chips the tiny pipeline aligns
TINY = {
    # enough faces and steps that the student learns: it must beat the train part's mean age
    "align": {"limit": LIMIT, "batch_size": 16, "size": 64},  # pretrained teachers at 64 px
    "split": {"val_fraction": 0.15, "test_fraction": 0.25},
    "rank_teacher": {
        "model": {"input_size": 64},
        "train": {"epochs": 1, "batch_size": 16},
        "sequences_per_epoch": 48,
        "val_sequences": 32,
        "feature_dim": 16,
        "hint_stage": 1,
    },
    "student": {"widths": [8, 16, 24]},
    "class_teacher": {"epochs": 6, "batch_size": 16, "input_size": 64},
    "distill": {"train": {"epochs": 25, "batch_size": 16}, "hint_stage": 1},
    "evaluate": {"latency_repeats": 2},
}


def _merge(base: dict, over: dict) -> dict:
    for k, v in over.items():
        if isinstance(v, dict):
            _merge(base.setdefault(k, {}), v)
        else:
            base[k] = v
    return base


def env() -> dict[str, str]:
    """This interpreter's bin first on PATH (stages call ``python``), telemetry off."""
    e = dict(os.environ)
    e["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{e.get('PATH', '')}"
    e.pop("MLFLOW_TRACKING_URI", None)
    e.pop("DVC_ROOT", None)
    e.update({"DVC_NO_ANALYTICS": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1"})
    return e


def run(cmd: list[str], cwd: Path, timeout: int = 900) -> str:
    """Run ``cmd`` in ``cwd``; fail with its output if it fails; return stdout+stderr."""
    out = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)
    text = out.stdout + out.stderr
    if out.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({out.returncode}):\n{text[-4000:]}")
    return text


def make_repo(src: Path, dst: Path, overrides: dict | None = None, tiny: bool = True) -> Path:
    """Copy the tracked and untracked-unignored files of ``src`` into a new git repo ``dst``.

    Its params are ``src``'s with :data:`TINY` (unless ``tiny`` is false: the bundled sample's
    own) and then ``overrides`` laid on top.
    """
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=src, capture_output=True, text=True,
        check=True,
    ).stdout.split("\n")  # fmt: skip
    for rel in filter(None, files):
        if not (src / rel).is_file() or rel.startswith(("metrics/", "results/", "dvc.lock")):
            continue
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / rel, dst / rel)
    params = yaml.safe_load((dst / "params.yaml").read_text())
    _merge(params, _merge(TINY.copy() if tiny else {}, overrides or {}))
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for cmd in (
        ["git", "init", "-q"],
        ["git", "config", "user.email", "test@example.com"],
        ["git", "config", "user.name", "test"],
        ["git", "add", "-A"],
        ["git", "commit", "-qm", "tiny"],
    ):
        run(cmd, dst)
    return dst


# MLflow's model registration (evaluate.register_model) costs more than the tiny training itself
FAST_EVALUATE = {"evaluate": {"register_model": False}}


def two_experiments(src: Path, dst: Path, tiny: bool = True) -> dict[str, dict]:
    """As a new user would: ``dvc repro``, commit, ``dvc exp run -S distill.temperature=4``.

    Returns each run's ``metrics/evaluate.json`` ({"baseline": ..., "temp4": ...}); ``dst`` ends
    with the experiment's outputs in its workspace. ``tiny`` false runs the bundled sample's own
    params (minutes, not seconds).
    """
    make_repo(src, dst, FAST_EVALUATE, tiny)
    run(["dvc", "repro"], dst)
    run(["git", "add", "-A"], dst)
    run(["git", "commit", "-qm", "baseline results"], dst)
    baseline = json.loads((dst / "metrics/evaluate.json").read_text())
    run(["dvc", "exp", "run", "-n", "temp4", "-S", "distill.temperature=4"], dst)
    return {"baseline": baseline, "temp4": json.loads((dst / "metrics/evaluate.json").read_text())}
