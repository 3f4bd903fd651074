"""The numpy age arithmetic of the torch-free serving path equals training's torch functions."""

from __future__ import annotations

import numpy as np
import torch

from agedistill.models import ordinal
from agedistill.models.inputs import normalize
from agedistill.serving import distribution


def test_numpy_and_torch_give_the_same_ages() -> None:
    logits = np.random.default_rng(0).normal(0, 3, (64, 101)).astype(np.float32)
    other = np.random.default_rng(1).normal(0, 3, (64, 101)).astype(np.float32)
    t, u = torch.from_numpy(logits), torch.from_numpy(other)
    # the median interpolates inside its class by (0.5 - cdf before) / p: float32 rounding of the
    # cumulative sum, in another order on each side, is divided by that class's probability
    np.testing.assert_allclose(
        distribution.median_age(logits, 3), ordinal.median_age(t, 3).numpy(), atol=2e-3
    )
    # the std is sqrt(E[a^2] - E[a]^2): float32 cancellation in a ~1,000-year^2 second moment,
    # summed in another order on each CPU, leaves up to a few 1e-4 years
    np.testing.assert_allclose(distribution.age_std(logits), ordinal.age_std(t).numpy(), atol=5e-4)
    np.testing.assert_allclose(
        distribution.mixture_logits(logits, other), ordinal.mixture_logits(t, u).numpy(), atol=1e-5
    )


def test_numpy_normalisation_is_torchs_bit_for_bit() -> None:
    crops = np.random.default_rng(2).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    ref = normalize(torch.from_numpy(crops).permute(0, 3, 1, 2)).numpy()
    assert np.array_equal(distribution.normalized(crops), ref)


def test_the_mixture_keeps_float32() -> None:
    logits = np.zeros((2, 5), np.float32)
    assert distribution.mixture_logits(logits, logits).dtype == np.float32
