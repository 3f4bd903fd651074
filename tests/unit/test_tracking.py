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
