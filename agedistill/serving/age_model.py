"""An age model and the config that says how to feed it, and the check that it is one.

The PyTorch model (:class:`AgeModel`) and the exported one
(:class:`~agedistill.serving.onnx_model.OnnxAgeModel`) share this type and this check; files
become models in :mod:`agedistill.serving.loading`. This module imports torch only when a
PyTorch model computes ages, so that ``predict`` with an ONNX model never loads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from agedistill import __version__
from agedistill.faces.detection import model_crop
from agedistill.faces.geometry import model_face
from agedistill.models.errors import ModelFileError

if TYPE_CHECKING:
    from torch import nn

# Architectures with an age head: the student's net, and a class teacher on a pretrained backbone
AGE_ARCHS = ("convnet", "pretrained")
# Test-time flip augmentation, on unless asked off: each face is also read mirrored and the two
# age distributions averaged: lower error on every test source, about a tenth more time per photo
# and half the faces/s of the age model alone (docs/experiments/flip_tta.md).
DEFAULT_FLIP = True
# Config keys ``predict`` needs; the ``align_*`` keys default to ``detection.CROP_DEFAULTS``.
_REQUIRED_KEYS = ("input_size", "min_age", "num_classes")


@dataclass(frozen=True)
class AgeModel:
    """An age classifier (student or class teacher) with the config that says how to feed it."""

    net: nn.Module
    config: dict[str, Any]
    path: Path
    flip: bool = DEFAULT_FLIP  # test-time augmentation: also feed each face mirrored, average

    @property
    def input_size(self) -> int:
        return int(self.config["input_size"])

    @property
    def min_age(self) -> int:
        return int(self.config["min_age"])

    @property
    def std_scale(self) -> float:
        """The factor on the distribution's spread that makes ``age_std`` a one-sigma error bar
        (``age_std_scale``, fitted on the validation part; 1 in files written before it)."""
        return float(self.config.get("age_std_scale", 1.0))

    @property
    def align_margin(self) -> float:
        return float(model_crop(self.config)["margin"])

    @property
    def align_template(self) -> str:
        """The crop framing of the training faces (``align.template``)."""
        return str(model_crop(self.config)["template"])

    @property
    def align_size(self) -> int:
        """The side the training faces were cut at (``align.size``), then resized to the input."""
        return model_crop(self.config)["size"]

    def align(self, image: Image.Image, landmarks: np.ndarray) -> Image.Image:
        """The model's input crop of the face with these landmarks, framed as in training."""
        return model_face(image, landmarks, self.config)

    @property
    def detect_pad(self) -> float:
        """The border the training images were searched with (``align.detect_pad``)."""
        return float(model_crop(self.config)["detect_pad"])

    @property
    def detector(self) -> str:
        """The face detector ``predict`` searches photos with for this model (``align_detector``:
        the ``align`` stage's detector, when the pipeline wrote the file)."""
        return str(model_crop(self.config)["detector"])

    @cached_property
    def fast_net(self) -> nn.Module:
        """``net`` with BatchNorm folded and channels-last weights (``serving/inference.py``)."""
        from agedistill.serving.inference import for_inference

        return for_inference(self.net)

    def ages(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Age (the median of the predicted distribution) and its calibrated standard deviation,
        each (N,), for uint8 crops (N, S, S, 3).

        With ``flip`` they are those of the mixture of the face's and its mirror image's age
        distributions (:func:`agedistill.models.ordinal.mixture_logits`).
        """
        import torch

        from agedistill.models.inputs import normalize
        from agedistill.models.ordinal import age_std, median_age, mixture_logits

        with torch.inference_mode():
            x = normalize(torch.from_numpy(crops).permute(0, 3, 1, 2).contiguous())
            logits = self.fast_net(x)
            if self.flip:
                logits = mixture_logits(logits, self.fast_net(x.flip(-1)))
            std = age_std(logits) * self.std_scale
            return median_age(logits, self.min_age).numpy(), std.numpy()


def _major(version: str) -> str:
    return str(version).split(".")[0]


def check_age_config(config: dict[str, Any], path: Path) -> None:
    """Raise :class:`ModelFileError` unless ``config`` is an age classifier ``predict`` can run.

    Parameters
    ----------
    config : dict
        The model file's config.
    path : Path
        The model file, named in the message.
    """
    version = config.get("agedistill_version")
    if version is None or _major(version) != _major(__version__):
        raise ModelFileError(
            f"{path}: written by agedistill {version or 'of unknown version'}, "
            f"this is {__version__} (major versions differ): retrain or use a matching release"
        )
    if config.get("arch") not in AGE_ARCHS:
        raise ModelFileError(
            f"{path}: a {config.get('arch')!r} model has no age head; predict needs a student "
            f"or class-teacher model (arch {' or '.join(map(repr, AGE_ARCHS))})"
        )
    missing = [k for k in _REQUIRED_KEYS if k not in config]
    if missing:
        raise ModelFileError(f"{path}: model config lacks {', '.join(missing)}")
