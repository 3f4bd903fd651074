"""``predict`` with the shipped model and the ``blazeface`` detector never loads torch.

Importing torch (a CUDA build) takes about two seconds, most of a short run's time: the default
path runs the student and the detector through ONNX Runtime instead, and a run over a few files
starts in a fraction of a second.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

SCRIPT = """
import sys
from agedistill.cli import main
code = main(["predict", *sys.argv[1:]])
print("torch" in sys.modules, "torchvision" in sys.modules, code)
"""


def test_default_predict_runs_without_torch(sample_images: Path, tmp_path: Path) -> None:
    chips = sorted(sample_images.glob("*.jpg"))[:20]
    out = tmp_path / "preds.csv"
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT, *map(str, chips), "--out", str(out), "--workers", "2"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert run.stdout.split() == ["False", "False", "0"], run.stderr
    rows = _rows(out)
    assert len({r["path"] for r in rows}) == 20
    assert sum(r["error"] == "" for r in rows) >= 19  # a chip is one face
    # the same ages as the PyTorch student reads (the .pt file the ONNX one was exported from)
    from agedistill.serving.loading import default_model_path

    torch_out = tmp_path / "torch.csv"
    subprocess.run(
        [sys.executable, "-c", SCRIPT, *map(str, chips), "--out", str(torch_out),
         "--model", str(default_model_path()), "--detector", "blazeface"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    by_torch = {(r["path"], r["face"]): r for r in _rows(torch_out)}
    assert {(r["path"], r["face"]) for r in rows} == set(by_torch)
    for r in rows:
        if r["error"] == "":
            assert float(r["age"]) == pytest.approx(float(by_torch[r["path"], r["face"]]["age"]),
                                                     abs=0.02)  # fmt: skip


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_mtcnn_and_pytorch_models_still_work_with_torch(
    sample_images: Path, tmp_path: Path
) -> None:
    chip = sorted(sample_images.glob("*.jpg"))[0]
    out = tmp_path / "preds.csv"
    from agedistill.serving.loading import default_model_path

    run = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(chip), "--out", str(out), "--detector", "mtcnn",
         "--model", str(default_model_path())],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert run.stdout.split()[0] == "True" and run.stdout.split()[2] == "0", run.stderr
