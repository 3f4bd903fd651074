"""The conversion script's function rebuilds the shipped BlazeFace files from the wheel's files."""

from __future__ import annotations

from dataclasses import replace
from importlib import metadata, resources
from pathlib import Path

import pytest
import torch

from agedistill.faces import tflite_convert
from agedistill.faces.tflite_convert import (
    PIP_HINT,
    SOURCES,
    ConversionError,
    convert_wheel_model,
    wheel_file,
)


@pytest.mark.parametrize("key", list(SOURCES))
def test_conversion_rebuilds_the_shipped_file(key: str) -> None:
    """Equal content: the same operators and options, every tensor bit for bit (torch.save's
    archive itself carries a random id, so the bytes of two saves differ)."""
    path = resources.files("agedistill.assets") / f"{SOURCES[key].name}.pt"
    shipped = torch.load(Path(str(path)), weights_only=True)
    fresh = convert_wheel_model(key)
    assert fresh["ops"] == shipped["ops"] and fresh["source"] == shipped["source"]
    assert (fresh["input"], fresh["outputs"]) == (shipped["input"], shipped["outputs"])
    assert fresh["tensors"].keys() == shipped["tensors"].keys()
    for k, t in fresh["tensors"].items():
        assert t.dtype == shipped["tensors"][k].dtype and torch.equal(t, shipped["tensors"][k])


def test_a_missing_wheel_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(tflite_convert.metadata, "distribution", missing)
    with pytest.raises(ConversionError, match="not installed") as e:
        wheel_file(SOURCES["short_range"])
    assert PIP_HINT in str(e.value) and "\n" not in str(e.value)


def test_a_file_that_fails_its_hash_is_named() -> None:
    wrong = replace(SOURCES["short_range"], sha256="0" * 64)
    with pytest.raises(ConversionError, match=r"face_detection_short_range\.tflite: SHA-256"):
        wheel_file(wrong)
