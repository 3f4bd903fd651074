"""MLflow tracking: the only module that imports mlflow.

Every training stage and ``evaluate`` log to *one* store: ``mlflow.db`` (MLflow 3's SQLite
backend) and ``mlartifacts/`` in the main repository. Under ``dvc exp run --temp`` and queued
experiments DVC runs stages in a temporary copy inside ``.dvc/tmp/exps/``; DVC then sets
``DVC_ROOT`` to the main repository, which is where the store is resolved, so runs are never
written into a copy that DVC deletes. ``MLFLOW_TRACKING_URI`` overrides the store (e.g. a local
``mlflow server`` for many concurrent writers).

Runs of one pipeline execution share the tag ``agedistill.pipeline`` (the DVC experiment name, or
the git commit plus params hash for a plain ``dvc repro``), and every run carries ``stage``,
``git_commit``, ``dvc_exp`` and ``params_hash`` tags.

Each pipeline execution also has one *parent* run (tag ``agedistill.role = pipeline``), named
after it and holding the whole ``params.yaml`` flattened (``distill.temperature``) and, once
``evaluate`` has run, the headline metrics (:mod:`agedistill.pipeline.headline`). Every stage run
is its child (``mlflow.parentRunId``), so the MLflow runs table shows one row per experiment and its
compare page lines experiments up param by param. A stage starts by finding its parent (same
pipeline name and params hash) or creating it, so a stage rerun alone, with DVC skipping the
others, lands under the parent of the params it ran with.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from agedistill.pipeline.machine import describe

EXPERIMENT = "agedistill"
# the MLflow UI opens a "model training" experiment on its runs table (not the GenAI overview)
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


def main_repo_root(start: str | Path | None = None) -> Path:
    """The main repository's root, also from inside a DVC experiment's temporary copy."""
    if os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"]).resolve()
    here = Path(start or Path.cwd()).resolve()
    parts = here.parts
    for i in range(len(parts) - 2):  # .../<repo>/.dvc/tmp/exps/... -> <repo>
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    for p in (here, *here.parents):
        if (p / "dvc.yaml").is_file():
            return p
    return here


SQLITE_TIMEOUT_S = 120  # how long a writer waits for another's lock before SQLite gives up


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the main repository's ``mlflow.db``.

    The SQLite URI carries a busy timeout of ``SQLITE_TIMEOUT_S`` (Python's default is 5 s), so
    parallel stages (``dvc queue start -j 2``, data-parallel ranks) wait for each other's writes
    instead of failing with "database is locked".
    """
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{main_repo_root() / 'mlflow.db'}?timeout={SQLITE_TIMEOUT_S}"


