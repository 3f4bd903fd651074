import math

import pytest
import torch

from agedistill.training.losses import age_loss, hint_loss, kd_loss, mixed_age_loss


def test_kd_loss_matches_hand_computation():
    # uneven logits, so KL(teacher || student) and KL(student || teacher) differ
    s = torch.tensor([[1.0, 0.0, 0.0]])
    t = torch.tensor([[0.0, 2.0, 1.0]])
    temp = 2.0
    zs, zt = [0.5, 0.0, 0.0], [0.0, 1.0, 0.5]  # logits / T
    ps = [math.exp(v) / sum(math.exp(u) for u in zs) for v in zs]
    pt = [math.exp(v) / sum(math.exp(u) for u in zt) for v in zt]
    kl = sum(pt[i] * math.log(pt[i] / ps[i]) for i in range(3))
    reverse = sum(ps[i] * math.log(ps[i] / pt[i]) for i in range(3))
    assert abs(kl - reverse) > 0.01  # the hand values tell the two directions apart
    assert float(kd_loss(s, t, temp)) == pytest.approx(kl * temp**2, rel=1e-6)


def test_kd_loss_is_zero_for_identical_logits_and_averages_over_batch():
    z = torch.randn(4, 7)
    assert float(kd_loss(z, z, 3.0)) == pytest.approx(0.0, abs=1e-6)
    a, b = torch.randn(2, 5), torch.randn(2, 5)
    both = kd_loss(a, b, 1.5)
    each = (kd_loss(a[:1], b[:1], 1.5) + kd_loss(a[1:], b[1:], 1.5)) / 2
    assert float(both) == pytest.approx(float(each), rel=1e-6)


def test_kd_loss_rejects_bad_input():
    with pytest.raises(ValueError, match="differ in shape"):
        kd_loss(torch.zeros(2, 3), torch.zeros(2, 4), 1.0)
    with pytest.raises(ValueError, match="temperature"):
        kd_loss(torch.zeros(2, 3), torch.zeros(2, 3), 0.0)


def test_hint_loss_matches_hand_computation():
    s = torch.tensor([[[[1.0]], [[0.0]]]])  # (1, 2, 1, 1): unit vector e1
    t = torch.tensor([[[[1.0]], [[1.0]]]])  # normalised: (1/sqrt2, 1/sqrt2)
    expected = (1 - 1 / math.sqrt(2)) ** 2 + (0 - 1 / math.sqrt(2)) ** 2  # = 2 - sqrt(2)
    assert float(hint_loss(s, t)) == pytest.approx(expected, rel=1e-6)


def test_hint_loss_normalises_each_sample_and_averages_over_the_batch():
    # sample 0: (1, 0) vs (1, 1) -> 2 - sqrt(2); sample 1: (0, 3) vs (0, 1) -> 0 (its own scale)
    s = torch.tensor([[1.0, 0.0], [0.0, 3.0]]).view(2, 2, 1, 1)
    t = torch.tensor([[1.0, 1.0], [0.0, 1.0]]).view(2, 2, 1, 1)
    assert float(hint_loss(s, t)) == pytest.approx((2 - math.sqrt(2)) / 2, rel=1e-6)


def test_hint_loss_pools_teacher_to_student_size_and_ignores_scale():
    t = torch.randn(3, 4, 8, 8)
    s = torch.nn.functional.adaptive_avg_pool2d(t, (4, 4)) * 10
    assert float(hint_loss(s, t)) == pytest.approx(0.0, abs=1e-6)


def test_hint_loss_needs_matching_channels():
    with pytest.raises(ValueError, match="HintAdapter"):
        hint_loss(torch.zeros(1, 3, 4, 4), torch.zeros(1, 5, 4, 4))


def test_channel_norm_weighs_each_channel_alike_whatever_its_scale():
    # channel 0 matches up to scale (loss 0); channel 1: (1, 0) vs (0, 1) -> 2; mean over channels 1
    s = torch.tensor([[[[1.0, 2.0]], [[1.0, 0.0]]]])  # (1, 2, 1, 2)
    t = torch.tensor([[[[100.0, 200.0]], [[0.0, 1.0]]]])
    assert float(hint_loss(s, t, "channel")) == pytest.approx(1.0, rel=1e-6)
    assert float(hint_loss(s, t, "sample")) < 0.2  # one sample-wide norm: channel 1 is drowned


