"""A model file's ``age_std_scale`` reaches every reader: PyTorch, the ONNX graph, ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from agedistill.models.files import build_model, save_model
from agedistill.serving.export import INPUT_NAME, export_model
from agedistill.serving.loading import load_age_model

CONFIG = {"arch": "convnet", "widths": [8, 16], "stem_stride": 2, "depthwise": False,
          "dropout": 0.0, "input_size": 32, "num_classes": 101, "min_age": 0}  # fmt: skip


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The same weights saved without and with a scale of 2.5."""
    tmp = tmp_path_factory.mktemp("calibrated")
    torch.manual_seed(0)
    net = build_model(CONFIG)
    plain, scaled = tmp / "plain.pt", tmp / "scaled.pt"
    save_model(plain, net, CONFIG)
    save_model(scaled, net, {**CONFIG, "age_std_scale": 2.5})
    return plain, scaled


def crops(n: int = 4) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def test_pytorch_and_onnx_serve_the_scaled_spread_and_the_same_age(files, tmp_path):
    plain, scaled = files
    age0, std0 = load_age_model(plain).ages(crops())
    age1, std1 = load_age_model(scaled).ages(crops())
    assert np.allclose(age0, age1) and np.allclose(std1, 2.5 * std0, rtol=1e-5)
    onnx_file = export_model("onnx", tmp_path / "scaled.onnx", scaled)
    age2, std2 = load_age_model(onnx_file).ages(crops())
    assert np.allclose(age2, age1, atol=1e-3) and np.allclose(std2, std1, rtol=1e-3)
    # the graph's own age_std output is the calibrated one too
    model = load_age_model(onnx_file)
    faces = ((crops().astype(np.float32) / 255 - 0.5) / 0.25).transpose(0, 3, 1, 2)
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    _, _, graph_std = session.run(None, {INPUT_NAME: np.ascontiguousarray(faces)})
    assert np.allclose(graph_std, std1, rtol=1e-3)
    assert model.std_scale == 2.5


def test_an_unscaled_file_exports_no_multiplication(files, tmp_path):
    import onnx

    plain, scaled = files
    ops = {
        name: [n.op_type for n in onnx.load(export_model("onnx", tmp_path / f"{name}.onnx",
                                                          path)).graph.node]
        for name, path in (("plain", plain), ("scaled", scaled))
    }  # fmt: skip
    assert ops["scaled"].count("Mul") == ops["plain"].count("Mul") + 1  # the scale's
