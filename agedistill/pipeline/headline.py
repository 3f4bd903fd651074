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
    ("twin_mae", "twin", "mae"),
    ("class_teacher_mae", "class_teacher", "mae"),
    ("rank_teacher_mae", "rank_teacher", "mae"),
    ("student_cs5", "student", "cs5"),
    ("student_mae_21_60", "student", "mae_21_60"),
    ("student_params", "student", "params"),
    ("student_file_mb", "student", "file_mb"),
    ("student_faces_per_s", "student", "faces_per_s"),
    ("student_std_coverage", "student", "std_coverage"),
    ("student_mae_flip", "student", "mae_flip"),  # as ``predict`` reads faces by default
    ("student_mae_21_60_flip", "student", "mae_21_60_flip"),
    ("student_std_coverage_flip", "student", "std_coverage_flip"),
)


DECIMALS = 4


def source_key(name: str) -> str:
    """A source name as a metric-key part: lowercase letters, digits and ``_`` only.

    >>> source_key("appa_real"), source_key("/data/raw/APPA-REAL/"), source_key("+")
    ('appa_real', 'data_raw_appa_real', 'unknown')
    """
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "unknown"


def gain(student_mae: float, baseline_mae: float) -> float:
    """Years of MAE the student is below a baseline's (> 0: the student is better)."""
    return baseline_mae - student_mae


def headline(results: dict[str, Any]) -> dict[str, float]:
    """Headline metrics of one ``evaluate`` results mapping (``metrics/evaluate.json``).

    >>> r = {"student": {"mae": 5.2, "cs5": 0.6}, "twin": {"mae": 5.5}, "class_teacher": {"mae": 5}}
    >>> h = headline(r)
    >>> round(h["gain_over_twin"], 2), round(h["gain_over_class_teacher"], 2), h["student_cs5"]
    (0.3, -0.2, 0.6)

    ``gain_over_twin`` is distillation's gain: the student against the same network trained
    without the teachers.

    Keys a results file lacks (an older one, a model not scored) are left out, not invented.
    The student's MAE on each test source is ``student_mae_<source>`` (see :func:`source_key`),
    and ``student_mae_<source>_flip`` read both ways as ``predict`` reads by default.
    Values are rounded to ``DECIMALS`` places: a table of experiments shows 12.6038, not
    12.603847666978836.
    """
    out: dict[str, float] = {}
    for name, model, key in FROM_RESULTS:
        value = results.get(model, {}).get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = round(float(value), DECIMALS)
    for baseline in ("twin", "class_teacher"):
        if "student_mae" in out and f"{baseline}_mae" in out:
            g = gain(results["student"]["mae"], results[baseline]["mae"])
            out[f"gain_over_{baseline}"] = round(g, DECIMALS)
    for source, r in results.get("student", {}).get("by_source", {}).items():
        out[f"student_mae_{source_key(source)}"] = round(float(r["mae"]), DECIMALS)
        if "mae_flip" in r:
            out[f"student_mae_{source_key(source)}_flip"] = round(float(r["mae_flip"]), DECIMALS)
    return out


def gain_line(results: dict[str, Any]) -> str | None:
    """One sentence on the student against its twin (or, in older results, its class teacher).

    >>> gain_line({"student": {"mae": 11.6}, "twin": {"mae": 11.9}})
    "distillation: the student's test MAE is 0.30 years below its no-distillation twin's"
    """
    if "mae" not in results.get("student", {}):
        return None
    for baseline, what in (("twin", "no-distillation twin"), ("class_teacher", "class teacher")):
        if "mae" in results.get(baseline, {}):
            g = gain(results["student"]["mae"], results[baseline]["mae"])
            side = "below" if g > 0 else "above"
            return f"distillation: the student's test MAE is {abs(g):.2f} years {side} its {what}'s"
    return None
