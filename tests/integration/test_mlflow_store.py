"""A real ``mlflow server`` over the store a pipeline run wrote, queried through its REST API."""

from __future__ import annotations

import json

import pytest

from tests.integration.mlflow_server import call, is_parent, metrics, mlflow_server, params, tags
from tests.integration.mlflow_server import runs as all_runs
from tests.integration.pipeline_repo import TINY, run

pytestmark = pytest.mark.integration

TRAINING = {"rank_teacher", "class_teacher", "twin", "distill", "evaluate"}


@pytest.fixture(scope="module")
def server(pipeline):
    dst, _ = pipeline
    # a --temp experiment runs in a copy under .dvc/tmp/exps; its runs must land in this store
    out = run(["dvc", "exp", "run", "--temp", "-n", "tempexp", "-S", "distill.temperature=3"], dst)
    assert "Running stage 'distill'" in out
    assert not list((dst / ".dvc" / "tmp").rglob("mlflow.db"))
    with mlflow_server(dst) as base:
        yield base


def runs(base: str) -> list[dict]:
    """The stage runs (not the parents)."""
    return [r for r in all_runs(base) if not is_parent(r)]


def test_every_stage_logged_params_and_metrics(server, pipeline):
    by_stage, evaluated = {}, []
    for r in runs(server):
        t = tags(r)
        if t.get("dvc_exp") == "workspace":
            by_stage[t["agedistill.stage"]] = r
            if t["agedistill.stage"] == "evaluate":
                evaluated.append(metrics(r))
    assert set(by_stage) >= TRAINING
    distill = by_stage["distill"]
    assert float(params(distill)["temperature"]) == 2.0
    assert {"val_mae", "train_loss", "train_kd_loss", "train_hint_loss"} <= set(metrics(distill))
    # the baseline's evaluate.json (committed by the fixture) is what its evaluate run logged
    written = json.loads(run(["git", "show", "HEAD:metrics/evaluate.json"], pipeline[0]))
    assert any(
        ev["student_mae"] == pytest.approx(written["student"]["mae"], abs=1e-5)
        and ev["class_teacher_mae"] == pytest.approx(written["class_teacher"]["mae"], abs=1e-5)
        for ev in evaluated
    ), (evaluated, written["student"]["mae"])
    history = call(
        server,
        f"/api/2.0/mlflow/metrics/get-history?run_id={distill['info']['run_id']}&metric_key=val_mae",
    )
    assert len(history["metrics"]) == TINY["distill"]["train"]["epochs"]  # one value per epoch


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
    assert float(params(distill)["temperature"]) == 3.0
    # ... under one parent named after the experiment, with the whole pipeline's params
    parent_ids = {tags(r)["mlflow.parentRunId"] for r in temp}
    (parent,) = [r for r in all_runs(server) if r["info"]["run_id"] in parent_ids]
    assert is_parent(parent) and parent["info"]["run_name"] == "tempexp"
    assert float(params(parent)["distill.temperature"]) == 3.0
    evaluate = next(r for r in temp if tags(r)["agedistill.stage"] == "evaluate")
    # the parent holds the headline: its evaluate run's figures, rounded
    headline, logged = metrics(parent)["student_mae"], metrics(evaluate)["student_mae"]
    assert headline == pytest.approx(logged, abs=1e-4)
