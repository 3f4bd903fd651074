"""One training engine shared by the teachers and the student."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from agedistill.data import normalize
from agedistill.ordinal import expected_age, mixture_logits

LossFn = Callable[[Any], tuple[torch.Tensor, dict[str, float]]]


def train_one_epoch(
    modules: Iterable[nn.Module],
    loss_fn: LossFn,
    batches: Iterable[Any],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    after_backward: Callable[[], None] | None = None,
    after_step: Callable[[], None] | None = None,
) -> dict[str, float]:
    """Run ``loss_fn`` over ``batches`` with one optimiser step each; return mean logged values.

    ``loss_fn(batch)`` returns the loss to minimise and a dict of floats to average (it owns the
    forward pass, so the same engine serves cross-entropy, permutation and distillation losses).
    ``after_backward`` runs between ``backward`` and the step (data-parallel gradient averaging),
    ``after_step`` after each step (a moving average of the weights).
    """
    for m in modules:
        m.train()
    sums: dict[str, float] = {}
    n = 0
    for batch in batches:
        loss, logs = loss_fn(batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()}: lower the learning rate")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if after_backward is not None:
            after_backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if after_step is not None:
            after_step()
        for k, v in logs.items():
            sums[k] = sums.get(k, 0.0) + v
        n += 1
    return {k: v / max(n, 1) for k, v in sums.items()}


@torch.inference_mode()
def predict_logits(
    model: nn.Module, images: torch.Tensor, batch_size: int = 256, flip: bool = False
) -> torch.Tensor:
    """Logits for uint8 faces (N, 3, H, W), in eval mode, batch by batch.

    ``flip`` (test-time augmentation): each face is also fed mirrored left-right, and the result is
    the log of the two class distributions' average (:func:`agedistill.ordinal.mixture_logits`).
    """
    model.eval()
    dev = next(model.parameters()).device

    def forward(batch: torch.Tensor) -> torch.Tensor:
        x = normalize(batch).to(dev)
        out = model(x)
        return (mixture_logits(out, model(x.flip(-1))) if flip else out).cpu()

    outs = [forward(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    return torch.cat(outs) if outs else torch.empty(0)


def predict_ages(
    model: nn.Module, images: torch.Tensor, min_age: int, flip: bool = False
) -> torch.Tensor:
    """Expected age (over the class probabilities) of each uint8 face (N, 3, H, W)."""
    return expected_age(predict_logits(model, images, flip=flip), min_age)


def age_mae(model: nn.Module, images: torch.Tensor, ages: torch.Tensor, min_age: int) -> float:
    """Mean absolute error of the expected age over a table of faces."""
    return float((predict_ages(model, images, min_age) - ages.float()).abs().mean())
