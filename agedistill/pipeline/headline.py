"""The few numbers that say how an experiment went, read from ``evaluate``'s results.

One definition, shared by the MLflow parent run of each pipeline execution and by
``agedistill report --exps``.
"""

from __future__ import annotations

import re
from typing import Any

# (metric name, model, key in that model's evaluate results)
FROM_RESULTS = (
    ("student_mae", "student", "mae"),
    ("class_teacher_mae", "class_teacher", "mae"),
    ("rank_teacher_mae", "rank_teacher", "mae"),
    ("student_cs5", "student", "cs5"),
    ("student_mae_21_60", "student", "mae_21_60"),
    ("student_params", "student", "params"),
    ("student_file_mb", "student", "file_mb"),
    ("student_faces_per_s", "student", "faces_per_s"),
)


DECIMALS = 4


def source_key(name: str) -> str:
    """A source name as a metric-key part: lowercase letters, digits and ``_`` only.

    >>> source_key("appa_real"), source_key("/data/raw/APPA-REAL/"), source_key("+")
    ('appa_real', 'data_raw_appa_real', 'unknown')
    """
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "unknown"


def gain(student_mae: float, class_teacher_mae: float) -> float:
    """Years of MAE distillation took off the class teacher's (> 0: the student is better)."""
    return class_teacher_mae - student_mae


def headline(results: dict[str, Any]) -> dict[str, float]:
    """Headline metrics of one ``evaluate`` results mapping (``metrics/evaluate.json``).

    >>> r = {"student": {"mae": 5.2, "cs5": 0.6}, "class_teacher": {"mae": 5.6}}
    >>> h = headline(r)
    >>> round(h["gain_over_class_teacher"], 2), h["student_cs5"]
    (0.4, 0.6)

    Keys a results file lacks (an older one, a model not scored) are left out, not invented.
    The student's MAE on each test source is ``student_mae_<source>`` (see :func:`source_key`).
    Values are rounded to ``DECIMALS`` places: a table of experiments shows 12.6038, not
    12.603847666978836.
    """
    out: dict[str, float] = {}
    for name, model, key in FROM_RESULTS:
        value = results.get(model, {}).get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = round(float(value), DECIMALS)
    if "student_mae" in out and "class_teacher_mae" in out:
        g = gain(results["student"]["mae"], results["class_teacher"]["mae"])
        out["gain_over_class_teacher"] = round(g, DECIMALS)
    for source, r in results.get("student", {}).get("by_source", {}).items():
        out[f"student_mae_{source_key(source)}"] = round(float(r["mae"]), DECIMALS)
    return out


def gain_line(results: dict[str, Any]) -> str | None:
    """One sentence on the student against its class teacher, or None without both.

    >>> gain_line({"student": {"mae": 11.6}, "class_teacher": {"mae": 11.9}})
    "distillation: the student's test MAE is 0.30 years below its class teacher's"
    """
    if "mae" not in results.get("student", {}) or "mae" not in results.get("class_teacher", {}):
        return None
    g = gain(results["student"]["mae"], results["class_teacher"]["mae"])
    side = "below" if g > 0 else "above"
    return f"distillation: the student's test MAE is {abs(g):.2f} years {side} its class teacher's"
