"""An age model read with more views of each face than ``predict``'s two: zoomed and shifted crops.

``predict`` averages a face's age distribution with its mirror image's. This reads a model file on
a finished run's test or validation part with more views, each also mirrored: the aligned crop
trimmed at the border (a zoom) and that trimmed crop shifted a few pixels each way. Every view is
resized to the model's side, the views' distributions are averaged as ``predict`` averages two,
and the age is the mixture's median. Per source it writes MAE and worst age group over MAE:

    python -m research.view_reading --workspace <the full-v14 run> \\
        --model agedistill/assets/student.pt --part val --out results/research/view_reading/val.json
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from agedistill.config import load_params
from agedistill.data.tables import FaceTable, load_table
from agedistill.evaluation.scoring import score
from agedistill.models.files import load_model
from agedistill.models.inputs import normalize, resize_faces
from agedistill.models.ordinal import median_age, mixture_logits
from agedistill.pipeline.outputs import write_json
from research.flip_reading import PARTS, reading_parser

TRIM = 8  # pixels cut from the crop's side for a zoomed view (144 -> 136: 5.6 %)
SHIFT = 4  # pixels a zoomed view moves each way
# view name -> (pixels trimmed from the side, shift down, shift right)
VIEWS = {
    "whole": (0, 0, 0),
    "zoom": (TRIM, 0, 0),
    "left": (TRIM, 0, -SHIFT),
    "right": (TRIM, 0, SHIFT),
    "up": (TRIM, -SHIFT, 0),
    "down": (TRIM, SHIFT, 0),
}
# reading -> the views it averages; "once" is the whole crop unmirrored, the others add mirrors
READINGS = {
    "once": ("whole",),
    "flip": ("whole",),
    "flip_zoom": ("whole", "zoom"),
    "flip_shifts": ("whole", "left", "right", "up", "down"),
    "flip_all": tuple(VIEWS),
}


def view(faces: torch.Tensor, trim: int, down: int, right: int, size: int) -> torch.Tensor:
    """Float faces cut ``trim`` pixels smaller, moved ``down`` and ``right``, resized to ``size``.

    >>> view(torch.arange(16.0).view(1, 1, 4, 4), 2, 0, 1, 2).flatten().tolist()
    [6.0, 7.0, 10.0, 11.0]
    """
    side = faces.shape[-1] - trim
    top, left = trim // 2 + down, trim // 2 + right
    if trim < 0 or min(top, left) < 0 or max(top, left) + side > faces.shape[-1]:
        raise ValueError(f"view trim={trim} down={down} right={right} leaves the crop")
    return resize_faces(faces[..., top : top + side, left : left + side].float(), size)


@torch.inference_mode()
def view_logits(model: torch.nn.Module, faces: FaceTable, size: int) -> dict[str, torch.Tensor]:
    """Logits of every view of ``faces`` and of its mirror (``NAME`` and ``NAME_mirror``)."""
    model.eval()
    out: dict[str, list[torch.Tensor]] = {}
    for i in range(0, len(faces), 256):
        batch = faces.images[i : i + 256]
        for name, shape in VIEWS.items():
            x = normalize(view(batch, *shape, size))
            out.setdefault(name, []).append(model(x))
            out.setdefault(f"{name}_mirror", []).append(model(x.flip(-1)))
    return {k: torch.cat(v) for k, v in out.items()}


def view_reading(model_file: Path, workspace: Path, part: str = "test") -> dict[str, Any]:
    """Overall and per-source MAE and worst age group / MAE of each reading on ``part``."""
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, not {part!r}")
    params = load_params(workspace / "params.yaml")
    model, config = load_model(model_file)
    crops = workspace / "data" / "aligned" / "crops"
    faces = load_table(workspace / "data" / "split" / f"{part}.csv", crops)
    logits = view_logits(model, faces, config["input_size"])
    out: dict[str, Any] = {"model": str(model_file), "part": part, "trim": TRIM, "shift": SHIFT}
    for reading, names in READINGS.items():
        read = [logits[n] for n in names]
        if reading != "once":
            read += [logits[f"{n}_mirror"] for n in names]
        ages = median_age(mixture_logits(*read), config["min_age"]).numpy()
        s = score(ages, faces, params.evaluate.cs_max)
        out[reading] = {
            "views": len(read),
            "mae": s["mae"],
            "by_source": {
                k: {"n": v["n"], "mae": v["mae"], "worst_group_ratio": v["worst_group_ratio"]}
                for k, v in s.get("by_source", {}).items()
            },
        }
    return out


def main(argv: list[str] | None = None) -> int:
    args = reading_parser(__doc__.splitlines()[0]).parse_args(argv)
    torch.set_num_threads(args.threads)
    result = view_reading(args.model, args.workspace, args.part)
    write_json(result, args.out)
    for reading in READINGS:
        r = result[reading]
        cells = [f"{s} {v['mae']:.3f} ({v['worst_group_ratio']:.2f}x)"
                 for s, v in r["by_source"].items()]  # fmt: skip
        print(f"{reading} ({r['views']} views): all {r['mae']:.3f} | " + " | ".join(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
