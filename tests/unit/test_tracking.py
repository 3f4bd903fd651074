from agedistill.pipeline.tracking import (
    flatten,
    main_repo_root,
    mlflow_run,
    params_hash,
    run_tags,
    tracking_uri,
)


def test_store_is_the_main_repo_even_inside_a_dvc_temp_copy(tmp_path, monkeypatch):
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    temp_copy = tmp_path / ".dvc" / "tmp" / "exps" / "tmpabc123"
    temp_copy.mkdir(parents=True)
    (temp_copy / "dvc.yaml").write_text("stages: {}\n")
    assert main_repo_root(temp_copy) == tmp_path.resolve()
    monkeypatch.chdir(temp_copy)
    assert tracking_uri() == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}?timeout=120"


def test_dvc_root_and_mlflow_uri_take_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main_repo_root("/somewhere/else") == tmp_path.resolve()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking_uri() == "http://127.0.0.1:5000"


def test_tags_link_runs_of_one_experiment(monkeypatch):
    monkeypatch.setenv("DVC_EXP_NAME", "exp-temp4")
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", "abc123")
    tags = run_tags("distill", {"distill": {"temperature": 4}})
    assert tags["agedistill.pipeline"] == "exp-temp4"
    assert tags["git_commit"] == "abc123"
    assert tags["agedistill.stage"] == "distill"
    assert tags["params_hash"] == params_hash({"distill": {"temperature": 4}})
    assert params_hash({"a": 1}) != params_hash({"a": 2})


def test_flatten():
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": "x"}) == {"a.b": 1, "a.c": "[1, 2]", "d": "x"}


def test_has_metric_reads_the_steps_a_run_holds(tmp_path, monkeypatch):
    # what a resumed training asks before logging its checkpointed epoch again
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    with mlflow_run("class_teacher", {}, {}) as run:
        run.log_metrics({"val_mae": 7.5, "best_val_mae": 7.5}, 1)
        run.log_metrics({"val_mae": 6.5}, 3)
        assert run.has_metric("val_mae", 1) and run.has_metric("val_mae", 3)
        assert not run.has_metric("val_mae", 2)
        assert not run.has_metric("best_val_mae", 3)
        assert not run.has_metric("train_loss", 1)


def _children(client, parent_id):
    exp = client.get_experiment_by_name("agedistill")
    return client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'")


def test_stages_of_one_execution_are_children_of_one_parent(tmp_path, monkeypatch):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.setenv("DVC_EXP_NAME", "exp-a")
    params = {"distill": {"temperature": 2.0, "train": {"epochs": 3}}, "align": {"size": 64}}
    with mlflow_run("class_teacher", {"epochs": 3}, params) as run:
        first_parent = run.parent_id
    with mlflow_run("evaluate", {"cs_max": 10}, params) as run:
        assert run.parent_id == first_parent
        run.log_pipeline_metrics({"student_mae": 5.2, "gain_over_class_teacher": 0.4})
    client = mlflow.tracking.MlflowClient(uri)
    parent = client.get_run(first_parent)
    assert parent.info.run_name == "exp-a"
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["agedistill.role"] == "pipeline"
    assert parent.data.params == {
        "distill.temperature": "2.0", "distill.train.epochs": "3", "align.size": "64"
    }  # fmt: skip
    assert parent.data.metrics == {"student_mae": 5.2, "gain_over_class_teacher": 0.4}
    children = _children(client, first_parent)
    assert sorted(r.data.tags["agedistill.stage"] for r in children) == [
        "class_teacher",
        "evaluate",
    ]
    assert all("student_mae" not in r.data.metrics for r in children)

    # another experiment (other name, other params): its own parent
    monkeypatch.setenv("DVC_EXP_NAME", "exp-b")
    other = {**params, "distill": {"temperature": 4.0, "train": {"epochs": 3}}}
    with mlflow_run("distill", {"temperature": 4.0}, other) as run:
        assert run.parent_id != first_parent
    assert client.get_run(run.parent_id).data.params["distill.temperature"] == "4.0"
    # a stage rerun alone under the first experiment's params joins the first parent again
    monkeypatch.setenv("DVC_EXP_NAME", "exp-a")
    with mlflow_run("evaluate", {"cs_max": 10}, params) as run:
        assert run.parent_id == first_parent
    assert len(_children(client, first_parent)) == 3


def test_a_failed_stage_marks_its_parent_failed(tmp_path, monkeypatch):
    import mlflow
    import pytest

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    with pytest.raises(RuntimeError), mlflow_run("distill", {}, {"a": 1}) as run:
        raise RuntimeError("killed")
    assert mlflow.tracking.MlflowClient(uri).get_run(run.parent_id).info.status == "FAILED"
