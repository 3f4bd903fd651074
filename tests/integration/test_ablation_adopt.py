"""research.ablation's ``adopt``: the pipeline's student and twin scored as their ablation runs."""

from __future__ import annotations

import json

import pytest
import yaml

from research.ablation import Workspace, adopt_pipeline_models, summarize

pytestmark = pytest.mark.integration


def test_the_pipeline_student_becomes_the_run_its_params_name(pipeline, tmp_path):
    dst, _ = pipeline
    ws = Workspace.of(dst)
    result, twin = adopt_pipeline_models(ws, tmp_path / "grid")
    params = yaml.safe_load(ws.params.read_text())["distill"]
    assert (params["kd_weight"], params["hint_weight"]) == (1.0, 1.0)
    assert result["variant"] == "both" and result["seed"] == params["train"]["seed"]
    assert twin["variant"] == "none" and twin["seed"] == params["train"]["seed"]
    evaluated = json.loads((dst / "metrics/evaluate.json").read_text())
    for run, model, stage in ((result, "student", "distill"), (twin, "twin", "twin")):
        written = tmp_path / "grid" / "runs" / f"{run['variant']}-s{run['seed']}.json"
        assert json.loads(written.read_text()) == run
        assert run["test"]["mae"] == pytest.approx(evaluated[model]["mae"], abs=1e-4)
        assert run["fit"] == json.loads((dst / f"metrics/{stage}.json").read_text())
    table = summarize(tmp_path / "grid")
    assert table["both"]["mean"] == result["test"]["mae"]
    assert table["none"]["mean"] == twin["test"]["mae"]
    with pytest.raises(FileExistsError, match="that run exists"):
        adopt_pipeline_models(ws, tmp_path / "grid")


def test_params_the_lock_did_not_build_the_student_with_are_refused(pipeline, tmp_path):
    dst, _ = pipeline
    ws = Workspace.of(dst)
    original = ws.params.read_text()
    raw = yaml.safe_load(original)
    raw["distill"]["temperature"] = raw["distill"]["temperature"] + 1.0  # edited, not reproduced
    try:
        ws.params.write_text(yaml.safe_dump(raw))
        with pytest.raises(ValueError, match="distill differ from those"):
            adopt_pipeline_models(ws, tmp_path / "grid")
    finally:
        ws.params.write_text(original)
    assert not (tmp_path / "grid").exists()


def test_a_student_file_the_lock_does_not_record_is_refused(pipeline, tmp_path):
    dst, _ = pipeline
    ws = Workspace.of(dst)
    for model in ("student", "twin"):
        other = Workspace(**{**ws.__dict__, model: dst / "models/class_teacher.pt"})
        with pytest.raises(ValueError, match=r"class_teacher\.pt: not the file"):
            adopt_pipeline_models(other, tmp_path / "grid")
    assert not (tmp_path / "grid").exists()


def test_the_pipelines_own_weights_name_its_variant(pipeline, tmp_path, monkeypatch):
    # a variant keeps the params' weight of each signal it keeps: kd_weight 0.5 with the hint on
    # is the `both` run of a grid under these params, which trains at kd_weight 0.5 too
    import research.ablation as ablation
    from agedistill.config import load_params

    dst, _ = pipeline
    raw = yaml.safe_load((dst / "params.yaml").read_text())
    raw["distill"]["kd_weight"] = 0.5
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    ws = Workspace(**{**Workspace.of(dst).__dict__, "params": tmp_path / "params.yaml"})
    monkeypatch.setattr(ablation, "_check_built_from_params", lambda ws, stage, model: None)
    student, twin = adopt_pipeline_models(ws, tmp_path / "grid")
    assert (student["variant"], twin["variant"]) == ("both", "none")
    d = load_params(ws.params).distill
    assert ablation.variant_weights("both", d) == {"kd_weight": 0.5, "hint_weight": 1.0}


def test_rescoring_reads_each_runs_own_model_and_refuses_a_replaced_one(pipeline, tmp_path):
    from research.ablation import rescore_runs

    dst, _ = pipeline
    ws = Workspace.of(dst)
    student, twin = adopt_pipeline_models(ws, tmp_path / "grid")
    rescored = rescore_runs(ws, tmp_path / "grid", tmp_path / "now")
    assert [r["variant"] for r in rescored] == ["both", "none"]  # both-s*.json, none-s*.json
    for before, after in zip((student, twin), rescored, strict=True):
        assert after["fit"] == before["fit"] and after["adopted"] == before["adopted"]
        assert after["rescored"]["sha256"] == before["adopted"]["sha256"]
        assert after["test"] == before["test"]  # the same code scores the same model the same
    written = tmp_path / "now" / "runs" / f"none-s{twin['seed']}.json"
    assert json.loads(written.read_text()) == rescored[1]
    with pytest.raises(ValueError, match="another folder"):
        rescore_runs(ws, tmp_path / "grid", tmp_path / "grid")
    run = tmp_path / "grid" / "runs" / f"both-s{student['seed']}.json"
    edited = json.loads(run.read_text())
    edited["adopted"]["model"] = str(dst / "models" / "twin.pt")  # a file it was not adopted from
    run.write_text(json.dumps(edited))
    with pytest.raises(ValueError, match=r"twin\.pt: not the file both-s\d+\.json was adopted"):
        rescore_runs(ws, tmp_path / "grid", tmp_path / "again")