def test_attention_norm_compares_where_the_map_is_active():
    # the same squared activity per position in other channels: attention maps agree exactly
    s = torch.tensor([[[[3.0, 0.0]], [[0.0, 4.0]]]])  # sum of squares per position: (9, 16)
    t = torch.tensor([[[[0.0, 4.0]], [[3.0, 0.0]]]])  # (9, 16)
    assert float(hint_loss(s, t, "attention")) == pytest.approx(0.0, abs=1e-6)
    # active at the other position only: orthogonal maps, loss 2
    u = torch.tensor([[[[0.0, 1.0]], [[0.0, 0.0]]]])
    v = torch.tensor([[[[1.0, 0.0]], [[0.0, 0.0]]]])
    assert float(hint_loss(u, v, "attention")) == pytest.approx(2.0, rel=1e-6)
    with pytest.raises(ValueError, match="unknown hint norm 'cosine'"):
        hint_loss(u, v, "cosine")


def test_age_loss_without_options_is_cross_entropy():
    logits = torch.tensor([[0.0, math.log(3.0)]])  # probs 1/4, 3/4
    assert float(age_loss(logits, torch.tensor([1]))) == pytest.approx(-math.log(0.75))
    with pytest.raises(ValueError, match="mismatch"):
        age_loss(logits, torch.tensor([1, 0]))
    with pytest.raises(ValueError, match="non-negative"):
        age_loss(logits, torch.tensor([1]), label_sigma=-1.0)


def test_age_loss_gaussian_label_distribution_matches_hand_computation():
    # 3 classes, true class 1, sigma 1: target weights exp(-1/2), 1, exp(-1/2), normalised
    logits = torch.tensor([[0.0, math.log(2.0), 0.0]])  # probs 1/4, 1/2, 1/4
    w = [math.exp(-0.5), 1.0, math.exp(-0.5)]
    q = [v / sum(w) for v in w]
    expected = -(q[0] * math.log(0.25) + q[1] * math.log(0.5) + q[2] * math.log(0.25))
    got = age_loss(logits, torch.tensor([1]), label_sigma=1.0)
    assert float(got) == pytest.approx(expected, rel=1e-6)


def test_age_loss_mae_term_matches_hand_computation():
    # probs 1/4, 1/2, 1/4 over ages 0, 1, 2: expected age 1; true 2 -> |1 - 2| = 1
    logits = torch.tensor([[0.0, math.log(2.0), 0.0]])
    ce = -math.log(0.25)
    got = age_loss(logits, torch.tensor([2]), mae_weight=0.5)
    assert float(got) == pytest.approx(ce + 0.5 * 1.0, rel=1e-6)


def test_mixed_age_loss_matches_hand_computation():
    # face 0: probs .6 .3 .1 over ages 0 1 2 (expected 0.5), true 2, partner face 1 (true 0);
    # face 1: probs .2 .5 .3 (expected 1.1), true 0, partner face 0 (true 2)
    probs = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3]])
    logits = probs.log()
    labels, partner, lam = torch.tensor([2, 0]), torch.tensor([1, 0]), 0.75
    ce0 = 0.75 * -math.log(0.1) + 0.25 * -math.log(0.6)
    ce1 = 0.75 * -math.log(0.2) + 0.25 * -math.log(0.3)
    # blended ages: face 0 -> 0.75*2 + 0.25*0 = 1.5, face 1 -> 0.75*0 + 0.25*2 = 0.5
    l1 = (abs(0.5 - 1.5) + abs(1.1 - 0.5)) / 2
    expected = (ce0 + ce1) / 2 + 2.0 * l1
    got = mixed_age_loss(logits, labels, partner, lam, mae_weight=2.0)
    assert float(got) == pytest.approx(expected, rel=1e-6)
    # lam weights the face's own label: swapping it for 1 - lam gives another value
    swapped = mixed_age_loss(logits, labels, partner, 1 - lam, mae_weight=2.0)
    assert abs(float(swapped) - expected) > 0.1
    # lam = 1 is the plain loss, with or without a label distribution
    for sigma in (0.0, 2.0):
        plain = age_loss(logits, labels, sigma, 1.0)
        assert torch.allclose(mixed_age_loss(logits, labels, partner, 1.0, sigma, 1.0), plain)
