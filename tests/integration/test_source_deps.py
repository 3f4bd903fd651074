"""Every source is a DVC dependency: editing the files or the table of any source reruns align."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from tests.integration.pipeline_repo import make_repo, run

pytestmark = pytest.mark.integration


def ran(output: str) -> list[str]:
    return re.findall(r"Running stage '([\w@]+)'", output)


def test_an_edit_to_any_source_reruns_align_and_only_that_inventory(repo, tmp_path):
    second = tmp_path / "second"
    chips = sorted((repo / "data/sample/images").iterdir())[:12]
    (second / "images").mkdir(parents=True)
    lines = ["path,age,gender"]
    for i, chip in enumerate(chips):
        shutil.copy(chip, second / "images" / f"{i:03d}.jpg")
        lines.append(f"images/{i:03d}.jpg,{20 + i},{'female' if i % 2 else 'male'}")
    (second / "labels.csv").write_text("\n".join(lines) + "\n")
    sources = [
        {"name": "utkface", "path": "data/sample/images", "reader": "utkface"},
        {"name": "second", "path": str(second), "reader": "csv", "csv": "labels.csv"},
    ]
    dst = make_repo(repo, tmp_path / "repo", {"align": {"sources": sources, "limit": 0}})
    first = run(["dvc", "repro", "split"], dst)
    # the two inventories are independent: DVC may run them in either order
    assert sorted(ran(first)[:2]) == ["inventory@0", "inventory@1"]
    assert ran(first)[2:] == ["align", "split"]
    manifest = (dst / "data/aligned/manifest.csv").read_text()
    assert manifest.count(",second,") >= 10  # the second source's faces, under its name
    split = json.loads((dst / "metrics/split.json").read_text())
    assert set(split["by_source"]) == {"utkface", "second"}
    assert ran(run(["dvc", "repro", "split"], dst)) == []

    # a label edited in the second source's table: its inventory and align rerun
    table = second / "labels.csv"
    table.write_text(table.read_text().replace("images/000.jpg,20,", "images/000.jpg,21,"))
    assert ran(run(["dvc", "repro", "align"], dst)) == ["inventory@1", "align"]
    # an image of the second source replaced
    shutil.copy(chips[-1], second / "images" / "001.jpg")
    assert ran(run(["dvc", "repro", "align"], dst)) == ["inventory@1", "align"]
    # a new file appears in the second source (not in its table: a reject row, still an input)
    Path(second / "images" / "new.jpg").write_bytes(chips[0].read_bytes())
    out = run(["dvc", "repro", "align"], dst)
    assert ran(out) == ["inventory@1", "align"]
    rejects = (dst / "data/aligned/rejects.csv").read_text()
    assert "new.jpg" in rejects and "not in label table" in rejects
