import shutil

import pytest

from tests.integration.pipeline_repo import make_repo, run


@pytest.fixture(scope="session")
def pipeline(repo, tmp_path_factory):
    """A tiny-params copy of the repository after a full ``dvc repro``: (path, output)."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    dst = make_repo(repo, tmp_path_factory.mktemp("pipeline"))
    return dst, run(["dvc", "repro"], dst)
