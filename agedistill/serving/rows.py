"""The rows of the ``predict`` table: its columns and the rows of one input.

The table is a stable interface: header :data:`COLUMNS`, one row per face (``face`` = 0, 1, ...
by detection probability) and one row with empty face fields (``None``) and a non-empty
``error`` for every input that has no face or could not be read. The formats that carry these
rows (CSV, JSON, JSON Lines) are written in one place,
:class:`agedistill.serving.predict_stream.TableWriter`.
"""

from __future__ import annotations

from typing import Any

from agedistill.serving.results import ImageResult

COLUMNS = ["path", "face", "x", "y", "w", "h", "det_prob", "age", "age_std", "error"]
FACE_FIELDS = COLUMNS[1:9]


def result_rows(result: ImageResult) -> list[dict[str, Any]]:
    """The table rows of one input: one per face, or one error row with empty face fields.

    Boxes are rounded to 0.1 px, ``det_prob`` to 5 decimals, ages to 2.
    """
    if not result.faces:
        empty = dict.fromkeys(FACE_FIELDS)
        return [{"path": result.path, **empty, "error": result.error or "no face"}]
    return [
        {
            "path": result.path,
            "face": f.face,
            "x": round(f.x, 1),
            "y": round(f.y, 1),
            "w": round(f.w, 1),
            "h": round(f.h, 1),
            "det_prob": round(f.det_prob, 5),
            "age": round(f.age, 2),
            "age_std": round(f.age_std, 2),
            "error": None,
        }
        for f in result.faces
    ]
