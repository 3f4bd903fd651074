"""The moving average of the weights: its decay, its update, and swapping it in and out."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from agedistill.training.averaging import WeightAverage, ema_decay


def test_decay_warms_up_then_holds_at_one_minus_one_over_horizon():
    assert ema_decay(100, 0) == pytest.approx(1 / 10)
    assert ema_decay(100, 8) == pytest.approx(9 / 18)
    assert ema_decay(100, 10_000) == pytest.approx(0.99)
    assert ema_decay(0.5, 10_000) == 0.0  # a horizon under one step: no averaging


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))


def test_update_is_the_exponential_average_computed_by_hand():
    net = _net()
    avg = WeightAverage(net, horizon_steps=4)  # decay min(0.75, (1+n)/(10+n))
    w0 = net[0].weight.detach().clone()
    avg.update()  # first update copies the weights
    with torch.no_grad():
        net[0].weight.add_(1.0)
        net(torch.randn(8, 3))  # moves BatchNorm's running mean
    avg.update()  # n=1: decay 2/11
    d = 2 / 11
    expected = d * w0 + (1 - d) * (w0 + 1.0)
    assert torch.allclose(avg.average.module[0].weight, expected)
    rm = avg.average.module[1].running_mean
    assert torch.allclose(rm, (1 - d) * net[1].running_mean)  # started at zeros


def test_applied_swaps_the_average_in_and_the_weights_back():
    net = _net()
    avg = WeightAverage(net, horizon_steps=10)
    avg.update()
    own = net[0].weight.detach().clone()
    with torch.no_grad():
        net[0].weight.mul_(3.0)
    trained = net[0].weight.detach().clone()
    with avg.applied() as model:
        assert model is net
        assert torch.equal(net[0].weight, own)  # the average (one update: the first weights)
    assert torch.equal(net[0].weight, trained)
    with pytest.raises(RuntimeError), avg.applied():
        raise RuntimeError("validation failed")
    assert torch.equal(net[0].weight, trained)  # restored even when the block fails
