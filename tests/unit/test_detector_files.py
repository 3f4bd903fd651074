"""The shipped detector files: rebuilt from the wheels byte for byte, and the build's errors."""

from __future__ import annotations

from dataclasses import replace
from importlib import metadata
from pathlib import Path

import pytest

from agedistill.faces import tflite_convert
from agedistill.faces.blazeface import asset
from agedistill.faces.detector_files import FILES, build_detector_files
from agedistill.faces.tflite_convert import PIP_HINT, SOURCES, ConversionError, wheel_file


def test_a_fresh_build_equals_the_shipped_files(tmp_path: Path) -> None:
    """The conversion is deterministic: the same bytes (torch's ONNX export included)."""
    built = build_detector_files(tmp_path)
    assert sorted(p.name for p in built) == sorted(f.name for f in FILES.values())
    for path in built:
        assert path.read_bytes() == asset(path.name).read_bytes(), path.name


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
