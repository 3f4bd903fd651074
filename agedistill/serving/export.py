"""Export an age model to ONNX or TorchScript for phones and other runtimes.

The exported graph takes the aligned face tensor the PyTorch model itself takes, ``faces``
(B, 3, S, S) float32, i.e. :func:`agedistill.models.inputs.normalize` of an RGB crop from
:func:`agedistill.faces.geometry.model_face`, with a dynamic batch size B. It returns three outputs:
``logits`` (B, num_classes), ``age`` (B,) (the median of the age distribution) and ``age_std``
(B,) (its standard deviation times the model's calibration factor), so an app needs no softmax
code of its own. The preprocessing constants travel as ONNX
metadata / a TorchScript extra file (``agedistill.json``).

By default the graph reads each face once. Exported with ``flip`` it reads each face as it is
and mirrored, in one batch of 2B, and its outputs are those of the equal mixture of the two age
distributions (``logits`` are the mixture's log-probabilities): what ``agedistill predict``
reports by default, at twice the graph's cost. Its metadata key ``agedistill_flip`` ("1") says
so, and ``predict`` never mirrors a face twice; a one-reading graph has no such key.

The ONNX file is written by the TorchScript-based exporter (``dynamo=False``): the
``torch.export``-based default needs ``onnxscript``, which the project does not depend on.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from agedistill.models.errors import ModelFileError
from agedistill.models.inputs import MEAN, STD
from agedistill.models.ordinal import age_std, median_age, mixture_logits
from agedistill.serving.age_model import AgeModel
from agedistill.serving.loading import load_age_model
from agedistill.serving.onnx_model import FLIP_KEY, OnnxAgeModel

FORMATS = ("onnx", "torchscript")
INPUT_NAME = "faces"
OUTPUT_NAMES = ["logits", "age", "age_std"]
OPSET = 17


class AgeOutputs(nn.Module):
    """The classifier followed by its age (median) and spread: faces -> (logits, age, std).

    ``std_scale`` calibrates the spread (the model's ``age_std_scale``); at 1 the graph has no
    multiplication at all. ``flip``: the network also reads each face mirrored, in the same
    batch, and the outputs are those of the mixture of the two distributions.
    """

    def __init__(
        self, net: nn.Module, min_age: int, std_scale: float = 1.0, flip: bool = False
    ) -> None:
        super().__init__()
        self.net = net
        self.min_age = min_age
        self.std_scale = std_scale
        self.flip = flip

    @classmethod
    def of(cls, model: AgeModel, flip: bool = False) -> AgeOutputs:
        """The outputs module of an age model, in eval mode."""
        return cls(model.net, model.min_age, model.std_scale, flip).eval()

    def forward(self, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.flip:
            both = self.net(torch.cat([faces, faces.flip(-1)]))  # (2B, C): one pass, both ways
            logits = mixture_logits(*both.chunk(2))
        else:
            logits = self.net(faces)  # (B, C)
        age, std = median_age(logits, self.min_age), age_std(logits)
        if self.std_scale != 1.0:
            std = std * self.std_scale
        return logits, age, std


def export_metadata(model: AgeModel, flip: bool = False) -> dict[str, str]:
    """What a runtime needs to feed the exported graph, as string key-value pairs (with
    ``flip``, also that the graph reads each face both ways)."""
    mirrored = {
        "reads": "each face as it is and mirrored; outputs of the mixture of the two age "
        "distributions",
        FLIP_KEY: "1",
    }
    return {
        "agedistill_config": json.dumps(model.config, sort_keys=True),
        "input": f"{INPUT_NAME}: (B, 3, {model.input_size}, {model.input_size}) float32 RGB",
        "normalize": f"(pixel / 255 - {MEAN}) / {STD}",
        "align": f"5-point similarity alignment to the {model.align_template!r} template "
        f"(agedistill.faces.geometry.TEMPLATES), cut at {model.align_size} px, then resized "
        f"(PIL bilinear) to {model.input_size} px (agedistill.faces.geometry.model_face), "
        f"margin {model.align_margin}; landmarks from the {model.detector!r} detector "
        f"(agedistill.faces.detectors) on a {model.detect_pad} border",
        "min_age": str(model.min_age),
        "outputs": ", ".join(OUTPUT_NAMES),
        **(mirrored if flip else {}),
    }


def _example(model: AgeModel, batch: int = 2) -> torch.Tensor:
    # batch 2, not 1: a size-1 example dimension invites the tracer to specialise on it
    return torch.zeros(batch, 3, model.input_size, model.input_size)


def export_onnx(model: AgeModel, out: Path, flip: bool = False) -> None:
    """Write ``model`` as ONNX with a dynamic batch axis and preprocessing metadata; with
    ``flip``, a graph that reads each face both ways (:class:`AgeOutputs`)."""
    import onnx

    wrapper = AgeOutputs.of(model, flip)
    axes: dict[str, dict[int, str]] = {name: {0: "batch"} for name in [INPUT_NAME, *OUTPUT_NAMES]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter, on purpose
        torch.onnx.export(
            wrapper, (_example(model),), str(out), dynamo=False, input_names=[INPUT_NAME],
            output_names=OUTPUT_NAMES, dynamic_axes=axes, opset_version=OPSET,
        )  # fmt: skip
    proto = onnx.load(str(out))
    for key, value in export_metadata(model, flip).items():
        proto.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(out))


def export_torchscript(model: AgeModel, out: Path, flip: bool = False) -> None:
    """Write ``model`` as a traced TorchScript module (``torch.jit.load``, no Python classes);
    with ``flip``, one that reads each face both ways (:class:`AgeOutputs`)."""
    wrapper = AgeOutputs.of(model, flip)
    extra = {"agedistill.json": json.dumps(export_metadata(model, flip))}
    with torch.no_grad(), warnings.catch_warnings():
        # TorchScript is deprecated upstream but still what PyTorch Mobile / LibTorch load
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(wrapper, (_example(model),))
        torch.jit.save(traced, str(out), _extra_files=extra)


def export_model(
    fmt: str, out: str | Path, model_path: str | Path | None = None, flip: bool = False
) -> Path:
    """Export a model file (default: the shipped student) to ``fmt`` at ``out``.

    Parameters
    ----------
    fmt : {"onnx", "torchscript"}
    out : str or Path
        The file to write; its folder is created.
    model_path : str or Path, optional
        An age model file; default: the shipped student.
    flip : bool
        Write a graph that reads each face as it is and mirrored and averages the two age
        distributions (``predict``'s default reading, twice the graph's cost); default: once.

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    agedistill.models.files.ModelFileError
        For a missing, corrupt or unsuitable model file, or an ONNX file.
    ValueError
        For an unknown format.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    model = load_age_model(model_path)
    if isinstance(model, OnnxAgeModel):
        raise ModelFileError(
            f"{model.path}: already an exported ONNX graph; export reads the .pt model file"
        )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    (export_onnx if fmt == "onnx" else export_torchscript)(model, out, flip)
    return out


def torch_outputs(model: AgeModel, faces: torch.Tensor, flip: bool = False) -> dict[str, Any]:
    """The reference outputs of the PyTorch model for normalised faces, as numpy arrays (with
    ``flip``, those of a graph exported with ``flip``)."""
    with torch.inference_mode():
        outs = AgeOutputs.of(model, flip)(faces)
    return {name: t.numpy() for name, t in zip(OUTPUT_NAMES, outs, strict=True)}
