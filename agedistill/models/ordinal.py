"""Age encodings and the ordered-sequence sampler of the ranking teacher."""

from __future__ import annotations

import itertools
import math
from functools import lru_cache

import numpy as np
import torch


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 if it is of a lower precision (bfloat16 logits under autocast)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def expected_age(logits: torch.Tensor, min_age: int = 0) -> torch.Tensor:
    """Expectation of the age distribution ``softmax(logits)``; logits (B, C) -> (B,).

    >>> expected_age(torch.tensor([[0.0, 0.0]]), min_age=10)
    tensor([10.5000])
    """
    probs = _at_least_float32(logits).softmax(dim=-1)
    ages = torch.arange(logits.shape[-1], dtype=probs.dtype, device=probs.device) + min_age
    return (probs * ages).sum(dim=-1)  # not a matmul: bfloat16 autocast leaves this float32


def median_age(logits: torch.Tensor, min_age: int = 0) -> torch.Tensor:
    """Median of the age distribution ``softmax(logits)``, each class spread evenly over
    ``[age - 0.5, age + 0.5)``; logits (B, C) -> (B,).

    Of all point estimates, the one with the least expected absolute error under the predicted
    distribution (the expectation has the least squared error).

    >>> median_age(torch.tensor([[0.0, 0.0]]), min_age=10)
    tensor([10.5000])
    """
    probs = logits.softmax(dim=-1)
    cdf = probs.cumsum(dim=-1)
    k = (cdf < 0.5).sum(dim=-1, keepdim=True).clamp(max=probs.shape[-1] - 1)  # the median's class
    p_k = probs.gather(-1, k)
    before = cdf.gather(-1, k) - p_k
    return (k + min_age - 0.5 + (0.5 - before) / p_k).squeeze(-1)


def age_std(logits: torch.Tensor) -> torch.Tensor:
    """Standard deviation of the age distribution; logits (B, C) -> (B,)."""
    probs = _at_least_float32(logits).softmax(dim=-1)
    ages = torch.arange(logits.shape[-1], dtype=probs.dtype, device=probs.device)
    mean = (probs * ages).sum(dim=-1, keepdim=True)  # float32 under bfloat16 autocast too
    return (probs * (ages - mean).square()).sum(dim=-1).sqrt()


def mixture_logits(*logits: torch.Tensor) -> torch.Tensor:
    """Log-probabilities of the equal mixture of the distributions ``softmax(l)`` for each ``l``.

    Its :func:`expected_age` is the mean of each input's expected age, and its :func:`age_std`
    includes their disagreement: what a test-time-augmented prediction should report.

    >>> mixture_logits(torch.tensor([[0.0, -1e9]]), torch.tensor([[-1e9, 0.0]])).exp()
    tensor([[0.5000, 0.5000]])
    """
    if not logits:
        raise ValueError("mixture_logits needs at least one tensor of logits")
    logp = torch.stack([x.log_softmax(dim=-1) for x in logits])
    return torch.logsumexp(logp, dim=0) - math.log(len(logits))  # a constant when traced


@lru_cache(maxsize=8)
def permutations(k: int) -> torch.Tensor:
    """All ``k!`` permutations of ``range(k)`` in lexicographic order, shape (k!, k)."""
    return torch.tensor(list(itertools.permutations(range(k))), dtype=torch.long)


class SequenceSampler:
    """Draw K images with distinct ages, at least ``min_gap`` years apart, in age order.

    ``sampling='uniform_age'`` draws the ages uniformly over the ages present, so the rare old and
    young ages are covered as often as the common ones; ``'uniform_image'`` weights each age by its
    number of images.
    """

    def __init__(self, ages: np.ndarray, k: int, min_gap: int, sampling: str = "uniform_age"):
        ages = np.asarray(ages).astype(int)
        if sampling not in ("uniform_age", "uniform_image"):
            raise ValueError(f"unknown sampling {sampling!r}")
        self.k, self.min_gap = k, min_gap
        self.unique = np.unique(ages)
        self.by_age = {a: np.flatnonzero(ages == a) for a in self.unique}
        counts = np.array([len(self.by_age[a]) for a in self.unique], dtype=float)
        self.weights = counts / counts.sum() if sampling == "uniform_image" else None
        if self._max_chain() < k:
            raise ValueError(
                f"cannot draw {k} ages at least {min_gap} years apart from ages "
                f"{self.unique.min()}..{self.unique.max()}: lower k or min_gap"
            )

    def _chain_from(self) -> np.ndarray:
        """Longest gap-respecting chain of ages starting at each unique age (greedy is optimal)."""
        n = len(self.unique)
        chain = np.ones(n, dtype=int)
        nxt = np.searchsorted(self.unique, self.unique + self.min_gap)
        for i in range(n - 1, -1, -1):
            if nxt[i] < n:
                chain[i] = 1 + chain[nxt[i]]
        return chain

    def _max_chain(self) -> int:
        return int(self._chain_from().max())

    def _ages(self, rng: np.random.Generator) -> np.ndarray:
        for _ in range(1000):
            chosen = np.sort(rng.choice(self.unique, self.k, replace=False, p=self.weights))
            if np.all(np.diff(chosen) >= self.min_gap):
                return chosen
        # dense constraint: build left to right, only among ages that still leave room for the rest
        chain = self._chain_from()
        chosen: list[int] = []
        lo = self.unique.min()
        for i in range(self.k):
            ok = self.unique[(self.unique >= lo) & (chain >= self.k - i)]
            a = int(rng.choice(ok))
            chosen.append(a)
            lo = a + self.min_gap
        return np.array(chosen)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` sequences of image indices, each sorted by increasing age: shape (n, k)."""
        out = np.empty((n, self.k), dtype=np.int64)
        for i in range(n):
            out[i] = [rng.choice(self.by_age[a]) for a in self._ages(rng)]
        return out


def shuffle_sequences(
    seqs: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Shuffle each age-ordered sequence by a uniformly drawn permutation.

    Returns ``(shuffled, target)`` where ``shuffled[b, j] = seqs[b, perm[j]]`` and ``target[b]`` is
    the index of ``perm`` in :func:`permutations`: recovering it recovers the age order.
    """
    n, k = seqs.shape
    perms = permutations(k)
    target = torch.randint(len(perms), (n,), generator=generator)
    shuffled = torch.gather(seqs, 1, perms[target])
    return shuffled, target
