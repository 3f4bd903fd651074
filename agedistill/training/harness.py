"""The frame every training stage runs in: data-parallel context, resumable state, MLflow run."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from agedistill.config import raw_params
from agedistill.pipeline.outputs import write_json
from agedistill.pipeline.tracking import NullTracker, Tracker, mlflow_run
from agedistill.training import distributed
from agedistill.training.checkpoints import TrainState, fingerprint
from agedistill.training.loop import TrainingSetup


@contextmanager
def training_stage(
    stage: str,
    stage_params: dict[str, Any],
    out: str | Path,
    checkpoints: str | Path | None,
    data: list[Any],
    backend: str = "auto",
) -> Iterator[tuple[TrainingSetup, Tracker | NullTracker]]:
    """Set up one training stage; yield its :class:`TrainingSetup` and its MLflow tracker.

    ``data`` (tensors, digests) and ``stage_params`` fingerprint the run: a checkpoint in
    ``checkpoints`` is resumed only when both match. Under torchrun every rank trains; only rank 0
    logs to MLflow (the others get a tracker that does nothing) and writes files.
    """
    ctx = distributed.setup(backend)
    try:
        state = None
        if checkpoints:
            key = fingerprint(stage, stage_params, ctx.world, *data)
            state = TrainState(checkpoints, key)
        resume_id = state.mlflow_run_id() if state and ctx.is_main else None
        if ctx.world > 1 and ctx.is_main:
            print(f"{stage}: data-parallel over {ctx.world} processes ({ctx.device.type})")
        logged = {**stage_params, "world_size": ctx.world}
        with mlflow_run(stage, logged, raw_params(), resume_id, ctx.is_main) as tracker:
            yield (
                TrainingSetup(
                    Path(out), ctx, state, tracker.log_metrics, tracker.run_id, tracker.has_metric
                ),
                tracker,
            )
    finally:
        distributed.teardown()


def publish(
    run: TrainingSetup, tracker: Tracker | NullTracker, metrics: dict[str, Any], path: str
) -> None:
    """On rank 0: write the stage's metrics JSON and log the model file and its config to MLflow."""
    if not run.ctx.is_main:
        return
    write_json(metrics, path)
    tracker.log_artifact(run.out, "model")
    tracker.log_artifact(run.out.with_suffix(".json"), "model")
