"""Fixtures of the research scripts' tests: a finished run's split, made small from real chips."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from PIL import Image


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, repo: Path, sample_images: Path) -> Path:
    """A run's test part of 30 real sample chips from two sources, as ``split`` writes it."""
    ws = tmp_path_factory.mktemp("run")
    crops = ws / "data" / "aligned" / "crops"
    crops.mkdir(parents=True)
    (ws / "data" / "split").mkdir()
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["evaluate"].update(latency_batch=2, latency_repeats=1)  # speed is not scored here
    (ws / "params.yaml").write_text(yaml.safe_dump(params))
    rows = []
    for i, chip in enumerate(sorted(sample_images.glob("*.jpg"))[::33][:30]):
        name = f"{i:06d}.png"
        Image.open(chip).convert("RGB").resize((144, 144)).save(crops / name)
        rows.append({"crop": name, "age": min(int(chip.name.split("_")[0]), 100),
                     "source": "a" if i % 2 else "b"})  # fmt: skip
    pd.DataFrame(rows).to_csv(ws / "data" / "split" / "test.csv", index=False)
    return ws
