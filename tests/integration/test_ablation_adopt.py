"""research.ablation's ``adopt``: the pipeline's own student scored as its ablation run."""

from __future__ import annotations

import json

import pytest
import yaml

from research.ablation import Workspace, adopt_pipeline_student, summarize

pytestmark = pytest.mark.integration


def test_the_pipeline_student_becomes_the_run_its_params_name(pipeline, tmp_path):
    dst, _ = pipeline
    ws = Workspace.of(dst)
    result = adopt_pipeline_student(ws, tmp_path / "grid")
    params = yaml.safe_load(ws.params.read_text())["distill"]
    assert (params["kd_weight"], params["hint_weight"]) == (1.0, 1.0)
    assert result["variant"] == "both" and result["seed"] == params["train"]["seed"]
    written = tmp_path / "grid" / "runs" / f"both-s{result['seed']}.json"
    assert json.loads(written.read_text()) == result
    evaluated = json.loads((dst / "metrics/evaluate.json").read_text())["student"]
    assert result["test"]["mae"] == pytest.approx(evaluated["mae"], abs=1e-4)
    assert result["fit"] == json.loads((dst / "metrics/distill.json").read_text())
    assert summarize(tmp_path / "grid")["both"]["mean"] == result["test"]["mae"]
    with pytest.raises(FileExistsError, match="that run exists"):
        adopt_pipeline_student(ws, tmp_path / "grid")


def test_params_the_lock_did_not_build_the_student_with_are_refused(pipeline, tmp_path):
    dst, _ = pipeline
    ws = Workspace.of(dst)
    original = ws.params.read_text()
    raw = yaml.safe_load(original)
    raw["distill"]["temperature"] = raw["distill"]["temperature"] + 1.0  # edited, not reproduced
    try:
        ws.params.write_text(yaml.safe_dump(raw))
        with pytest.raises(ValueError, match="differ from those"):
            adopt_pipeline_student(ws, tmp_path / "grid")
    finally:
        ws.params.write_text(original)
    assert not (tmp_path / "grid").exists()


def test_a_student_file_the_lock_does_not_record_is_refused(pipeline, tmp_path):
    dst, _ = pipeline
    ws = Workspace.of(dst)
    other = Workspace(**{**ws.__dict__, "student": dst / "models/class_teacher.pt"})
    with pytest.raises(ValueError, match="not the file"):
        adopt_pipeline_student(other, tmp_path / "grid")


def test_weights_that_are_no_variant_are_refused(pipeline, tmp_path, monkeypatch):
    import research.ablation as ablation

    dst, _ = pipeline
    raw = yaml.safe_load((dst / "params.yaml").read_text())
    raw["distill"]["kd_weight"] = 0.5
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    ws = Workspace(**{**Workspace.of(dst).__dict__, "params": tmp_path / "params.yaml"})
    monkeypatch.setattr(ablation, "_check_built_from_params", lambda ws: None)
    with pytest.raises(ValueError, match="no ablation variant"):
        adopt_pipeline_student(ws, tmp_path / "grid")
    assert not (tmp_path / "grid").exists()
