"""The shipped student is the run the README names, and the README and model card quote its MAE."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("utkface", "aaf", "appa_real")  # the column order of both tables
README = " ".join((ROOT / "README.md").read_text().split())  # sentences may wrap anywhere
CARD = "agedistill/assets/MODEL_CARD.md"


def _shipped_run() -> Path:
    found = re.search(r"Shipped: `agedistill exp \S+ -n ([\w.-]+)` \(`(results/[\w.-]+)/`", README)
    assert found, "README lost its 'Shipped: `agedistill exp PROFILE -n RUN` (`results/RUN/`' line"
    run = ROOT / found.group(2)
    assert run.name == found.group(1) and (run / "evaluate.json").is_file(), run
    return run


RUN = _shipped_run()
METRICS = json.loads((RUN / "evaluate.json").read_text())


def _mae(model: str, key: str) -> list[str]:
    """``model``'s MAE on each source's test part, as the tables print it."""
    return [f"{METRICS[model]['by_source'][s][key]:.2f}" for s in SOURCES]


def _row(text: str, label: str) -> list[str]:
    """The first number of each cell after the label of the table row that starts with
    ``label``, for the three sources."""
    rows = [line for line in text.splitlines() if line.startswith(f"| {label}")]
    assert len(rows) == 1, f"{len(rows)} rows start with {label!r}"
    cells = rows[0].strip("|").split("|")[1 : 1 + len(SOURCES)]
    return [re.search(r"\d+\.\d+", cell).group(0) for cell in cells]


def test_the_shipped_student_file_is_the_named_run_s_output():
    lock = yaml.safe_load((RUN / "dvc.lock.yaml").read_text())
    (out,) = (o for o in lock["stages"]["distill"]["outs"] if o["path"] == "models/student.pt")
    shipped = (ROOT / "agedistill/assets/student.pt").read_bytes()
    assert hashlib.md5(shipped).hexdigest() == out["md5"]


def test_the_readme_opening_quotes_the_shipped_run_s_mae():
    found = re.search(
        r"test MAE ([\d.]+) on UTKFace, ([\d.]+) on All-Age-Faces, ([\d.]+) on APPA-REAL as "
        r"`predict` reads each face \(both ways; ([\d.]+) / ([\d.]+) / ([\d.]+) read once\)",
        README,
    )
    assert found, "README's opening lost its sentence of test MAEs"
    assert list(found.groups()) == _mae("student", "mae_flip") + _mae("student", "mae")


@pytest.mark.parametrize(
    ("doc", "label", "model", "key"),
    [
        ("README.md", "**student**", "student", "mae_flip"),
        ("README.md", "student, one reading per face", "student", "mae"),
        ("README.md", "twin", "twin", "mae"),
        ("README.md", "class teacher", "class_teacher", "mae"),
        ("README.md", "ranking teacher", "rank_teacher", "mae"),
        (CARD, "MAE as `predict` reads it", "student", "mae_flip"),
        (CARD, "MAE, this model, one reading", "student", "mae"),
        (CARD, "MAE, twin", "twin", "mae"),
        (CARD, "MAE, class teacher", "class_teacher", "mae"),
    ],
)
def test_the_results_tables_quote_the_shipped_run(doc: str, label: str, model: str, key: str):
    assert _row((ROOT / doc).read_text(), label) == _mae(model, key)
