"""Several trained class teachers read as one: the mean of their age log-probabilities."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from agedistill.models.errors import ModelFileError
from agedistill.models.files import load_model

# config keys every member must share: they fix what an output row means and what a member reads
_SHARED_KEYS = ("input_size", "num_classes", "min_age")


class TeacherEnsemble(nn.Module):
    """Class teachers averaged in log-probability: ``softmax(forward(x) / T)`` is their
    normalised geometric mean at temperature ``T``, what a soft-target loss reads as logits."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs two or more class teachers, got {len(members)}")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logp = [F.log_softmax(m(x).float(), dim=1) for m in self.members]
        return torch.stack(logp).mean(dim=0)


def load_ensemble(paths: Sequence[str | Path]) -> tuple[TeacherEnsemble, dict[str, Any]]:
    """Load class-teacher files as one :class:`TeacherEnsemble` and the first file's config.

    Raises :class:`ModelFileError` naming the file whose input side, age classes or first age
    differ from the first file's (their outputs could not be averaged row by row).
    """
    loaded = [load_model(p) for p in paths]
    first_config = loaded[0][1]
    for path, (_, config) in zip(paths[1:], loaded[1:], strict=True):
        for key in _SHARED_KEYS:
            if config.get(key) != first_config.get(key):
                raise ModelFileError(
                    f"{path}: {key} {config.get(key)!r}, but {paths[0]} has "
                    f"{first_config.get(key)!r}; ensemble members must agree on {key}"
                )
    return TeacherEnsemble([net for net, _ in loaded]), first_config
