"""One row per DVC experiment, headline first: what changed, and what the student scored.

Reads ``dvc exp show --json`` (the workspace, the baseline commit and its experiments) and keeps,
for each, the params that differ from its baseline commit's and the test MAEs of
``metrics/evaluate.json``. ``agedistill report --exps`` prints the table.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from agedistill.pipeline.headline import gain
from agedistill.pipeline.tracking import flatten

PARAMS_FILE = "params.yaml"
EVALUATE_FILE = "metrics/evaluate.json"


class ExpShowError(RuntimeError):
    """``dvc exp show`` failed or printed something that is not its JSON."""


@dataclass(frozen=True)
class ExpRow:
    """One experiment (or the workspace, or a commit) of ``dvc exp show``."""

    name: str
    changed: dict[str, Any]
    student_mae: float | None
    class_teacher_mae: float | None
    twin_mae: float | None = None

    @property
    def gain(self) -> float | None:
        """Years the student is below its twin (runs before the twin: its class teacher)."""
        baseline = self.twin_mae if self.twin_mae is not None else self.class_teacher_mae
        if self.student_mae is None or baseline is None:
            return None
        return gain(self.student_mae, baseline)


def _file_data(data: dict[str, Any], kind: str, path: str) -> dict[str, Any]:
    return ((data or {}).get(kind) or {}).get(path, {}).get("data") or {}


def _mae(metrics: dict[str, Any], model: str) -> float | None:
    value = metrics.get(model, {}).get("mae")
    return float(value) if isinstance(value, int | float) else None


def _changed(params: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    flat, flat_base = flatten(params), flatten(base)
    keys = sorted(set(flat) | set(flat_base))
    return {k: flat.get(k) for k in keys if flat.get(k) != flat_base.get(k)}


def _row(name: str, data: dict[str, Any], base_params: dict[str, Any]) -> ExpRow:
    metrics = _file_data(data, "metrics", EVALUATE_FILE)
    params = _file_data(data, "params", PARAMS_FILE)
    return ExpRow(name, _changed(params, base_params), _mae(metrics, "student"),
                  _mae(metrics, "class_teacher"), _mae(metrics, "twin"))  # fmt: skip


def rows(exp_show: list[dict[str, Any]]) -> list[ExpRow]:
    """Rows from ``dvc exp show --json``: each commit, then its experiments; workspace first.

    The workspace's changed params are against the first commit listed (``HEAD``), each
    experiment's against the commit it was run from.
    """
    commits = [e for e in exp_show if e.get("rev") != "workspace"]
    head_params = _file_data(commits[0]["data"], "params", PARAMS_FILE) if commits else {}
    out = []
    for entry in exp_show:
        if entry.get("rev") == "workspace":
            out.append(_row("workspace", entry.get("data"), head_params))
            continue
        base = _file_data(entry.get("data"), "params", PARAMS_FILE)
        out.append(_row(entry.get("name") or entry["rev"][:7], entry.get("data"), base))
        for exp in entry.get("experiments") or []:
            for rev in exp.get("revs") or []:
                name = exp.get("name") or rev.get("name") or rev["rev"][:7]
                out.append(_row(name, rev.get("data"), base))
    return out


def _value(v: Any) -> str:
    return "(none)" if v is None else str(v)


def _number(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "-"
    return f"{x:+.3f}" if signed else f"{x:.3f}"


def format_rows(table: list[ExpRow]) -> str:
    """A text table: experiment, changed params, student, twin and class-teacher MAE, gain."""
    cells = [
        (r.name, ", ".join(f"{k}={_value(v)}" for k, v in r.changed.items()) or "-",
         _number(r.student_mae), _number(r.twin_mae), _number(r.class_teacher_mae),
         _number(r.gain, signed=True))
        for r in table
    ]  # fmt: skip
    head = ("experiment", "changed params", "student MAE", "twin MAE", "class-teacher MAE", "gain")
    widths = [max(len(c[i]) for c in [head, *cells]) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" if i < 2 else f"{{:>{w}}}" for i, w in enumerate(widths))
    lines = [fmt.format(*head), "  ".join("-" * w for w in widths)]
    lines += [fmt.format(*c) for c in cells]
    lines.append(
        "gain: twin MAE - student MAE (> 0: distillation helped; without a twin, the class "
        "teacher's); test part, years"
    )
    return "\n".join(lines)


def exp_show(cwd: str | None = None) -> list[dict[str, Any]]:
    """``dvc exp show --json`` of the repository at ``cwd``, parsed."""
    cmd = [sys.executable, "-m", "dvc", "exp", "show", "--json"]  # this env's dvc, PATH or not
    try:
        out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=True)
    except subprocess.CalledProcessError as e:
        raise ExpShowError(f"dvc exp show failed: {e.stderr.strip()[-500:]}") from e
    try:
        return json.loads(out.stdout)
    except ValueError as e:
        raise ExpShowError(f"dvc exp show printed no JSON: {out.stdout[:200]!r}") from e
