"""Run a converted TensorFlow Lite graph (convolutions, pools, adds, pads, reshapes) in PyTorch.

:mod:`agedistill.faces.tflite_convert` turns a ``.tflite`` file into a graph dict of this
module's format: an ordered list of operators (type, input and output tensor ids, options) and
the graph's constant tensors, already in PyTorch's layouts (convolution weights OIHW).
:class:`TfliteGraph` executes that list on NCHW activations, with no TensorFlow;
:mod:`agedistill.faces.detector_files` exports it to the ONNX file that ships.

Only the operators BlazeFace uses are supported; :func:`check_graph` names any other one.
TensorFlow's ``SAME`` padding (asymmetric for even kernels and strided convolutions: the extra
row or column goes after) is applied explicitly, so outputs match TFLite's to float rounding.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

FORMAT = "agedistill-tflite-graph/1"

SUPPORTED = {
    "CONV_2D",
    "DEPTHWISE_CONV_2D",
    "ADD",
    "RELU",
    "PAD",
    "MAX_POOL_2D",
    "RESHAPE",
    "CONCATENATION",
    "RESIZE_BILINEAR",
}

# an NHWC axis of a 4-d tensor as the axis of the same tensor held NCHW
_NHWC_TO_NCHW = {0: 0, 1: 2, 2: 3, 3: 1, -1: 1}


class GraphFileError(Exception):
    """A graph dict that is not of this module's format, or holds an operator it cannot run."""


def check_graph(graph: dict[str, Any]) -> None:
    """Raise :class:`GraphFileError` unless ``graph`` is a runnable file of :data:`FORMAT`."""
    if not isinstance(graph, dict) or graph.get("format") != FORMAT:
        found = graph.get("format") if isinstance(graph, dict) else type(graph).__name__
        raise GraphFileError(f"not a converted TFLite graph (format {found!r}, want {FORMAT!r})")
    unknown = sorted({op["op"] for op in graph["ops"]} - SUPPORTED)
    if unknown:
        raise GraphFileError(f"unsupported TFLite operators: {', '.join(unknown)}")


def _same_pad(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow's ``SAME`` padding of one axis: (before, after)."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def _padded(
    x: torch.Tensor, opts: dict[str, Any], kh: int, kw: int
) -> tuple[torch.Tensor, tuple[int, int]]:
    """``x`` and the symmetric padding left for the convolution itself to apply: TensorFlow's
    ``SAME`` padding, with only an asymmetric remainder padded explicitly (a copy)."""
    if opts.get("padding") != "SAME":
        return x, (0, 0)
    h, w = int(x.shape[2]), int(x.shape[3])  # static, also when traced for ONNX export
    top, bottom = _same_pad(h, kh, opts["stride_h"], opts.get("dilation_h", 1))
    left, right = _same_pad(w, kw, opts["stride_w"], opts.get("dilation_w", 1))
    if top == bottom and left == right:
        return x, (top, left)
    return F.pad(x, (left, right, top, bottom)), (0, 0)


def _activation(x: torch.Tensor, name: str | None) -> torch.Tensor:
    if name in (None, "NONE"):
        return x
    if name == "RELU":
        return F.relu(x)
    if name == "RELU6":
        return F.relu6(x)
    raise GraphFileError(f"unsupported fused activation {name}")


class TfliteGraph(nn.Module):
    """A converted TFLite graph as a PyTorch module: NCHW float input, the graph's outputs.

    Parameters
    ----------
    graph : dict
        The content of a converted file (see :func:`load_graph`).
    """

    def __init__(self, graph: dict[str, Any]) -> None:
        super().__init__()
        check_graph(graph)
        self.ops: list[dict[str, Any]] = graph["ops"]
        self.input_id: int = graph["input"]
        self.output_ids: list[int] = graph["outputs"]
        for key, value in graph["tensors"].items():
            self.register_buffer(f"t{key}", value.float())

    def _const(self, tid: int) -> torch.Tensor:
        return getattr(self, f"t{tid}")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Run the graph on ``x`` (N, C, H, W); returns its outputs in the file's order."""
        values: dict[int, torch.Tensor] = {self.input_id: x}
        for op in self.ops:
            args = [values[i] if i in values else self._const(i) for i in op["inputs"]]
            values[op["outputs"][0]] = self._run(op["op"], args, op.get("options", {}))
        return [values[i] for i in self.output_ids]

    def _run(self, kind: str, args: list[torch.Tensor], opts: dict[str, Any]) -> torch.Tensor:
        """One operator on its input tensors."""
        x = args[0]
        act = opts.get("fused_activation")
        if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            w, b = args[1], args[2] if len(args) > 2 else None
            x, padding = _padded(x, opts, w.shape[2], w.shape[3])
            groups = int(x.shape[1]) if kind == "DEPTHWISE_CONV_2D" else 1
            stride = (opts["stride_h"], opts["stride_w"])
            dilation = (opts.get("dilation_h", 1), opts.get("dilation_w", 1))
            y = F.conv2d(x, w, b, stride, padding, dilation, groups)
            return _activation(y, act)
        if kind == "ADD":
            return _activation(x + args[1], act)
        if kind == "RELU":
            return F.relu(x)
        if kind == "PAD":
            (n0, n1), (h0, h1), (w0, w1), (c0, c1) = opts["paddings"]  # NHWC pairs
            if n0 or n1:
                raise GraphFileError("PAD along the batch axis is not supported")
            return F.pad(x, (w0, w1, h0, h1, c0, c1))
        if kind == "MAX_POOL_2D":
            x, padding = _padded(x, opts, opts["filter_h"], opts["filter_w"])
            y = F.max_pool2d(x, (opts["filter_h"], opts["filter_w"]),
                             (opts["stride_h"], opts["stride_w"]), padding)  # fmt: skip
            return _activation(y, act)
        if kind == "RESHAPE":
            if x.dim() == 4:  # TFLite reshapes NHWC memory order
                x = x.permute(0, 2, 3, 1)
            return x.reshape(-1, *opts["new_shape"][1:])
        if kind == "CONCATENATION":
            axis = opts["axis"]
            if x.dim() == 4:
                axis = _NHWC_TO_NCHW[axis]
            return _activation(torch.cat(args, dim=axis), act)
        if kind == "RESIZE_BILINEAR":
            size = opts["size"]
            if opts.get("align_corners"):
                return F.interpolate(x, size=size, mode="bilinear", align_corners=True)
            if opts.get("half_pixel_centers"):
                return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            # TFLite's legacy sampling: source = destination * in / out, no half-pixel shift
            return _legacy_bilinear(x, size)
        raise GraphFileError(f"unsupported TFLite operator {kind}")


def _legacy_bilinear(x: torch.Tensor, size: list[int]) -> torch.Tensor:
    """TensorFlow's bilinear resize with neither ``align_corners`` nor ``half_pixel_centers``."""
    h, w = int(x.shape[2]), int(x.shape[3])
    out_h, out_w = size

    def axis(n_in: int, n_out: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        src = torch.arange(n_out, dtype=torch.float32) * (n_in / n_out)
        lo = src.floor().long().clamp(max=n_in - 1)
        hi = (lo + 1).clamp(max=n_in - 1)
        return lo, hi, (src - lo.float()).to(x.dtype)

    y0, y1, fy = axis(h, out_h)
    x0, x1, fx = axis(w, out_w)
    top = x[:, :, y0] * (1 - fy)[:, None] + x[:, :, y1] * fy[:, None]
    return top[..., x0] * (1 - fx) + top[..., x1] * fx
