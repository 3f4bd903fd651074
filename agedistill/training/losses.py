"""Losses of the three training stages, each a plain function plus the equation it computes."""

from __future__ import annotations

from typing import get_args

import torch
import torch.nn.functional as F

from agedistill.config import HintNorm
from agedistill.models.ordinal import expected_age


def kd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    r"""Hinton et al. (2015) soft-target loss, scaled by :math:`T^2`.

    .. math:: T^2 \, \mathrm{KL}(\mathrm{softmax}(z_t/T) \,\|\, \mathrm{softmax}(z_s/T))

    averaged over the batch. Logits (B, C). The :math:`T^2` factor keeps the gradient scale of the
    soft term independent of the temperature.

    >>> float(kd_loss(torch.zeros(1, 3), torch.zeros(1, 3), 4.0))
    0.0
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ in shape"
        )
    if temperature <= 0:
        raise ValueError("temperature must be positive")
    # float32 even under bfloat16 autocast (train.precision: bf16), as in every loss here
    student_logits, teacher_logits = student_logits.float(), teacher_logits.float()
    log_p_s = F.log_softmax(student_logits / temperature, dim=-1)
    log_p_t = F.log_softmax(teacher_logits / temperature, dim=-1)
    kl = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
    return kl * temperature**2


HINT_NORMS: tuple[str, ...] = get_args(HintNorm)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x.float(), dim=-1)


def hint_loss(
    student_map: torch.Tensor, teacher_map: torch.Tensor, norm: HintNorm = "sample"
) -> torch.Tensor:
    r"""FitNets-style hint on normalised feature maps, in [0, 4].

    The teacher map is average-pooled to the student's spatial size first; each map (B, C, H, W)
    is then normalised by ``norm``, and the loss is the squared distance of the two, averaged over
    the batch (and, for ``channel``, over channels): :math:`2 - 2\cos` of the normalised vectors.

    * ``sample``: each sample's whole map, flattened, to unit length;
    * ``channel``: each channel's spatial map to unit length (every channel weighs the same,
      whatever its activation scale);
    * ``attention``: the spatial attention map :math:`\sum_c x_c^2` (Zagoruyko and Komodakis,
      attention transfer, 2017) to unit length: where the map is active, not what it holds.

    Normalising makes the loss indifferent to the two networks' activation scales, so one weight
    fits every pair.

    >>> float(hint_loss(torch.ones(1, 2, 2, 2), torch.ones(1, 2, 4, 4)))
    0.0
    """
    if norm not in HINT_NORMS:
        raise ValueError(f"unknown hint norm {norm!r}; choose from {', '.join(HINT_NORMS)}")
    if student_map.shape[:2] != teacher_map.shape[:2]:
        raise ValueError(
            f"student map {tuple(student_map.shape)} and teacher map {tuple(teacher_map.shape)} "
            "differ in batch or channels: project the student map with a HintAdapter first"
        )
    if teacher_map.shape[-2:] != student_map.shape[-2:]:
        teacher_map = F.adaptive_avg_pool2d(teacher_map, student_map.shape[-2:])
    if norm == "sample":
        s, t = _unit(student_map.flatten(1)), _unit(teacher_map.flatten(1))
    elif norm == "channel":
        s, t = _unit(student_map.flatten(2)), _unit(teacher_map.flatten(2))
    else:
        s = _unit(student_map.float().square().sum(1).flatten(1))
        t = _unit(teacher_map.float().square().sum(1).flatten(1))
    return (s - t).square().sum(dim=-1).mean()


def age_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    label_sigma: float = 0.0,
    mae_weight: float = 0.0,
    *,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Ground-truth loss over age classes: one-hot or Gaussian label distribution, plus an L1 term.

    With ``label_sigma`` :math:`\sigma = 0` this is plain cross-entropy. With :math:`\sigma > 0` the
    target is the label distribution :math:`q_k \propto \exp(-(k-y)^2 / 2\sigma^2)` over the classes
    (Gao et al., DLDL, 2017), and the loss is the cross-entropy :math:`-\sum_k q_k \log p_k`:
    neighbouring ages share credit, which is what ordinal labels mean. ``mae_weight``
    :math:`\lambda` adds :math:`\lambda\,|\sum_k k\,p_k - y|`, the error of the expected age the
    model is scored on (DLDL-v2, Gao et al. 2018). Logits (B, C); integer class labels (B,).
    ``weights`` (B,), optional: each face's share of the mean (both terms), e.g.
    :func:`~agedistill.training.age_balance.age_balance_weights`; None weights every face 1.

    >>> round(float(age_loss(torch.zeros(1, 3), torch.tensor([1]), mae_weight=1.0)), 4)
    1.0986
    """
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} mismatch")
    if label_sigma < 0 or mae_weight < 0:
        raise ValueError("label_sigma and mae_weight must be non-negative")
    if weights is not None and weights.shape != labels.shape:
        raise ValueError(
            f"weights {tuple(weights.shape)} and labels {tuple(labels.shape)} mismatch"
        )
    logits = logits.float()
    classes = torch.arange(logits.shape[1], device=logits.device, dtype=logits.dtype)
    reduction = "mean" if weights is None else "none"
    if label_sigma > 0:
        target = torch.softmax(
            -((classes[None, :] - labels[:, None].to(logits.dtype)) ** 2) / (2 * label_sigma**2),
            dim=1,
        )
        loss = F.cross_entropy(logits, target, reduction=reduction)
    else:
        loss = F.cross_entropy(logits, labels, reduction=reduction)
    if mae_weight > 0:
        l1 = (expected_age(logits) - labels.to(logits.dtype)).abs()
        loss = loss + mae_weight * (l1.mean() if weights is None else l1)
    return loss if weights is None else (weights.to(loss) * loss).mean()


def mixed_age_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    partner: torch.Tensor,
    lam: float,
    label_sigma: float = 0.0,
    mae_weight: float = 0.0,
    *,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    r""":func:`age_loss` of mixup blends ``lam * face + (1 - lam) * face[partner]``.

    The cross-entropy is blended, :math:`\lambda\,CE(y) + (1-\lambda)\,CE(y_{partner})` (the
    cross-entropy against the blended label distribution, since it is linear in the target), and
    the L1 term measures the expected age against the blended age
    :math:`\lambda y + (1-\lambda) y_{partner}`: the age a blend of two faces should be read as.
    With ``weights``, each cross-entropy is weighted by its face's weight and the L1 term by
    the blend of the two.

    >>> x, y = torch.zeros(2, 3), torch.tensor([0, 2])
    >>> round(float(mixed_age_loss(x, y, torch.tensor([1, 0]), 0.5, mae_weight=1.0)), 4)
    1.0986
    """
    logits = logits.float()
    partner_weights = None if weights is None else weights[partner]
    ce = lam * age_loss(logits, labels, label_sigma, weights=weights) + (1 - lam) * age_loss(
        logits, labels[partner], label_sigma, weights=partner_weights
    )
    if mae_weight < 0:
        raise ValueError("mae_weight must be non-negative")
    if mae_weight == 0:
        return ce
    target = lam * labels.to(logits.dtype) + (1 - lam) * labels[partner].to(logits.dtype)
    l1 = (expected_age(logits) - target).abs()
    if weights is None:
        return ce + mae_weight * l1.mean()
    blend = lam * weights + (1 - lam) * partner_weights
    return ce + mae_weight * (blend.to(l1) * l1).mean()
