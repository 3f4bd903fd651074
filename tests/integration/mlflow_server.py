"""Start a real ``mlflow server`` over a pipeline's SQLite store and query its REST API."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from tests.integration.pipeline_repo import env


def free_port() -> int:
    """A TCP port on localhost that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(base: str, path: str, body: dict | None = None) -> dict:
    """GET (or POST ``body`` as JSON to) ``base + path``; the decoded JSON answer."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        base + path, data=data, headers={"Content-Type": "application/json"},
        method="POST" if body is not None else "GET",
    )  # fmt: skip
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


@contextmanager
def mlflow_server(repo: Path, timeout_s: float = 120) -> Iterator[str]:
    """Serve ``repo``'s ``mlflow.db`` on a free localhost port; yield its base URL; stop it."""
    port = free_port()
    cmd = [
        str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1",
        "--port", str(port), "--backend-store-uri", f"sqlite:///{repo / 'mlflow.db'}",
        "--workers", "1",
    ]  # fmt: skip
    # its own process group: the server forks workers and job consumers, all stopped with it
    log = tempfile.TemporaryFile()  # noqa: SIM115  a file, not a pipe: nobody reads it meanwhile
    proc = subprocess.Popen(
        cmd, cwd=repo, env=env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(base + "/health", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None:
                    log.seek(0)
                    raise RuntimeError(
                        f"mlflow server exited: {log.read().decode(errors='replace')[-2000:]}"
                    ) from None
                if time.time() > deadline:
                    raise RuntimeError(
                        f"mlflow server did not answer within {timeout_s} s"
                    ) from None
                time.sleep(1)
        yield base
    finally:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def runs(base: str) -> list[dict]:
    """Every run of the ``agedistill`` experiment, parents and stage runs alike."""
    exp = call(base, "/api/2.0/mlflow/experiments/get-by-name?experiment_name=agedistill")
    found = call(
        base,
        "/api/2.0/mlflow/runs/search",
        {"experiment_ids": [exp["experiment"]["experiment_id"]], "max_results": 1000},
    )
    return found.get("runs", [])


def tags(r: dict) -> dict[str, str]:
    """A REST run's tags as a mapping."""
    return {t["key"]: t["value"] for t in r["data"].get("tags", [])}


def params(r: dict) -> dict[str, str]:
    """A REST run's params as a mapping."""
    return {p["key"]: p["value"] for p in r["data"].get("params", [])}


def metrics(r: dict) -> dict[str, float]:
    """A REST run's latest metric values as a mapping."""
    return {m["key"]: m["value"] for m in r["data"].get("metrics", [])}


def is_parent(r: dict) -> bool:
    """Whether a run is a pipeline execution's parent run (not a stage's)."""
    return tags(r).get("agedistill.role") == "pipeline"
