"""Calibrate a trained age model's ``age_std`` on a validation part; report coverage per source.

Fits ``age_std_scale`` (:func:`agedistill.training.calibration.calibrate_model_file`) on the
faces of ``--val`` and writes it into ``--model``; then, on ``--test``, reports per source the
share of true ages within the predicted age +- ``age_std`` before and after. What the pipeline
does at the end of ``distill``, for a model file trained before it did (``full-v6``'s student, say):

    python scripts/calibrate_model.py --model agedistill/assets/student.pt \\
        --crops RUN/data/aligned/crops --val RUN/data/split/val.csv \\
        --test RUN/data/split/test.csv --out results/research/shipped_std_calibration.json

(``RUN``: a rebuild of the model's own split; for ``full-v6``'s student, that split rebuilt at
commit ``191a3b7`` with ``agedistill exp profiles/full.yaml -n v6split -S align.detector=mtcnn
split``.) Re-export the ONNX twin afterwards (``agedistill export --format onnx``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agedistill.data.tables import load_table  # noqa: E402
from agedistill.models.files import load_model  # noqa: E402
from agedistill.models.predictions import predict_age_and_std  # noqa: E402
from agedistill.pipeline.outputs import write_json  # noqa: E402
from agedistill.training.calibration import calibrate_model_file  # noqa: E402


def coverage_by_source(model_path: Path, test_csv: Path, crops: Path) -> dict[str, dict]:
    """Per source: faces, MAE and the share within age +- calibrated age_std (and raw)."""
    model, config = load_model(model_path)
    test = load_table(test_csv, crops, config["input_size"])
    age, std = (t.numpy() for t in predict_age_and_std(model, test.images, config["min_age"]))
    scale = float(config.get("age_std_scale", 1.0))
    true, sources = test.ages.numpy(), test.rows["source"].astype(str).to_numpy()
    out = {}
    for name in sorted(set(sources)):
        k = sources == name
        err = np.abs(age[k] - true[k])
        out[name] = {"n": int(k.sum()), "mae": round(float(err.mean()), 4),
                     "coverage_raw": round(float(np.mean(err <= std[k])), 4),
                     "coverage": round(float(np.mean(err <= scale * std[k])), 4)}  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--crops", type=Path, required=True)
    ap.add_argument("--val", type=Path, required=True)
    ap.add_argument("--test", type=Path, required=True)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    _, config = load_model(args.model)
    fitted = calibrate_model_file(
        args.model, load_table(args.val, args.crops, config["input_size"])
    )
    result = {"command": "python scripts/calibrate_model.py " + " ".join(sys.argv[1:]),
              "model": str(args.model), **fitted,
              "test": coverage_by_source(args.model, args.test, args.crops)}  # fmt: skip
    if args.out:
        write_json(result, args.out)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
