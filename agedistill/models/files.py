"""Model files: a ``torch.load(weights_only=True)``-safe ``.pt`` and a JSON config beside it.

The ``.pt`` holds ``{"format": ..., "config": {plain types}, "state_dict": {tensors}}``, so a model
file never executes pickled code when loaded; the ``.json`` repeats the config for people and
tools that do not read PyTorch files.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from agedistill import __version__
from agedistill.models.errors import ModelFileError
from agedistill.models.nets import ConvNet, PretrainedNet, RankTeacher

FORMAT = "agedistill-model/1"


def build_model(config: dict[str, Any]) -> nn.Module:
    """Instantiate the network a config describes (no weights)."""
    arch = config.get("arch")
    if arch == "convnet":
        return ConvNet(
            config["widths"], config["num_classes"], config["stem_stride"],
            config["depthwise"], config.get("dropout", 0.0),
        )  # fmt: skip
    if arch == "pretrained":
        return PretrainedNet(config["backbone"], config["num_classes"], config.get("dropout", 0.0))
    if arch == "rank_teacher":
        return RankTeacher(
            config["widths"], config["k"], config["feature_dim"], config["stem_stride"],
            config["depthwise"], config.get("dropout", 0.0),
            backbone=config.get("backbone", "convnet"), head=config.get("head", "permutation"),
        )  # fmt: skip
    raise ModelFileError(f"unknown architecture {arch!r}")


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """Write ``obj`` to a temp file in the same folder and ``os.replace`` it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_model(path: str | Path, model: nn.Module, config: dict[str, Any]) -> None:
    """Save weights and config to ``path`` (.pt) and the config to ``path`` with ``.json``."""
    config = {**config, "agedistill_version": __version__}
    # plain contiguous float tensors, whatever layout training used (train.channels_last)
    state = {
        k: v.detach().cpu().clone(memory_format=torch.contiguous_format)
        for k, v in model.state_dict().items()
    }
    atomic_torch_save({"format": FORMAT, "config": config, "state_dict": state}, path)
    Path(path).with_suffix(".json").write_text(json.dumps(config, indent=2) + "\n")


def load_model(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Load a model saved by :func:`save_model`; raise :class:`ModelFileError` on any problem."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # weights_only refused an object: the file holds pickled code, which is never run
        raise ModelFileError(
            f"{path}: holds pickled Python objects, not plain weights; refused unloaded"
        ) from None
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelFileError(f"{path}: not a readable model file ({first[:200]})") from None
    if not isinstance(blob, dict) or "format" not in blob:
        raise ModelFileError(f"{path}: not an agedistill model (no format tag)")
    if blob["format"] != FORMAT:
        raise ModelFileError(
            f"{path}: model format {blob['format']!r}, this release reads {FORMAT!r}"
        )
    config = blob.get("config")
    if not isinstance(config, dict) or not isinstance(blob.get("state_dict"), dict):
        raise ModelFileError(f"{path}: model file lacks its config or weights")
    try:
        model = build_model(config)
    except (KeyError, TypeError, ValueError) as e:
        raise ModelFileError(f"{path}: malformed model config ({type(e).__name__}: {e})") from None
    try:
        model.load_state_dict(blob["state_dict"])
    except RuntimeError as e:
        raise ModelFileError(
            f"{path}: weights do not match architecture {config.get('arch')!r} "
            f"({str(e).splitlines()[0][:200]})"
        ) from None
    model.eval()
    return model, config
