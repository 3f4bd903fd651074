"""``export --flip``: a graph that reads each face both ways, which ONNX serving runs once."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import onnx
import pytest
import torch

from agedistill.models.files import build_model, save_model
from agedistill.models.ordinal import mixture_logits
from agedistill.serving.export import export_model
from agedistill.serving.loading import load_age_model
from agedistill.serving.onnx_model import FLIP_KEY, OnnxAgeModel

CONFIG = {"arch": "convnet", "widths": [8, 16], "stem_stride": 2, "depthwise": False,
          "dropout": 0.0, "input_size": 32, "num_classes": 101, "min_age": 0}  # fmt: skip


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("flip") / "m.pt"
    save_model(path, build_model(CONFIG), {**CONFIG, "age_std_scale": 1.5})
    return path


def crops(n: int = 5) -> np.ndarray:
    # a face and its mirror differ: random pixels, so a graph that skips the mirror is caught
    return np.random.default_rng(1).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


@pytest.mark.parametrize("n", [5, 1])  # traced at batch 2: other sizes, one face among them
def test_the_flip_graph_outputs_the_mixture_of_both_readings(model_file, tmp_path, n):
    once = load_age_model(export_model("onnx", tmp_path / "once.onnx", model_file), flip=False)
    both = load_age_model(export_model("onnx", tmp_path / "both.onnx", model_file, flip=True))
    assert not once.graph_flips and both.graph_flips and both.flip
    x = ((crops(n).astype(np.float32) / 255 - 0.5) / 0.25).transpose(0, 3, 1, 2)
    plain, mirrored = once.logits(np.ascontiguousarray(x)), once.logits(x[..., ::-1].copy())
    expected = mixture_logits(torch.from_numpy(plain), torch.from_numpy(mirrored)).numpy()
    got = both.logits(np.ascontiguousarray(x))
    assert got.shape == (n, CONFIG["num_classes"])
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert np.abs(got - plain).max() > 1e-2  # the mirror reading did change the distribution
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "both.onnx")).metadata_props}
    assert meta[FLIP_KEY] == "1" and "mirrored" in meta["reads"]
    plain_meta = {p.key for p in onnx.load(str(tmp_path / "once.onnx")).metadata_props}
    assert FLIP_KEY not in plain_meta and "reads" not in plain_meta  # as files written before


def test_serving_a_flip_graph_matches_pytorch_flip_in_one_run_per_batch(
    model_file, tmp_path, monkeypatch
):
    onnx_file = export_model("onnx", tmp_path / "both.onnx", model_file, flip=True)
    ref_age, ref_std = load_age_model(model_file).ages(crops())  # PyTorch, flip by default
    served = load_age_model(onnx_file)
    calls = []
    original = OnnxAgeModel.logits
    monkeypatch.setattr(
        OnnxAgeModel, "logits", lambda self, x: calls.append(1) or original(self, x)
    )
    age, std = served.ages(crops())
    assert len(calls) == 1  # the graph mirrors the faces; the server must not mirror them again
    np.testing.assert_allclose(age, ref_age, atol=1e-3)
    np.testing.assert_allclose(std, ref_std, rtol=1e-3)


def test_asking_a_flip_graph_to_read_once_warns_and_it_reads_both_ways(model_file, tmp_path):
    onnx_file = export_model("onnx", tmp_path / "both.onnx", model_file, flip=True)
    with pytest.warns(UserWarning, match="both ways itself"):
        model = load_age_model(onnx_file, flip=False)
    assert model.flip  # it still reports how it reads
    np.testing.assert_allclose(model.ages(crops())[0], load_age_model(model_file).ages(crops())[0],
                               atol=1e-3)  # fmt: skip
    with pytest.raises(ValueError, match="both ways itself"):
        dataclasses.replace(model, flip=False)  # a model that says it reads once must do so
    once = export_model("onnx", tmp_path / "once.onnx", model_file)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not load_age_model(once, flip=False).flip


def test_the_torchscript_flip_module_matches_the_onnx_one(model_file, tmp_path):
    x = torch.from_numpy(((crops().astype(np.float32) / 255 - 0.5) / 0.25).transpose(0, 3, 1, 2))
    ts = export_model("torchscript", tmp_path / "both.ts", model_file, flip=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(str(ts))
    with torch.inference_mode():
        logits, age, std = module(x)
    served = load_age_model(export_model("onnx", tmp_path / "both.onnx", model_file, flip=True))
    np.testing.assert_allclose(logits.numpy(), served.logits(x.numpy()), atol=1e-4)
    ref_age, ref_std = load_age_model(model_file).ages(crops())
    np.testing.assert_allclose(age.numpy(), ref_age, atol=1e-3)
    np.testing.assert_allclose(std.numpy(), ref_std, rtol=1e-3)


def test_exporting_an_exported_graph_is_a_one_line_error(model_file, tmp_path, capsys):
    from agedistill.cli import main

    graph = export_model("onnx", tmp_path / "both.onnx", model_file, flip=True)
    out = tmp_path / "x.onnx"
    assert main(["export", "--format", "onnx", "--model", str(graph), "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"agedistill export: error: {graph}: already an exported ONNX graph; export reads the "
        ".pt model file"
    )
    assert not out.exists()
