"""How training runs its arithmetic: float32 or bfloat16 autocast, NCHW or channels-last.

Both are speed knobs (``train.precision``, ``train.channels_last``). On a CPU with AMX or
AVX-512 BF16, bfloat16 autocast with channels-last tensors trains the conv nets about twice as
fast as float32 (``benchmarks/bench_precision.py``); the weights, the optimiser state and the
losses stay float32, so checkpoints and model files are the same either way. On a CPU without
native bfloat16 the same arithmetic is emulated and slower than float32: :func:`check_precision`
says so.
"""

from __future__ import annotations

import warnings
from contextlib import AbstractContextManager

import torch
from torch import nn

from agedistill.config import PRECISIONS


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` runs bfloat16 convolutions natively (AMX / AVX-512 BF16, or a GPU)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return False


def check_precision(precision: str, device: torch.device) -> None:
    """Raise on an unknown precision; warn when bf16 would be emulated (slower than fp32)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    if precision == "bf16" and not native_bf16(device):
        warnings.warn(
            f"train.precision=bf16 on a {device.type} without native bfloat16: it will run "
            "emulated, slower than fp32; set train.precision: fp32 on this machine",
            RuntimeWarning,
            stacklevel=2,
        )


def autocast(precision: str, device: torch.device) -> AbstractContextManager:
    """The autocast context of a training step: bfloat16 for ``bf16``, a no-op for ``fp32``."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def to_memory_format(modules: list[nn.Module], channels_last: bool) -> None:
    """Lay out the conv weights channels-last (the inputs follow the weights' layout)."""
    if channels_last:
        for m in modules:
            m.to(memory_format=torch.channels_last)
