"""Networks, age encodings, model files and batch prediction (imports nothing else in agedistill).

The network classes are re-exported here for students logged to MLflow as pickled modules, which
name them ``agedistill.models.ConvNet`` etc. (the path before this package existed). MLflow 3's
default, an exported program, loads without agedistill at all. They are imported on first use,
so that importing a torch-free module of this package (:mod:`agedistill.models.errors`) does not
load torch.
"""

from typing import Any

__all__ = ["ConvNet", "HintAdapter", "RankTeacher"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from agedistill.models import nets

        return getattr(nets, name)
    raise AttributeError(f"module 'agedistill.models' has no attribute {name!r}")
