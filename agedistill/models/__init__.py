"""Networks, age encodings, model files and batch prediction (imports nothing else in agedistill).

The network classes are re-exported here for students logged to MLflow as pickled modules, which
name them ``agedistill.models.ConvNet`` etc. (the path before this package existed). MLflow 3's
default, an exported program, loads without agedistill at all.
"""

from agedistill.models.nets import ConvNet, HintAdapter, RankTeacher

__all__ = ["ConvNet", "HintAdapter", "RankTeacher"]
