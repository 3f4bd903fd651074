import math

import numpy as np
import pytest
import torch

from agedistill.models.ordinal import (
    SequenceSampler,
    age_std,
    expected_age,
    median_age,
    mixture_logits,
    permutations,
    shuffle_sequences,
)


def test_expected_age_and_spread_by_hand():
    logits = torch.log(torch.tensor([[0.25, 0.75, 1e-12]]))
    assert float(expected_age(logits, min_age=20)) == pytest.approx(20.75, abs=1e-5)
    assert float(age_std(logits)) == pytest.approx(math.sqrt(0.75 - 0.75**2), abs=1e-5)


def test_expected_age_and_spread_stay_float32_under_bf16_autocast():
    """Training computes them inside bfloat16 autocast, which would run a matmul in bfloat16."""
    ages = torch.arange(101.0)
    logits = (-((ages - torch.tensor([[90.0], [35.0]])) ** 2) / 2).bfloat16()  # sd 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mean, std = expected_age(logits), age_std(logits)
    assert mean.dtype == std.dtype == torch.float32
    assert mean.tolist() == pytest.approx(expected_age(logits.float()).tolist(), rel=1e-6)
    assert std.tolist() == pytest.approx([1.0, 1.0], abs=0.01)  # bf16's E[a^2] - E[a]^2 gave 0


def test_mixture_of_two_distributions_by_hand():
    a = torch.log(torch.tensor([[0.5, 0.5, 0.0]]))  # mean 0.5
    b = torch.log(torch.tensor([[0.0, 0.5, 0.5]]))  # mean 1.5
    mix = mixture_logits(a, b)
    assert torch.allclose(mix.exp(), torch.tensor([[0.25, 0.5, 0.25]]))
    assert float(expected_age(mix, min_age=10)) == pytest.approx(11.0, abs=1e-5)
    # the spread of the mixture includes the two predictions' disagreement: sqrt(0.5) > 0.5 each
    assert float(age_std(mix)) == pytest.approx(math.sqrt(0.5), abs=1e-5)
    assert torch.allclose(mixture_logits(a), a.log_softmax(-1))  # one input: itself
    with pytest.raises(ValueError, match="at least one"):
        mixture_logits()


def test_permutations_are_all_distinct():
    p = permutations(4)
    assert p.shape == (24, 4)
    assert len({tuple(r) for r in p.tolist()}) == 24


def test_sampler_sequences_are_ordered_and_respect_the_gap():
    rng = np.random.default_rng(0)
    ages = rng.integers(0, 90, size=500)
    seqs = SequenceSampler(ages, k=4, min_gap=5).sample(300, rng)
    seq_ages = ages[seqs]
    assert np.all(np.diff(seq_ages, axis=1) >= 5)


def test_uniform_age_sampling_covers_rare_ages():
    ages = np.array([30] * 990 + [1, 2, 80, 85, 90, 95, 99, 100, 60, 70])
    rng = np.random.default_rng(1)
    seqs = SequenceSampler(ages, k=3, min_gap=5, sampling="uniform_age").sample(500, rng)
    used = set(ages[seqs].ravel().tolist())
    assert {1, 100, 30}.issubset(used)


def test_sampling_modes_weight_ages_differently():
    # 990 of 1,000 images are 30 years old: weighting by images puts 30 in nearly every sequence,
    # weighting ages uniformly only in some (one age of 11)
    ages = np.array([30] * 990 + [1, 2, 80, 85, 90, 95, 99, 100, 60, 70])
    share = {}
    for mode in ("uniform_age", "uniform_image"):
        seqs = SequenceSampler(ages, k=3, min_gap=5, sampling=mode).sample(
            500, np.random.default_rng(2)
        )
        share[mode] = float((ages[seqs] == 30).any(axis=1).mean())
    assert share["uniform_age"] < 0.5 and share["uniform_image"] > 0.9, share


def test_sampler_refuses_impossible_constraints():
    with pytest.raises(ValueError, match="lower k or min_gap"):
        SequenceSampler(np.array([10, 12, 14, 16]), k=3, min_gap=5)


def test_dense_constraint_still_samples_valid_sequences():
    ages = np.arange(0, 21)  # exactly 3 ages 10 apart fit only as (0, 10, 20)
    seqs = SequenceSampler(ages, k=3, min_gap=10).sample(20, np.random.default_rng(0))
    assert (ages[seqs] == [0, 10, 20]).all()


def test_shuffle_gathers_by_permutation_and_reaches_every_permutation():
    seqs = torch.arange(600 * 3).view(600, 3) * 7  # every value distinct, none equal to its index
    shuffled, target = shuffle_sequences(seqs, torch.Generator().manual_seed(0))
    perms = permutations(3)
    for b in range(len(seqs)):
        assert shuffled[b].tolist() == [int(seqs[b, perms[target[b], j]]) for j in range(3)]
    assert set(target.tolist()) == set(range(6))
    # recovering the permutation recovers the age order
    order = torch.argsort(perms[target], dim=1)
    assert torch.equal(torch.gather(shuffled, 1, order), seqs)


def test_dense_fallback_never_dead_ends():
    ages = np.array([0] + [10] * 200 + [19] * 200 + [21, 30])
    sampler = SequenceSampler(ages, k=3, min_gap=10, sampling="uniform_image")
    seqs = sampler.sample(200, np.random.default_rng(0))
    assert np.all(np.diff(ages[seqs], axis=1) >= 10)


def test_median_age_by_hand():
    probs = torch.tensor([[0.2, 0.2, 0.6], [0.6, 0.3, 0.1], [0.0, 1.0, 0.0]])
    logits = probs.clamp(min=1e-12).log()
    # cumulative 0.2, 0.4 | 0.6 | 0, 1: the median falls in class 2, 0 and 1
    expected = torch.tensor([2 - 0.5 + 0.1 / 0.6, 0 - 0.5 + 0.5 / 0.6, 1.0]) + 5
    assert torch.allclose(median_age(logits, min_age=5), expected, atol=1e-5)
    assert torch.allclose(expected_age(logits, 5), torch.tensor([6.4, 5.5, 6.0]), atol=1e-5)
