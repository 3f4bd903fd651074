"""Parallel writers to one fresh SQLite MLflow store (as ``dvc queue start -j 4`` makes them)."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pytest

from agedistill.pipeline.tracking import ROLE_TAG

pytestmark = pytest.mark.integration

WRITERS = 4


def _write_run(args: tuple[str, int]) -> str:
    store, i = args
    import os

    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{store}?timeout=120"
    from agedistill.pipeline.tracking import mlflow_run

    with mlflow_run("distill", {"temperature": i}, {"distill": {"temperature": i}}) as run:
        for epoch in range(1, 6):
            run.log_metrics({"val_mae": 10.0 - epoch + i}, epoch)
        return run.run_id


def test_parallel_writers_to_a_fresh_store_lose_no_run(tmp_path: Path):
    store = tmp_path / "mlflow.db"
    with mp.get_context("spawn").Pool(WRITERS) as pool:  # all start on an empty store at once
        ids = pool.map(_write_run, [(str(store), i) for i in range(WRITERS)])
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{store}")
    exp = client.get_experiment_by_name("agedistill")
    every = client.search_runs([exp.experiment_id])
    parents = [r for r in every if r.data.tags.get(ROLE_TAG) == "pipeline"]
    runs = [r for r in every if r.data.tags.get(ROLE_TAG) != "pipeline"]
    assert sorted(r.info.run_id for r in runs) == sorted(ids)
    for r in runs:
        assert r.info.status == "FINISHED"
        assert len(client.get_metric_history(r.info.run_id, "val_mae")) == 5
    # each writer's params are another pipeline execution: one parent each, none lost or doubled
    assert len(parents) == WRITERS
    assert sorted(r.data.tags["mlflow.parentRunId"] for r in runs) == sorted(
        p.info.run_id for p in parents
    )
    assert all(p.info.status == "FINISHED" for p in parents)
