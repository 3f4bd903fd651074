"""Ages from an age classifier's logits, in numpy: the torch-free serving path's arithmetic.

The same formulas as :mod:`agedistill.models.ordinal` (which training and the PyTorch models
use), for ONNX Runtime's outputs; ``tests/unit/test_distribution.py`` holds the two together.
"""

from __future__ import annotations

import numpy as np


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def median_age(logits: np.ndarray, min_age: int = 0) -> np.ndarray:
    """Median of ``softmax(logits)``, each class spread evenly over ``[age - 0.5, age + 0.5)``;
    (B, C) -> (B,).

    >>> float(median_age(np.array([[0.0, 0.0]], np.float32), min_age=10)[0])
    10.5
    """
    probs = _softmax(logits)
    cdf = np.cumsum(probs, axis=-1)
    k = np.minimum((cdf < 0.5).sum(axis=-1, keepdims=True), probs.shape[-1] - 1)
    p_k = np.take_along_axis(probs, k, axis=-1)
    before = np.take_along_axis(cdf, k, axis=-1) - p_k
    return (k + min_age - 0.5 + (0.5 - before) / p_k).squeeze(-1).astype(probs.dtype)


def age_std(logits: np.ndarray) -> np.ndarray:
    """Standard deviation of the age distribution ``softmax(logits)``; (B, C) -> (B,)."""
    probs = _softmax(logits)
    ages = np.arange(logits.shape[-1], dtype=probs.dtype)
    mean = probs @ ages
    return np.sqrt(np.clip(probs @ (ages * ages) - mean * mean, 0, None))


def mixture_logits(*logits: np.ndarray) -> np.ndarray:
    """Log-probabilities of the equal mixture of the distributions ``softmax(l)``.

    >>> np.exp(mixture_logits(np.array([[0.0, -1e9]]), np.array([[-1e9, 0.0]]))).round(3)
    array([[0.5, 0.5]])
    """
    logp = np.stack([x - x.max(-1, keepdims=True) for x in logits])
    logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
    top = logp.max(0)
    return (top + np.log(np.exp(logp - top).sum(0)) - np.log(len(logits))).astype(logp.dtype)


def normalized(crops: np.ndarray) -> np.ndarray:
    """uint8 faces (N, S, S, 3) -> float32 model input (N, 3, S, S), as
    :func:`agedistill.models.inputs.normalize`."""
    x = crops.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0)
    return np.ascontiguousarray((x - np.float32(0.5)) / np.float32(0.25))
