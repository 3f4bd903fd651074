"""The TFLite-graph port and the shipped BlazeFace files against TFLite's own outputs; errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from agedistill.faces.blazeface import MODELS, _weighted_nms, asset
from agedistill.faces.tflite_convert import convert_wheel_model
from agedistill.faces.tflite_graph import (
    FORMAT,
    GraphFileError,
    TfliteGraph,
    _same_pad,
    check_graph,
)
from agedistill.onnx_sessions import session
from scripts.blazeface_reference import CHIP, reference_input

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "blazeface_reference.npz"


@pytest.mark.parametrize("key", ["short_range", "full_range"])
def test_the_port_and_the_shipped_onnx_give_tflites_outputs(key: str) -> None:
    """TFLite's outputs were written by scripts/blazeface_reference.py (TFLite 2.14, XNNPACK);
    measured: the port and the ONNX files differ by at most 1.5e-4 on regressors up to 170 and
    scores up to 2."""
    model = MODELS[key]
    ref = np.load(REFERENCE)
    x = reference_input(CHIP, model.input_size).transpose(0, 3, 1, 2).copy()
    with torch.inference_mode():
        ported = TfliteGraph(convert_wheel_model(key)).eval()(torch.from_numpy(x))
    shipped = session(asset(model.file)).run(None, {"images": x})
    for reg, scores in ([t.numpy() for t in ported], shipped):
        assert reg.shape[1] == scores.shape[1] == len(model.anchors())
        np.testing.assert_allclose(reg, ref[f"{key}_regressors"], rtol=0, atol=1e-3)
        np.testing.assert_allclose(scores, ref[f"{key}_scores"], rtol=0, atol=1e-3)


def test_tensorflow_same_padding_puts_the_extra_pixel_after() -> None:
    assert _same_pad(128, 3, 2) == (0, 1)  # out 64: (63 * 2 + 3) - 128 = 1
    assert _same_pad(128, 5, 1) == (2, 2)
    assert _same_pad(7, 2, 2) == (0, 1)
    assert _same_pad(8, 1, 1) == (0, 0)


def _tiny_graph(op: str = "CONV_2D") -> dict:
    w = torch.ones(2, 3, 3, 3)
    return {
        "format": FORMAT, "input": 0, "outputs": [2],
        "ops": [{"op": op, "inputs": [0, 1], "outputs": [2],
                 "options": {"padding": "SAME", "stride_h": 2, "stride_w": 2,
                             "fused_activation": "RELU"}}],
        "tensors": {1: w},
    }  # fmt: skip


def test_a_strided_same_convolution_pads_bottom_and_right() -> None:
    x = torch.arange(48, dtype=torch.float32).reshape(1, 3, 4, 4)
    (y,) = TfliteGraph(_tiny_graph())(x)
    # output (0, 0) sees rows/cols 0..2 (no padding before); (1, 1) rows/cols 2..4 with 4 padded
    assert y.shape == (1, 2, 2, 2)
    assert y[0, 0, 0, 0] == x[0, :, 0:3, 0:3].sum()
    assert y[0, 0, 1, 1] == x[0, :, 2:4, 2:4].sum()


def test_an_unsupported_operator_is_named() -> None:
    with pytest.raises(GraphFileError, match="SOFTMAX"):
        check_graph(_tiny_graph("SOFTMAX"))


def test_a_dict_of_another_format_is_refused() -> None:
    with pytest.raises(GraphFileError, match="not a converted TFLite graph"):
        check_graph({"format": "something-else", "ops": []})


def test_weighted_suppression_averages_overlapping_boxes_by_score() -> None:
    boxes = np.array([[0.0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]])
    scores = np.array([0.9, 0.3, 0.8])
    out = _weighted_nms(boxes, scores, 0.3)
    assert out.shape == (2, 5)
    np.testing.assert_allclose(out[0, :4], [0.25, 0.25, 10.25, 10.25], atol=1e-6)
    assert out[0, 4] == pytest.approx(0.9) and out[1, 4] == pytest.approx(0.8)


def test_a_detector_file_that_cannot_load_fails_the_detector_not_each_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agedistill.faces import blazeface

    junk = tmp_path / "blazeface_short_range.onnx"
    junk.write_bytes(b"not onnx")
    monkeypatch.setattr(blazeface, "asset", lambda name: junk)
    with pytest.raises(RuntimeError, match=r"blazeface_short_range\.onnx: the blazeface detector"):
        blazeface.BlazeFaceDetector()
