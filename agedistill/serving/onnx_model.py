"""An exported student (``agedistill export --format onnx``) run through ONNX Runtime.

:class:`OnnxAgeModel` is an :class:`~agedistill.serving.age_model.AgeModel` whose forward pass
is the ONNX graph: the crop settings and age range come from the config the export stored as
metadata, so faces are found and aligned exactly as for the PyTorch model. Ages are computed from
the graph's ``logits`` output with the same functions as the PyTorch path
(:mod:`agedistill.models.ordinal`), so the two differ only by the runtimes' float rounding of
the logits.

A session is created lazily in each process that uses the model (an ONNX Runtime session does
not survive ``fork``; ``predict``'s worker processes each open their own), with the process's
thread setting (:mod:`agedistill.onnx_sessions`; one in a worker). A graph exported with
``--flip`` mirrors each face itself (metadata ``agedistill_flip``): the model then runs it once
per batch, and ``flip=False`` cannot make it read a face once. Neither this module nor
ONNX Runtime imports torch: ``predict`` with an ONNX model and the ``blazeface`` detector starts
in a fraction of a second.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agedistill.models.errors import ModelFileError
from agedistill.onnx_sessions import opened, session
from agedistill.serving.age_model import DEFAULT_FLIP, AgeModel, check_age_config
from agedistill.serving.distribution import age_std, median_age, mixture_logits, normalized

ONNX_SUFFIX = ".onnx"
FLIP_KEY = "agedistill_flip"  # metadata ``export --flip`` writes ("1"): the graph mirrors faces


def _reads_both_ways(path: Path) -> str:
    """What a flip graph asked to read each face once is told."""
    return (
        f"{path}: this graph reads each face both ways itself (exported with --flip); "
        "reading once needs a graph exported without it"
    )


@dataclass(frozen=True)
class OnnxAgeModel(AgeModel):
    """An age model whose network is an ONNX graph (``net`` is unused and ``None``).

    ``graph_flips``: the graph itself reads each face both ways (``export --flip``), so such a
    model's ``flip`` is always on.
    """

    graph_flips: bool = False

    def __post_init__(self) -> None:
        if self.graph_flips and not self.flip:
            raise ValueError(_reads_both_ways(self.path))

    def session(self) -> Any:
        """This process's ONNX Runtime session of the file (created on first use)."""
        return session(self.path)

    def logits(self, faces: np.ndarray) -> np.ndarray:
        """The graph's logits (N, num_classes) for normalised faces (N, 3, S, S) float32."""
        return self.session().run(["logits"], {"faces": np.ascontiguousarray(faces)})[0]

    @property
    def fast_net(self) -> Any:  # the PyTorch path's network: there is none
        raise AttributeError("an ONNX model has no PyTorch network")

    def ages(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`AgeModel.ages`, through ONNX Runtime."""
        x = normalized(crops)
        logits = self.logits(x)
        if self.flip and not self.graph_flips:
            logits = mixture_logits(logits, self.logits(x[..., ::-1]))
        return median_age(logits, self.min_age), age_std(logits) * self.std_scale


def load_onnx_model(path: str | Path, flip: bool = DEFAULT_FLIP) -> OnnxAgeModel:
    """Read an ONNX file written by ``agedistill export`` and check it is an age model.

    ``flip``: also read each face mirrored and average the two distributions
    (:attr:`~agedistill.serving.age_model.AgeModel.flip`). A graph exported with ``--flip``
    does so itself, whatever ``flip`` says (a warning when ``flip`` is off).

    Raises
    ------
    ModelFileError
        One line naming the file: missing, not ONNX, without agedistill's metadata, or a model
        ``predict`` cannot run.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    try:  # ONNX Runtime reads the graph and its metadata (the onnx package is slow to import)
        graph = opened(path)
    except Exception as e:  # not an ONNX file, or one ONNX Runtime cannot run
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise ModelFileError(
            f"{path}: not an ONNX model file ONNX Runtime can run ({reason})"
        ) from None
    meta = graph.get_modelmeta().custom_metadata_map
    if "agedistill_config" not in meta:
        raise ModelFileError(
            f"{path}: an ONNX file without agedistill's metadata; write it with "
            "`agedistill export --format onnx`"
        )
    inputs = [i.name for i in graph.get_inputs()]
    outputs = [o.name for o in graph.get_outputs()]
    if "faces" not in inputs or "logits" not in outputs:
        raise ModelFileError(f"{path}: graph has inputs {inputs} and outputs {outputs}")
    config = json.loads(meta["agedistill_config"])
    check_age_config(config, path)
    graph_flips = meta.get(FLIP_KEY) == "1"
    if graph_flips and not flip:
        warnings.warn(_reads_both_ways(path), stacklevel=3)  # at the caller of load_age_model
    return OnnxAgeModel(None, config, path, graph_flips or flip, graph_flips)  # type: ignore[arg-type]
