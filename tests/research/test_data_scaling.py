"""The data-scaling benchmark's subsets and curve fit (research/data_scaling.py)."""

import math

import numpy as np
import pandas as pd
import pytest

from research import data_scaling


@pytest.fixture
def rows() -> pd.DataFrame:
    ages = np.r_[np.full(400, 26), np.arange(0, 100), np.full(40, 70)]
    return pd.DataFrame({"age": ages})


def test_subsets_are_nested_and_keep_the_age_mix(rows):
    parts = {f: set(data_scaling.nested_subset(rows, f, seed=3)) for f in (0.125, 0.25, 0.5, 1.0)}
    assert parts[0.125] < parts[0.25] < parts[0.5] < parts[1.0] == set(range(len(rows)))
    quarter = rows.iloc[sorted(parts[0.25])]
    bins = quarter["age"] // 5
    assert (bins == 5).sum() == 101  # a quarter of the 405 faces aged 25-29
    assert (bins == 14).sum() == 11  # and of the 45 aged 70-74
    assert quarter["age"].max() >= 95  # every 5-year bin keeps at least one face
    other = set(data_scaling.nested_subset(rows, 0.25, seed=4))
    assert other != parts[0.25] and len(other) == len(parts[0.25])  # the seed draws the faces


def test_subset_refuses_a_fraction_outside_0_1(rows):
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="fraction"):
            data_scaling.nested_subset(rows, bad, seed=0)


def test_fit_recovers_a_known_power_law_and_inverts_it():
    n = np.array([1000.0, 2000, 4000, 8000, 16000])
    mae = 4.5 + 60.0 * n**-0.4
    fit = data_scaling.fit_power_law(n, mae)
    assert fit["a"] == pytest.approx(4.5, abs=0.02)
    assert fit["c"] == pytest.approx(0.4, abs=0.01)
    assert data_scaling.faces_for(fit, 4.5 + 60.0 * 32000**-0.4) == pytest.approx(32000, rel=0.05)
    assert math.isinf(data_scaling.faces_for(fit, 4.4))  # below the asymptote: never
    free = data_scaling.fit_power_law(n, mae, asymptote=False)
    assert free["a"] == 0.0 and free["rmse"] > fit["rmse"]
    # without an asymptote the curve keeps falling: it reaches 4.4 at some finite size
    assert math.isfinite(data_scaling.faces_for(free, 4.4))


def test_fit_refuses_an_mae_that_rises_with_more_faces():
    n = np.array([1000.0, 2000, 4000])
    with pytest.raises(ValueError, match="does not fall"):
        data_scaling.fit_power_law(n, np.array([5.0, 5.5, 6.0]))


ARCH = {"widths": [8, 16], "stem_stride": 2, "depthwise": False, "dropout": 0.0, "input_size": 32}


def test_same_weights_looks_at_tensors_not_file_bytes(tmp_path):
    import torch

    from agedistill.config import AgesParams, ModelParams
    from agedistill.models.files import build_model, save_model
    from agedistill.training.recipes import convnet_config

    config = convnet_config(ModelParams(**ARCH), AgesParams(min_age=0, max_age=4))
    model = build_model(config)
    save_model(tmp_path / "a.pt", model, config)
    save_model(tmp_path / "b.pt", model, config)  # another archive name inside the file
    assert (tmp_path / "a.pt").read_bytes() != (tmp_path / "b.pt").read_bytes()
    assert data_scaling.same_weights(tmp_path / "a.pt", tmp_path / "b.pt")
    with torch.no_grad():
        next(model.parameters()).add_(1e-3)
    save_model(tmp_path / "c.pt", model, config)
    assert not data_scaling.same_weights(tmp_path / "a.pt", tmp_path / "c.pt")
