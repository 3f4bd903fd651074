"""Networks, age encodings, model files and batch prediction (imports nothing else in agedistill).

The network classes are re-exported here because MLflow pickles the student it logs, and models
logged before this package existed name them ``agedistill.models.ConvNet`` etc.
"""

from agedistill.models.nets import ConvNet, HintAdapter, RankTeacher

__all__ = ["ConvNet", "HintAdapter", "RankTeacher"]
