"""Folding BatchNorm into convolutions keeps every output of the network, maps included."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from agedistill.models.backbones import BACKBONE_NAMES
from agedistill.models.files import build_model
from agedistill.models.folding import fold_batchnorm
from agedistill.models.nets import PretrainedNet


def _randomise_batchnorm(net: nn.Module) -> None:
    """Give every BatchNorm non-trivial statistics, so that folding has something to fold."""
    g = torch.Generator().manual_seed(0)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


@pytest.mark.parametrize("backbone", BACKBONE_NAMES)
def test_folded_backbones_give_the_same_maps_and_keep_no_batchnorm(backbone):
    net = PretrainedNet(backbone, 5).eval()
    _randomise_batchnorm(net)
    folded = fold_batchnorm(net)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.modules())  # the original is untouched
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        (emb, maps), (f_emb, f_maps) = net.forward_features(x), folded.forward_features(x)
        assert torch.allclose(net(x), folded(x), atol=1e-4)
    assert torch.allclose(emb, f_emb, atol=1e-4)
    for a, b in zip(maps, f_maps, strict=True):
        assert torch.allclose(a, b, atol=1e-4)


def test_a_folded_ranking_teacher_keeps_its_feature_maps():
    rt = build_model({"arch": "rank_teacher", "widths": [8, 16], "stem_stride": 2,
                      "depthwise": False, "dropout": 0.0, "input_size": 32, "k": 3,
                      "feature_dim": 4}).eval()  # fmt: skip
    _randomise_batchnorm(rt)
    folded = fold_batchnorm(rt)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        for a, b in zip(rt.feature_maps(x), folded.feature_maps(x), strict=True):
            assert torch.allclose(a, b, atol=1e-5)
