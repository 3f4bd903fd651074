"""Resumable training: a run's state after every epoch, so a kill loses one epoch at most.

A stage keeps ``last.pt`` (weights, optimiser, schedule, best so far, MLflow run id) and ``best.pt``
(the best model file so far) in its checkpoint folder, outside DVC's outputs (DVC deletes outputs
before it reruns a stage). A rerun resumes only from a state whose *fingerprint* (params and the
exact training data) matches; any other state is ignored and replaced. The folder is emptied when
the run finishes. Randomness is derived from (seed, epoch, rank), so a resumed run draws exactly
what the uninterrupted one would have, and ends with the same metrics.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from agedistill.models.files import atomic_torch_save

FORMAT = "agedistill-train-state/1"


def fingerprint(*parts: Any) -> str:
    """A digest of JSON-able values and tensors (e.g. params and the training images)."""
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, torch.Tensor):
            h.update(str((p.dtype, tuple(p.shape))).encode())
            h.update(p.contiguous().numpy().tobytes())
        else:
            h.update(json.dumps(p, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes (e.g. a teacher model a run depends on)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class TrainState:
    """``last.pt`` and ``best.pt`` of one training run in ``folder``."""

    def __init__(self, folder: str | Path, fingerprint: str) -> None:
        self.folder = Path(folder)
        self.fingerprint = fingerprint
        self.last = self.folder / "last.pt"
        self.best = self.folder / "best.pt"
        self._loaded: dict[str, Any] | None = None

    def load(self) -> dict[str, Any] | None:
        """The saved state if it belongs to this run (same fingerprint), else ``None``."""
        if self._loaded is not None:
            return self._loaded
        if not self.last.is_file():
            return None
        try:
            state = torch.load(self.last, map_location="cpu", weights_only=True)
        except Exception as e:  # a torn or foreign file is not worth a crash: start over
            print(f"resume: ignoring unreadable {self.last} ({type(e).__name__})")
            return None
        if state.get("format") != FORMAT or state.get("fingerprint") != self.fingerprint:
            print(f"resume: {self.last} is from other params or data; starting from scratch")
            return None
        self._loaded = state
        return state

    def mlflow_run_id(self) -> str | None:
        """The MLflow run the interrupted run logged to (to continue it), if any."""
        state = self.load()
        return state.get("mlflow_run_id") if state else None

    def save(
        self,
        epoch: int,
        modules: list[nn.Module],
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        progress: dict[str, Any],
        mlflow_run_id: str | None = None,
    ) -> None:
        """Write the state after ``epoch`` atomically (a kill mid-write leaves the previous one)."""
        state = {
            "format": FORMAT,
            "fingerprint": self.fingerprint,
            "epoch": epoch,
            "modules": [m.state_dict() for m in modules],
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "progress": progress,
        }
        if mlflow_run_id:
            state["mlflow_run_id"] = mlflow_run_id
        atomic_torch_save(state, self.last)

    def restore(
        self, modules: list[nn.Module], optimizer: torch.optim.Optimizer, scheduler: Any
    ) -> tuple[int, dict[str, Any]]:
        """Load the saved state into the objects; return (epochs done, progress), or (0, {})."""
        state = self.load()
        if state is None:
            return 0, {}
        for m, sd in zip(modules, state["modules"], strict=True):
            m.load_state_dict(sd)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        return int(state["epoch"]), dict(state["progress"])

    def clear(self) -> None:
        """Remove the folder's state (the run finished)."""
        shutil.rmtree(self.folder, ignore_errors=True)
