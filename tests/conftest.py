"""Shared fixtures: real data from the repository's sample and ../shared beside the clone."""

from __future__ import annotations

from pathlib import Path

import pytest

from agedistill.faces.detectors import DETECTORS

REPO = Path(__file__).resolve().parents[1]
SAMPLE_IMAGES = REPO / "data" / "sample" / "images"
SHARED = REPO.parent / "shared" / "data"
UTKFACE = SHARED / "utkface" / "images"
PHOTOS = SHARED / "photos"


@pytest.fixture(scope="session")
def repo() -> Path:
    """The repository root."""
    return REPO


@pytest.fixture(scope="session")
def sample_images() -> Path:
    """The bundled 1,000-chip UTKFace sample."""
    return SAMPLE_IMAGES


@pytest.fixture(scope="session")
def photos() -> Path:
    """Real photos (dlib, face_recognition, facenet-pytorch examples) with manifest.csv."""
    if not (PHOTOS / "manifest.csv").is_file():
        pytest.skip(f"{PHOTOS} is not beside this clone")
    return PHOTOS


@pytest.fixture(scope="session")
def utkface() -> Path:
    """The shared UTKFace chips folder (11,569 files)."""
    if not UTKFACE.is_dir():
        pytest.skip(f"{UTKFACE} is not beside this clone")
    return UTKFACE


@pytest.fixture(scope="session")
def aaf() -> Path:
    """The shared All-Age-Faces folder (10,137 faces, labels.csv)."""
    if not (SHARED / "aaf" / "labels.csv").is_file():
        pytest.skip(f"{SHARED / 'aaf'} is not beside this clone")
    return SHARED / "aaf"


@pytest.fixture(scope="session")
def appa_real() -> Path:
    """The shared APPA-REAL folder (5,212 faces in train/ and valid/, labels.csv)."""
    if not (SHARED / "appa_real" / "labels.csv").is_file():
        pytest.skip(f"{SHARED / 'appa_real'} is not beside this clone")
    return SHARED / "appa_real"


@pytest.fixture(scope="module", params=DETECTORS)
def detector_name(request: pytest.FixtureRequest) -> str:
    """Each face detector in turn: a test that takes it runs once per detector."""
    return request.param
