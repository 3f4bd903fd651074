"""Per-face weights of the ground-truth term that lift ages the training part has few faces of.

Label-distribution smoothing (Yang et al., "Delving into Deep Imbalanced Regression", ICML 2021):
the count of faces per age class is smoothed with a Gaussian over neighbouring ages, since a face
of 67 says much about 66 and 68, and a face's weight is that smoothed density to the power
``-power``. ``power`` 0 weights every face 1; 1 is inverse density; 0.5 is its square root.
"""

from __future__ import annotations

import torch

SMOOTHING_YEARS = 2.0  # sigma of the Gaussian over neighbouring ages


def age_balance_weights(labels: torch.Tensor, n_classes: int, power: float) -> torch.Tensor:
    """One weight per face of ``labels`` (integer age classes): mean 1 over the faces given.

    >>> age_balance_weights(torch.tensor([0, 0, 0, 5]), 6, 0.0).tolist()
    [1.0, 1.0, 1.0, 1.0]
    """
    if power < 0:
        raise ValueError(f"age balance power must be non-negative, got {power}")
    if labels.numel() == 0:
        raise ValueError("age balance weights need at least one labelled face")
    if int(labels.min()) < 0 or int(labels.max()) >= n_classes:
        raise ValueError(f"labels must lie in [0, {n_classes}): got {int(labels.min())}..."
                         f"{int(labels.max())}")  # fmt: skip
    labels = labels.long()
    if power == 0:
        return torch.ones(labels.shape, dtype=torch.float32)
    counts = torch.bincount(labels, minlength=n_classes).double()
    ages = torch.arange(n_classes, dtype=torch.float64)
    kernel = torch.exp(-((ages[:, None] - ages[None, :]) ** 2) / (2 * SMOOTHING_YEARS**2))
    density = kernel @ counts  # every class a face has is > 0: its own count is in the sum
    weights = density[labels] ** -power
    return (weights / weights.mean()).float()
