"""Training stages under stress, through DVC on a tiny copy of the pipeline: a real SIGKILL and
resume, and a real two-process gloo (torchrun) training."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml

from tests.integration.pipeline_repo import env, run

pytestmark = pytest.mark.integration


def _copy(pipeline, dst: Path, **params) -> Path:
    """A copy of the finished tiny pipeline (git, DVC cache, store) with ``params`` changed."""
    src, _ = pipeline
    shutil.copytree(src, dst, symlinks=True)
    p = yaml.safe_load((dst / "params.yaml").read_text())
    for key, value in params.items():
        *path, leaf = key.split("__")
        node = p
        for k in path:
            node = node[k]
        node[leaf] = value
    (dst / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    return dst


def _runs(repo: Path, stage: str):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    exp = client.get_experiment_by_name("agedistill")
    runs = client.search_runs([exp.experiment_id], f"tags.`agedistill.stage` = '{stage}'")
    return client, sorted(runs, key=lambda r: r.info.start_time)


def _metrics(repo: Path) -> dict:
    m = json.loads((repo / "metrics/class_teacher.json").read_text())
    m.pop("train_wall_s")
    return m


def _saved_epoch(last: Path) -> int:
    try:
        return int(torch.load(last, map_location="cpu", weights_only=True)["epoch"])
    except Exception:  # not written yet, or being replaced right now
        return 0


def test_sigkilled_stage_resumes_under_dvc_repro_and_matches_a_clean_run(pipeline, tmp_path):
    repo = _copy(pipeline, tmp_path / "repo", class_teacher__epochs=40)
    last = repo / "checkpoints/class_teacher/last.pt"
    proc = subprocess.Popen(["dvc", "repro", "class_teacher"], cwd=repo, env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 300
    while _saved_epoch(last) < 3:
        assert proc.poll() is None, "training ended before it could be killed"
        assert time.monotonic() < deadline, "no checkpoint after 300 s"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # dvc and the training process, no clean-up
    proc.wait()
    killed_at = _saved_epoch(last)
    assert 3 <= killed_at < 40

    out = run(["dvc", "repro", "class_teacher"], repo)
    resumed_from = int(re.search(r"resuming after epoch (\d+) of 40", out).group(1))
    assert resumed_from >= killed_at  # at most the epoch in flight is lost
    assert not last.exists()
    resumed = _metrics(repo)
    client, runs = _runs(repo, "class_teacher")
    history = client.get_metric_history(runs[-1].info.run_id, "val_mae")
    assert sorted(m.step for m in history) == list(range(1, 41))  # one MLflow run, no gaps

    run(["dvc", "repro", "-f", "class_teacher"], repo)  # the same params, uninterrupted
    assert _metrics(repo) == resumed  # bit-identical, not approximately equal


def test_two_process_gloo_training_writes_one_set_of_outputs(pipeline, tmp_path):
    repo = _copy(pipeline, tmp_path / "repo", distributed__nproc=2, distributed__backend="gloo",
                 class_teacher__epochs=4)  # fmt: skip
    _, before = _runs(repo, "class_teacher")
    out = run(["dvc", "repro", "class_teacher"], repo)
    assert "data-parallel over 2 processes (cpu)" in out
    assert out.count("class_teacher epoch 4:") == 1  # rank 0 alone reports
    _, after = _runs(repo, "class_teacher")
    assert len(after) == len(before) + 1
    new = after[-1]
    assert new.data.params["world_size"] == "2" and new.info.status == "FINISHED"
    client, _ = _runs(repo, "class_teacher")
    losses = [m.value for m in sorted(client.get_metric_history(new.info.run_id, "train_loss"),
                                      key=lambda m: m.step)]  # fmt: skip
    assert len(losses) == 4 and losses[-1] < losses[0]
    val = [m.value for m in sorted(client.get_metric_history(new.info.run_id, "val_mae"),
                                   key=lambda m: m.step)]  # fmt: skip
    metrics = json.loads((repo / "metrics/class_teacher.json").read_text())
    assert metrics["val_mae"] == pytest.approx(val[-1])  # rank 0 logs what the stage writes
    assert metrics["best_val_mae"] == pytest.approx(min(val))
    assert val[metrics["best_epoch"] - 1] == pytest.approx(min(val))
    from agedistill.models.files import load_model

    _, config = load_model(repo / "models/class_teacher.pt")
    assert config["arch"] == "pretrained" and config["backbone"] == "mobilenet_v2"  # the default
    assert not (repo / "checkpoints/class_teacher").exists()
