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


def shared(folder: Path, marker: str) -> Path:
    """``folder`` of ``../shared/data``, checked by its ``marker`` file or folder.

    A clone without ``../shared/data`` beside it skips the tests of shared data; where it is
    there (as in CI), a missing folder or file fails them, so that no test of real data is
    skipped unseen."""
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is not beside this clone")
    if not (folder / marker).exists():
        pytest.fail(f"{folder / marker} is missing from {SHARED}")
    return folder


@pytest.fixture(scope="session")
def photos() -> Path:
    """Real photos (dlib, face_recognition, facenet-pytorch examples) with manifest.csv."""
    return shared(PHOTOS, "manifest.csv")


@pytest.fixture(scope="session")
def utkface() -> Path:
    """The shared UTKFace chips folder (11,569 files)."""
    return shared(UTKFACE.parent, UTKFACE.name) / UTKFACE.name


@pytest.fixture(scope="session")
def aaf() -> Path:
    """The shared All-Age-Faces folder (10,137 faces, labels.csv)."""
    return shared(SHARED / "aaf", "labels.csv")


@pytest.fixture(scope="session")
def appa_real() -> Path:
    """The shared APPA-REAL folder (5,212 faces in train/ and valid/, labels.csv)."""
    return shared(SHARED / "appa_real", "labels.csv")


@pytest.fixture(scope="module", params=DETECTORS)
def detector_name(request: pytest.FixtureRequest) -> str:
    """Each face detector in turn: a test that takes it runs once per detector."""
    return request.param
