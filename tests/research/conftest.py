"""Fixtures of the research scripts' tests: a finished run's split, made small from real chips."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from agedistill.serving.age_model import AgeModel
from agedistill.serving.loading import load_age_model


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


@dataclass
class ServedReading:
    """The shipped model's reading of ``workspace``'s test part, as ``predict`` reads crops."""

    model: Path
    test: pd.DataFrame
    true: np.ndarray
    ages: dict[bool, tuple[np.ndarray, np.ndarray]]  # flip -> (age, age_std) per face


@pytest.fixture(scope="module")
def served(workspace: Path) -> ServedReading:
    model = load_age_model()
    test = pd.read_csv(workspace / "data" / "split" / "test.csv")
    crops = np.stack([
        np.asarray(Image.open(workspace / "data" / "aligned" / "crops" / c).resize(
            (model.input_size, model.input_size), Image.BILINEAR))
        for c in test["crop"]
    ])  # fmt: skip
    ages = {flip: AgeModel(model.net, model.config, model.path, flip).ages(crops)
            for flip in (False, True)}  # fmt: skip
    return ServedReading(model.path, test, test["age"].to_numpy(float), ages)