def _sqlite_file(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///").split("?", 1)[0])


@contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Hold an exclusive file lock beside a SQLite store (no-op for a server or other store).

    MLflow creates and migrates a new SQLite schema on first use; two processes doing that at once
    collide ("duplicate column name"). Store set-up runs under this lock.
    """
    path = _sqlite_file(uri)
    if path is None:
        yield
        return
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def artifact_root() -> str:
    """Where artifacts of a new experiment go: ``mlartifacts/`` in the main repository."""
    return (main_repo_root() / "mlartifacts").as_uri()


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists become JSON strings)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, f"{key}."))
        elif isinstance(v, list):
            out[key] = json.dumps(v)
        else:
            out[key] = v
    return out


def params_hash(params: dict[str, Any]) -> str:
    """A short stable hash of a params mapping."""
    return hashlib.sha1(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:12]


def git_commit(cwd: str | Path | None = None) -> str:
    """The checked-out commit (DVC's baseline rev inside an experiment), or ``unknown``."""
    if os.environ.get("DVC_EXP_BASELINE_REV"):
        return os.environ["DVC_EXP_BASELINE_REV"]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_tags(stage: str, all_params: dict[str, Any]) -> dict[str, str]:
    """Tags that link the runs of one pipeline execution, and say which machine ran them."""
    commit = git_commit()
    exp = os.environ.get("DVC_EXP_NAME", "")
    phash = params_hash(all_params)
    pipeline = exp or f"workspace-{commit[:8]}-{phash}"
    return {
        "agedistill.stage": stage,
        "agedistill.pipeline": pipeline,
        "git_commit": commit,
        "dvc_exp": exp or "workspace",
        "params_hash": phash,
        "mlflow.source.git.commit": commit,
        **{f"machine.{k}": v for k, v in describe().items()},
    }


ROLE_TAG = "agedistill.role"
PARAM_BATCH = 100  # MLflow takes at most 100 params per log_batch request


def parent_query(tags: dict[str, str]) -> str:
    """The MLflow search filter that finds the parent run of the execution ``tags`` describe."""
    pipeline = tags["agedistill.pipeline"].replace("'", "")
    return (
        f"tags.`{ROLE_TAG}` = 'pipeline' and tags.`agedistill.pipeline` = '{pipeline}' "
        f"and tags.params_hash = '{tags['params_hash']}'"
    )


def find_or_create_parent(
    client: Any, experiment_id: str, tags: dict[str, str], all_params: dict[str, Any]
) -> str:
    """The run id of the pipeline execution's parent run, created with every param if new."""
    from mlflow.entities import Param

    found = client.search_runs(
        [experiment_id], parent_query(tags), max_results=1, order_by=["attributes.start_time ASC"]
    )
    if found:
        return found[0].info.run_id
    parent_tags = {k: v for k, v in tags.items() if k != "agedistill.stage"}
    parent_tags[ROLE_TAG] = "pipeline"
    run = client.create_run(experiment_id, tags=parent_tags, run_name=tags["agedistill.pipeline"])
    params = [Param(k, str(v)) for k, v in flatten(all_params).items()]
    for i in range(0, len(params), PARAM_BATCH):
        client.log_batch(run.info.run_id, params=params[i : i + PARAM_BATCH])
    return run.info.run_id


def metric_key(name: str) -> str:
    """The MLflow key a metric is logged under (no spaces; ``60+`` becomes ``60plus``)."""
    return name.replace(" ", "_").replace("+", "plus")


class Tracker:
    """A thin handle over the active MLflow run."""

    def __init__(self, mlflow_module: Any, parent_id: str | None = None) -> None:
        self._mlflow = mlflow_module
        self.run_id = mlflow_module.active_run().info.run_id
        self.parent_id = parent_id

    def log_pipeline_metrics(self, metrics: dict[str, float]) -> None:
        """Log metrics on the pipeline execution's parent run (the row the runs table shows)."""
        if self.parent_id is None:
            return
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(metric_key(k), float(v), now, 0) for k, v in metrics.items()]
        self._mlflow.tracking.MlflowClient(self._mlflow.get_tracking_uri()).log_batch(
            self.parent_id, metrics=batch
        )

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Log numeric metrics (non-numbers are skipped)."""
        flat = flatten(metrics)  # nested groups (e.g. MAE per age group) become dotted keys
        clean = {
            metric_key(k): float(v)
            for k, v in flat.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        self._mlflow.log_metrics(clean, step=step)

    def has_metric(self, key: str, step: int) -> bool:
        """Whether this run already holds metric ``key`` at ``step`` (True if the store won't say).

        Answering True when the store cannot be read makes a resumed run skip a re-log rather
        than fail the stage over a metric.
        """
        client = self._mlflow.tracking.MlflowClient(self._mlflow.get_tracking_uri())
        try:
            history = client.get_metric_history(self.run_id, metric_key(key))
        except self._mlflow.exceptions.MlflowException as e:
            warnings.warn(f"MLflow store unreadable, epoch {step} not re-logged: {e}", stacklevel=2)
            return True
        return any(m.step == step for m in history)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Copy a file or folder into the run's artifacts."""
        path = Path(path)
        if path.is_dir():
            self._mlflow.log_artifacts(str(path), artifact_path)
        elif path.is_file():
            self._mlflow.log_artifact(str(path), artifact_path)

    def log_dict(self, data: dict[str, Any], name: str) -> None:
        """Store a dict as a JSON artifact."""
        self._mlflow.log_dict(data, name)

    def log_figure(self, figure: Any, name: str) -> None:
        """Store a matplotlib figure as a PNG artifact."""
        self._mlflow.log_figure(figure, name)

    def log_student(
        self, model_file: str | Path, registered_name: str = "agedistill-student"
    ) -> None:
        """Log the student as an MLflow PyTorch model with an input signature, and register it."""
        import numpy as np
        import torch
        from mlflow.models import infer_signature

        from agedistill.models.files import load_model

        model, config = load_model(model_file)
        size = config["input_size"]
        example = np.zeros((1, 3, size, size), dtype=np.float32)
        with torch.inference_mode():
            out = model(torch.from_numpy(example)).numpy()
        self._mlflow.pytorch.log_model(
            model,
            name="student",
            signature=infer_signature(example, out),
            input_example=example,
            registered_model_name=registered_name,
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
        )


class NullTracker:
    """What ranks other than 0 get from :func:`mlflow_run`: every call does nothing."""

    run_id = None

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


@contextmanager
def mlflow_run(
    stage: str,
    stage_params: dict[str, Any],
    all_params: dict[str, Any],
    run_id: str | None = None,
    enabled: bool = True,
) -> Iterator[Tracker | NullTracker]:
    """Start an MLflow run for ``stage`` in the main repository's store, tagged and with params.

    ``run_id`` continues an existing run (a training stage resumed after a kill) when the store
    still has it. ``enabled=False`` (data-parallel ranks other than 0) logs nothing.
    """
    if not enabled:
        yield NullTracker()
        return
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    import mlflow

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    tags = run_tags(stage, all_params)
    with store_lock(uri):
        client = mlflow.tracking.MlflowClient(uri)  # opening a new SQLite store migrates it
        if mlflow.get_experiment_by_name(EXPERIMENT) is None:
            # a server store may still see a concurrent creator: that is fine
            with suppress(mlflow.exceptions.MlflowException):
                mlflow.create_experiment(
                    EXPERIMENT, artifact_location=artifact_root(), tags=EXPERIMENT_TAGS
                )
        experiment = mlflow.set_experiment(EXPERIMENT)
        parent_id = find_or_create_parent(client, experiment.experiment_id, tags, all_params)
    client.update_run(parent_id, status="RUNNING")
    tags["mlflow.parentRunId"] = parent_id
    if run_id is not None:
        try:
            mlflow.get_run(run_id)
        except mlflow.exceptions.MlflowException:
            run_id = None  # the store was reset since: start a new run
    if run_id is not None:
        active = mlflow.start_run(run_id=run_id)
    else:
        active = mlflow.start_run(run_name=f"{tags['dvc_exp']}/{stage}", tags=tags)
    status = "FAILED"
    try:
        with active:
            # a resumed run joins the parent of the params it now runs with
            mlflow.set_tag("mlflow.parentRunId", parent_id)
            mlflow.log_params(flatten(stage_params))
            yield Tracker(mlflow, parent_id)
        status = "FINISHED"
    finally:
        client.set_terminated(parent_id, status)
