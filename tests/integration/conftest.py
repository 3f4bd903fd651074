import shutil

import pytest

from tests.integration.pipeline_repo import make_repo, run


@pytest.fixture(scope="session")
def pipeline(repo, tmp_path_factory):
    """A tiny-params copy of the repository after a full ``dvc repro``: (path, output)."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    dst = make_repo(repo, tmp_path_factory.mktemp("pipeline"))
    out = run(["dvc", "repro"], dst)
    # as a user would: commit the lock file and the (git-tracked) metrics of the baseline
    run(["git", "add", "-A"], dst)
    run(["git", "commit", "-qm", "baseline results"], dst)
    return dst, out
