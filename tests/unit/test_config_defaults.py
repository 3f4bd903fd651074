"""Defaults live in one place: every default of the params models equals ``params.yaml``'s value.

So a key left out of a profile or a test's params means what ``params.yaml`` says, and code that
builds a section from its defaults trains what the pipeline trains.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args, get_origin

import yaml
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from agedistill.config import Params

PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The params model a field holds (directly or as list items), else None."""
    for t in (annotation, *get_args(annotation)):
        if isinstance(t, type) and issubclass(t, BaseModel):
            return t
    return None


def default_mismatches(model: type[BaseModel], data: dict[str, Any], prefix: str = "") -> list:
    """``(key, code default, params.yaml value)`` for every defaulted field that disagrees.

    A defaulted field that ``data`` leaves out counts as a mismatch too, unless its default is
    None (an optional setting such as a source's ``csv``).
    """
    out = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        has_default = field.default is not PydanticUndefined or field.default_factory is not None
        default = field.get_default(call_default_factory=True) if has_default else None
        if name not in data:
            if has_default and default is not None:
                out.append((key, default, "<missing>"))
            continue
        value, sub = data[name], _model_of(field.annotation)
        if sub is not None:  # a section: compare key by key, items of a list one by one
            items = value if get_origin(field.annotation) is list else [value]
            for i, item in enumerate(items):
                tag = f"{key}[{i}]." if get_origin(field.annotation) is list else f"{key}."
                out += default_mismatches(sub, item, tag)
        elif has_default and default != value:
            out.append((key, default, value))
    return out


def test_every_default_equals_params_yaml() -> None:
    raw = yaml.safe_load(PARAMS.read_text())
    mismatches = default_mismatches(Params, raw)
    assert not mismatches, f"code default != params.yaml: {mismatches}"


def test_the_comparison_walks_nested_sections_and_sees_a_difference() -> None:
    raw = yaml.safe_load(PARAMS.read_text())
    raw["distill"]["temperature"] = 4.0
    raw["rank_teacher"]["train"]["epochs"] = 99
    del raw["align"]["min_face_size"]
    keys = {k for k, _, _ in default_mismatches(Params, raw)}
    assert keys == {"distill.temperature", "rank_teacher.train.epochs", "align.min_face_size"}


def test_a_section_built_from_defaults_is_the_pipeline_s() -> None:
    from agedistill.config import ClassTeacherParams, DistillParams, TrainParams, load_params

    params = load_params(PARAMS)
    assert DistillParams(train=TrainParams()) == params.distill
    assert ClassTeacherParams() == params.class_teacher
