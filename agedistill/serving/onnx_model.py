"""An exported student (``agedistill export --format onnx``) run through ONNX Runtime.

:class:`OnnxAgeModel` is an :class:`~agedistill.serving.age_model.AgeModel` whose forward pass
is the ONNX graph: the crop settings and age range come from the config the export stored as
metadata, so faces are found and aligned exactly as for the PyTorch model. Ages are computed from
the graph's ``logits`` output with the same functions as the PyTorch path
(:mod:`agedistill.models.ordinal`), so the two differ only by the runtimes' float rounding of
the logits.

A session is created lazily in each process that uses the model (an ONNX Runtime session does
not survive ``fork``; ``predict``'s worker processes each open their own), with as many intra-op
threads as torch has there (one in a worker).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agedistill.models.files import ModelFileError
from agedistill.models.inputs import normalize
from agedistill.models.ordinal import age_std, expected_age, mixture_logits
from agedistill.serving.age_model import AgeModel, check_age_config

ONNX_SUFFIX = ".onnx"
_SESSIONS: dict[tuple[str, int], Any] = {}  # (file, process id) -> InferenceSession


@dataclass(frozen=True)
class OnnxAgeModel(AgeModel):
    """An age model whose network is an ONNX graph (``net`` is unused and ``None``)."""

    def session(self) -> Any:
        """This process's ONNX Runtime session of the file (created on first use)."""
        key = (str(self.path), os.getpid())
        if key not in _SESSIONS:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = torch.get_num_threads()
            opts.inter_op_num_threads = 1
            opts.log_severity_level = 3
            _SESSIONS[key] = ort.InferenceSession(
                str(self.path), opts, providers=["CPUExecutionProvider"]
            )
        return _SESSIONS[key]

    def logits(self, faces: np.ndarray) -> torch.Tensor:
        """The graph's logits (N, num_classes) for normalised faces (N, 3, S, S) float32."""
        out = self.session().run(["logits"], {"faces": np.ascontiguousarray(faces)})[0]
        return torch.from_numpy(out)

    @property
    def fast_net(self) -> Any:  # the PyTorch path's network: there is none
        raise AttributeError("an ONNX model has no PyTorch network")

    def ages(self, crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`AgeModel.ages`, through ONNX Runtime."""
        x = normalize(crops).numpy()
        logits = self.logits(x)
        if self.flip:
            logits = mixture_logits(logits, self.logits(x[..., ::-1]))
        return expected_age(logits, self.min_age), age_std(logits)


def load_onnx_model(path: str | Path, flip: bool = False) -> OnnxAgeModel:
    """Read an ONNX file written by ``agedistill export`` and check it is an age model.

    Raises
    ------
    ModelFileError
        One line naming the file: missing, not ONNX, without agedistill's metadata, or a model
        ``predict`` cannot run.
    """
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf's DecodeError and friends: not an ONNX file
        raise ModelFileError(f"{path}: not an ONNX model file ({type(e).__name__})") from None
    meta = {p.key: p.value for p in proto.metadata_props}
    if "agedistill_config" not in meta:
        raise ModelFileError(
            f"{path}: an ONNX file without agedistill's metadata; write it with "
            "`agedistill export --format onnx`"
        )
    inputs = [i.name for i in proto.graph.input]
    outputs = [o.name for o in proto.graph.output]
    if "faces" not in inputs or "logits" not in outputs:
        raise ModelFileError(f"{path}: graph has inputs {inputs} and outputs {outputs}")
    config = json.loads(meta["agedistill_config"])
    check_age_config(config, path)
    return OnnxAgeModel(None, config, path, flip)  # type: ignore[arg-type]
