"""Exported ONNX and TorchScript models agree with PyTorch on real aligned faces (within 1e-4).

Faces are the ``align`` stage's crops when the pipeline has run (``data/aligned/crops``), otherwise
sample chips aligned here through the same detector and ``align_face``. The ONNX file is run by
ONNX Runtime, at two batch sizes (the batch axis is dynamic).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper
from PIL import Image

from agedistill.cli import main
from agedistill.faces.decode import read_image
from agedistill.faces.mtcnn import MtcnnDetector
from agedistill.models.inputs import normalize
from agedistill.serving.age_model import AgeModel
from agedistill.serving.export import INPUT_NAME, OUTPUT_NAMES, torch_outputs
from agedistill.serving.loading import load_age_model
from agedistill.serving.predict import DETECT_DEFAULTS

pytestmark = pytest.mark.integration

ATOL = 1e-4
N_FACES = 48


@pytest.fixture(scope="module")
def model() -> AgeModel:
    return load_age_model()


@pytest.fixture(scope="module")
def faces(repo: Path, sample_images: Path, model: AgeModel) -> torch.Tensor:
    """Normalised real aligned faces (N, 3, S, S), the exported graph's input."""
    crops_dir = repo / "data" / "aligned" / "crops"
    files = sorted(crops_dir.glob("*.png"))[:N_FACES] if crops_dir.is_dir() else []
    crops = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    if len(crops) < 8 or crops[0].shape[0] != model.input_size:  # absent, or for another model
        crops = _align_sample(sorted(sample_images.glob("*.jpg"))[:16], model)
    assert all(c.shape == (model.input_size, model.input_size, 3) for c in crops)
    return normalize(torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2))


def _align_sample(paths: list[Path], model: AgeModel) -> list[np.ndarray]:
    detector = MtcnnDetector(**DETECT_DEFAULTS)
    images = [read_image(p) for p in paths]
    return [
        np.asarray(model.align(im, det.faces[0].landmarks))
        for im, det in zip(images, detector.detect(images), strict=True)
        if det.faces
    ]


def _assert_close(got: list[np.ndarray], ref: dict[str, np.ndarray]) -> None:
    for name, value in zip(OUTPUT_NAMES, got, strict=True):
        assert value.shape == ref[name].shape, name
        np.testing.assert_allclose(value, ref[name], rtol=0, atol=ATOL, err_msg=name)


def test_onnx_matches_pytorch(tmp_path: Path, model: AgeModel, faces: torch.Tensor) -> None:
    out = tmp_path / "student.onnx"
    assert main(["export", "--format", "onnx", "--out", str(out)]) == 0
    proto = onnx.load(str(out))
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert proto.graph.input[0].name == INPUT_NAME
    size = model.input_size
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, size, size]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["agedistill_config"])["min_age"] == model.min_age
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for batch in (faces, faces[:1]):  # dynamic batch size
        got = session.run(OUTPUT_NAMES, {INPUT_NAME: batch.numpy()})
        _assert_close(got, torch_outputs(model, batch))


def test_flip_onnx_reads_real_faces_both_ways(
    tmp_path: Path, model: AgeModel, faces: torch.Tensor
) -> None:
    from agedistill.models.ordinal import mixture_logits

    out = tmp_path / "student-flip.onnx"
    assert main(["export", "--format", "onnx", "--out", str(out), "--flip"]) == 0
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for batch in (faces, faces[:1]):
        got = session.run(OUTPUT_NAMES, {INPUT_NAME: batch.numpy()})
        _assert_close(got, torch_outputs(model, batch, flip=True))
        once, mirrored = (torch_outputs(model, b)["logits"] for b in (batch, batch.flip(-1)))
        mixed = mixture_logits(torch.from_numpy(once), torch.from_numpy(mirrored)).numpy()
        np.testing.assert_allclose(got[0], mixed, rtol=0, atol=ATOL)
    # served through predict's loader, it gives the PyTorch model's default (flip) ages
    crops = ((faces * 0.25 + 0.5) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    served_age, _ = load_age_model(out).ages(crops)
    np.testing.assert_allclose(served_age, model.ages(crops)[0], atol=1e-3)


def test_torchscript_matches_pytorch(tmp_path: Path, model: AgeModel, faces: torch.Tensor) -> None:
    out = tmp_path / "student.ts"
    assert main(["export", "--format", "torchscript", "--out", str(out)]) == 0
    extra = {"agedistill.json": ""}
    with pytest.warns(FutureWarning):  # torch.jit is deprecated upstream; still loads
        loaded = torch.jit.load(str(out), _extra_files=extra)
    assert json.loads(extra["agedistill.json"])["min_age"] == str(model.min_age)
    for batch in (faces, faces[:3]):
        with torch.inference_mode():
            got = [t.numpy() for t in loaded(batch)]
        _assert_close(got, torch_outputs(model, batch))


def test_parity_check_can_fail(model: AgeModel, faces: torch.Tensor) -> None:
    # a perturbation of 1e-3 in the logits must not pass the tolerance the tests use
    ref = torch_outputs(model, faces)
    shifted = [ref["logits"] + 1e-3, ref["age"], ref["age_std"]]
    with pytest.raises(AssertionError):
        _assert_close(shifted, ref)


def test_the_shipped_onnx_student_is_the_export_of_the_shipped_pt(tmp_path: Path) -> None:
    """``predict`` runs ``assets/student.onnx`` by default: it must be ``student.pt`` exported
    (the same graph byte for byte; weights folded at export, such as batch norm into the
    convolutions, equal to float32 rounding, which differs between CPUs)."""
    from agedistill.serving.loading import default_model_path, default_serving_path

    def graph_and_weights(path: Path) -> tuple[bytes, dict[str, np.ndarray]]:
        model = onnx.load(str(path))
        weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        model.graph.ClearField("initializer")
        return model.SerializeToString(), weights

    out = tmp_path / "student.onnx"
    assert main(["export", "--format", "onnx", "--out", str(out)]) == 0
    graph, weights = graph_and_weights(out)
    shipped_graph, shipped_weights = graph_and_weights(default_serving_path())
    assert graph == shipped_graph and weights.keys() == shipped_weights.keys()
    for name, w in weights.items():
        np.testing.assert_allclose(w, shipped_weights[name], rtol=1e-5, atol=1e-7, err_msg=name)
    assert load_age_model(default_serving_path()).config == load_age_model().config
    assert default_model_path().with_suffix(".onnx") == default_serving_path()
