"""Class teachers read as one: the mean of their log-probabilities, from their own files."""

from __future__ import annotations

import pytest
import torch

from agedistill.config import AgesParams, ModelParams
from agedistill.models.ensemble import TeacherEnsemble, load_ensemble
from agedistill.models.files import ModelFileError, build_model, save_model
from agedistill.training.losses import kd_loss
from agedistill.training.recipes import convnet_config


def _saved(tmp_path, name: str, seed: int, input_size: int = 32, max_age: int = 10):
    config = convnet_config(
        ModelParams(widths=[8, 16], stem_stride=2, depthwise=False, dropout=0.0,
                    input_size=input_size),
        AgesParams(min_age=0, max_age=max_age),
    )  # fmt: skip
    torch.manual_seed(seed)
    model = build_model(config).eval()
    path = tmp_path / f"{name}.pt"
    save_model(path, model, config)
    return path, model


def test_the_ensemble_is_the_normalised_geometric_mean_of_its_members(tmp_path):
    (pa, a), (pb, b) = _saved(tmp_path, "a", 0), _saved(tmp_path, "b", 1)
    ensemble, config = load_ensemble([pa, pb])
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        pa_, pb_ = a(x).softmax(1), b(x).softmax(1)
        got = ensemble.eval()(x).softmax(1)
    geometric = (pa_ * pb_).sqrt()
    assert torch.allclose(got, geometric / geometric.sum(1, keepdim=True), atol=1e-6)
    assert not torch.allclose(pa_, pb_, atol=1e-3)  # two different members, not one twice
    assert config["input_size"] == 32 and config["num_classes"] == 11


def test_the_soft_target_loss_reads_the_ensemble_as_one_teacher(tmp_path):
    (pa, a), (pb, b) = _saved(tmp_path, "a", 0), _saved(tmp_path, "b", 1)
    ensemble, _ = load_ensemble([pa, pb])
    x, student, temperature = torch.randn(4, 3, 32, 32), torch.randn(4, 11), 2.0
    with torch.no_grad():
        got = kd_loss(student, ensemble.eval()(x), temperature)
        # by hand: softmax(mean log-probability / T), the targets of the two teachers at once
        target = ((a(x).log_softmax(1) + b(x).log_softmax(1)) / 2 / temperature).softmax(1)
    log_s = (student / temperature).log_softmax(1)
    want = (target * (target.log() - log_s)).sum(1).mean() * temperature**2
    assert torch.isclose(got, want, rtol=1e-5)


def test_members_that_disagree_on_input_side_or_ages_are_refused_by_name(tmp_path):
    pa, _ = _saved(tmp_path, "a", 0)
    pb, _ = _saved(tmp_path, "side", 1, input_size=48)
    pc, _ = _saved(tmp_path, "ages", 2, max_age=20)
    with pytest.raises(ModelFileError, match=r"side\.pt: input_size 48, but .*a\.pt has 32"):
        load_ensemble([pa, pb])
    with pytest.raises(ModelFileError, match=r"ages\.pt: num_classes 21"):
        load_ensemble([pa, pc])
    with pytest.raises(ValueError, match="two or more"):
        TeacherEnsemble([build_model(torch.load(pa, weights_only=True)["config"])])
