"""``pip install .`` is enough for predict and export; the pipeline is an extra; dev pulls it in."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PIPELINE_ONLY = ("dvc", "mlflow", "pandas", "matplotlib")


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[=<>\[ ]", r, maxsplit=1)[0].lower() for r in requirements}


def test_base_install_is_the_serving_set_and_dev_includes_the_pipeline() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base, extras = _names(project["dependencies"]), project["optional-dependencies"]
    assert {"torch", "torchvision", "facenet-pytorch", "pillow", "numpy", "onnxruntime"} <= base
    assert not base & set(PIPELINE_ONLY)
    assert set(PIPELINE_ONLY) <= _names(extras["pipeline"])
    assert "agedistill[pipeline]" in extras["dev"]
    assert {"pytest", "ruff"} <= _names(extras["dev"])


def test_serving_imports_no_pipeline_libraries() -> None:
    """Importing the command line, predict and export loads none of the pipeline's packages."""
    code = (
        "import sys, agedistill.cli, agedistill.serving.predict, agedistill.serving.export;"
        f"print(' '.join(m for m in {(*PIPELINE_ONLY, 'pydantic', 'yaml')!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == ""


def test_a_pipeline_command_without_the_extra_is_a_one_line_error(monkeypatch, capsys) -> None:
    import importlib.util

    from agedistill import cli

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda m: None if m == "dvc" else real(m))
    assert cli.main(["exp", "profiles/full.yaml"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs dvc" in err and "agedistill[pipeline]" in err
