"""Age models from files: :func:`load_age_model` reads a PyTorch model file or an exported ONNX.

Either way the result is an :class:`~agedistill.serving.age_model.AgeModel` whose config has passed
:func:`~agedistill.serving.age_model.check_age_config`; nothing pickled is executed.
"""

from __future__ import annotations

import zipfile
from importlib import resources
from pathlib import Path

from agedistill.models.errors import ModelFileError
from agedistill.serving.age_model import DEFAULT_FLIP, AgeModel, check_age_config
from agedistill.serving.onnx_model import ONNX_SUFFIX, load_onnx_model


def default_model_path() -> Path:
    """The student shipped inside the package (``agedistill/assets/student.pt``)."""
    return Path(str(resources.files("agedistill") / "assets" / "student.pt"))


def default_serving_path() -> Path:
    """The shipped student exported to ONNX (``agedistill/assets/student.onnx``): what the
    ``predict`` command runs by default, without loading torch."""
    return Path(str(resources.files("agedistill") / "assets" / "student.onnx"))


def load_age_model(path: str | Path | None = None, flip: bool = DEFAULT_FLIP) -> AgeModel:
    """Load an age model without executing pickled code; ``None`` loads the shipped student.

    Parameters
    ----------
    path : str or Path, optional
        A model file written by :func:`agedistill.models.files.save_model`, or a ``.onnx`` file
        written by ``agedistill export`` (:mod:`agedistill.serving.onnx_model`).
    flip : bool
        Test-time flip augmentation (:attr:`~agedistill.serving.age_model.AgeModel.flip`), on
        by default: lower error, half the faces/s of the age model alone.

    Returns
    -------
    AgeModel

    Raises
    ------
    ModelFileError
        One line naming the file and the problem: missing, corrupt, not an agedistill model,
        another architecture, or another major version.
    """
    path = Path(path) if path is not None else default_model_path()
    if path.suffix.lower() == ONNX_SUFFIX:  # an exported model, run through ONNX Runtime
        return load_onnx_model(path, flip)
    if path.is_file() and not zipfile.is_zipfile(path):
        # torch.save has written zip archives since PyTorch 1.6: anything else is not ours
        raise ModelFileError(
            f"{path}: not a PyTorch model file (corrupt, truncated or another kind)"
        )
    from agedistill.models.files import load_model  # torch: only for PyTorch model files

    try:
        net, config = load_model(path)
    except ModelFileError:
        raise
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        # a readable file whose config does not describe a known network
        raise ModelFileError(f"{path}: malformed model config ({type(e).__name__}: {e})") from None
    check_age_config(config, path)
    return AgeModel(net, config, path, flip)
