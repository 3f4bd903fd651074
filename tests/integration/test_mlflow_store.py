"""A real ``mlflow server`` over the store a pipeline run wrote, queried through its REST API."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.integration.pipeline_repo import env, run

pytestmark = pytest.mark.integration

TRAINING = {"rank_teacher", "class_teacher", "distill", "evaluate"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(base: str, path: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        base + path, data=data, headers={"Content-Type": "application/json"},
        method="POST" if body is not None else "GET",
    )  # fmt: skip
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def server(pipeline):
    dst, _ = pipeline
    # a --temp experiment runs in a copy under .dvc/tmp/exps; its runs must land in this store
    out = run(["dvc", "exp", "run", "--temp", "-n", "tempexp", "-S", "distill.temperature=3"], dst)
    assert "Running stage 'distill'" in out
    assert not list((dst / ".dvc" / "tmp").rglob("mlflow.db"))
    port = free_port()
    cmd = [
        str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1",
        "--port", str(port), "--backend-store-uri", f"sqlite:///{dst / 'mlflow.db'}",
        "--workers", "1",
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=dst, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(base + "/health", timeout=2):
                break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited: {proc.stdout.read().decode()[-2000:]}")
            time.sleep(1)
    else:
        proc.kill()
        pytest.fail("mlflow server did not answer within 120 s")
    yield base
    proc.terminate()
    proc.wait(timeout=30)


def runs(base: str) -> list[dict]:
    exp = call(base, "/api/2.0/mlflow/experiments/get-by-name?experiment_name=agedistill")
    found = call(
        base,
        "/api/2.0/mlflow/runs/search",
        {"experiment_ids": [exp["experiment"]["experiment_id"]], "max_results": 1000},
    )
    return found.get("runs", [])


def tags(r: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in r["data"].get("tags", [])}


def test_every_stage_logged_params_and_metrics(server):
    by_stage = {}
    for r in runs(server):
        t = tags(r)
        if t.get("dvc_exp") == "workspace":
            by_stage[t["agedistill.stage"]] = r
    assert set(by_stage) >= TRAINING
    distill = by_stage["distill"]
    params = {p["key"]: p["value"] for p in distill["data"]["params"]}
    assert float(params["temperature"]) == 2.0
    metrics = {m["key"] for m in distill["data"]["metrics"]}
    assert {"val_mae", "train_loss", "train_kd_loss", "train_hint_loss"} <= metrics
    ev = {m["key"]: m["value"] for m in by_stage["evaluate"]["data"]["metrics"]}
    assert 0 < ev["student_mae"] < 60 and 0 < ev["class_teacher_mae"] < 60
    history = call(
        server,
        f"/api/2.0/mlflow/metrics/get-history?run_id={distill['info']['run_id']}&metric_key=val_mae",
    )
    assert len(history["metrics"]) == 2  # one value per epoch


def test_runs_of_one_pipeline_share_a_tag(server):
    pipelines = {}
    for r in runs(server):
        t = tags(r)
        pipelines.setdefault(t["agedistill.pipeline"], set()).add(t["agedistill.stage"])
    workspace = [stages for name, stages in pipelines.items() if name.startswith("workspace-")]
    assert any(s >= TRAINING for s in workspace)


def test_temp_experiment_runs_land_in_the_main_store(server):
    temp = [r for r in runs(server) if tags(r).get("dvc_exp") == "tempexp"]
    assert {tags(r)["agedistill.stage"] for r in temp} == {"distill", "evaluate"}
    distill = next(r for r in temp if tags(r)["agedistill.stage"] == "distill")
    params = {p["key"]: p["value"] for p in distill["data"]["params"]}
    assert float(params["temperature"]) == 3.0
