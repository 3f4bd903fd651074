"""Age-balanced weights of the ground-truth term, and the losses that read them."""

from __future__ import annotations

import math

import pytest
import torch

from agedistill.config import DistillParams, TrainParams
from agedistill.training.age_balance import SMOOTHING_YEARS, age_balance_weights
from agedistill.training.losses import age_loss, mixed_age_loss


def test_weights_follow_the_smoothed_count_by_hand():
    labels = torch.tensor([0, 0, 0, 10])  # three faces of class 0, one of class 10
    w = age_balance_weights(labels, 11, 0.5)
    g = math.exp(-(10**2) / (2 * SMOOTHING_YEARS**2))  # class 10's reach into class 0, and back
    d0, d10 = 3 + 1 * g, 1 + 3 * g  # smoothed densities at classes 0 and 10
    raw = [d0**-0.5] * 3 + [d10**-0.5]
    mean = sum(raw) / 4
    assert w.tolist() == pytest.approx([r / mean for r in raw], rel=1e-6)
    assert float(w.mean()) == pytest.approx(1.0)
    assert w[3] / w[0] == pytest.approx(math.sqrt(d0 / d10), rel=1e-6)  # the rare age lifted


def test_neighbouring_ages_share_their_count():
    # class 5 alone, but next to four faces of class 4: less lifted than class 30, alone and far
    labels = torch.tensor([4, 4, 4, 4, 5, 30])
    w = age_balance_weights(labels, 31, 1.0)
    assert w[0] < w[4] < w[5]


def test_power_zero_weights_every_face_alike_and_bad_input_is_refused():
    assert age_balance_weights(torch.tensor([1, 1, 7]), 8, 0.0).tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="non-negative"):
        age_balance_weights(torch.tensor([1]), 8, -0.5)
    with pytest.raises(ValueError, match=r"lie in \[0, 8\)"):
        age_balance_weights(torch.tensor([1, 8]), 8, 0.5)
    with pytest.raises(ValueError, match="at least one"):
        age_balance_weights(torch.tensor([], dtype=torch.long), 8, 0.5)


def test_the_param_is_a_power_between_zero_and_one():
    train = TrainParams()
    assert DistillParams(train=train).age_balance == 0.25  # the shipped recipe
    assert DistillParams(train=train, age_balance=0.5).age_balance == 0.5
    with pytest.raises(ValueError):
        DistillParams(train=train, age_balance=1.5)


def test_weighted_loss_is_the_weighted_mean_of_each_faces_loss():
    torch.manual_seed(0)
    logits, labels = torch.randn(4, 6), torch.tensor([0, 2, 5, 5])
    w = torch.tensor([0.5, 1.5, 1.0, 1.0])
    for sigma, mae in ((0.0, 0.0), (1.5, 0.3)):
        each = torch.stack([age_loss(logits[i : i + 1], labels[i : i + 1], sigma, mae)
                            for i in range(4)])  # fmt: skip
        got = age_loss(logits, labels, sigma, mae, weights=w)
        assert float(got) == pytest.approx(float((w * each).mean()), rel=1e-6)
        unit = age_loss(logits, labels, sigma, mae, weights=torch.ones(4))
        assert float(unit) == pytest.approx(float(age_loss(logits, labels, sigma, mae)), rel=1e-6)
    with pytest.raises(ValueError, match="weights"):
        age_loss(logits, labels, weights=torch.ones(3))


def test_weighted_mixup_loss_weights_each_side_by_its_face():
    torch.manual_seed(1)
    logits, labels, partner = torch.randn(2, 6), torch.tensor([1, 4]), torch.tensor([1, 0])
    w, lam = torch.tensor([2.0, 0.5]), 0.7
    got = mixed_age_loss(logits, labels, partner, lam, 0.0, 0.2, weights=w)
    ce = lam * age_loss(logits, labels, weights=w) + (1 - lam) * age_loss(
        logits, labels[partner], weights=w[partner]
    )
    probs = torch.softmax(logits, 1)
    expected = (probs * torch.arange(6.0)).sum(1)
    target = lam * labels.float() + (1 - lam) * labels[partner].float()
    blend = lam * w + (1 - lam) * w[partner]
    assert float(got) == pytest.approx(float(ce + 0.2 * (blend * (expected - target).abs()).mean()))
    plain = mixed_age_loss(logits, labels, partner, lam, 0.0, 0.2, weights=torch.ones(2))
    assert float(plain) == pytest.approx(
        float(mixed_age_loss(logits, labels, partner, lam, 0.0, 0.2))
    )
