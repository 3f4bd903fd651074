"""The real pipeline on real sample images, with tiny params: repro, no-op repro, exp run."""

from __future__ import annotations

import json
import re
import subprocess

import pandas as pd
import pytest

from tests.integration.pipeline_repo import LIMIT, env, run

pytestmark = pytest.mark.integration

STAGES = ["align", "split", "rank_teacher", "class_teacher", "twin", "distill", "evaluate"]


# years the tiny pipeline's student must be below the train-mean baseline on its ~60 test faces:
# measured 2.66 (student 4.56, train mean 7.22) and 2.91 with 112-px teachers; a model answering
# one constant age scores the baseline or worse
MARGIN = 1.0


def ran_stages(output: str) -> list[str]:
    """Stages DVC says it ran (``Running stage 'x'``), in order."""
    return re.findall(r"Running stage '([a-z_]+)'", output)


def test_repro_runs_every_stage_and_writes_outputs(pipeline):
    dst, out = pipeline
    assert ran_stages(out) == STAGES
    align = json.loads((dst / "metrics/align.json").read_text())
    assert align["processed"] == LIMIT
    assert align["aligned"] + align["rejected"] == LIMIT
    assert align["aligned"] >= LIMIT - 5  # chips are faces: the detector finds nearly all
    split = json.loads((dst / "metrics/split.json").read_text())
    assert split["train"] + split["val"] + split["test"] == align["aligned"]
    results = json.loads((dst / "metrics/evaluate.json").read_text())
    assert set(results) == {"student", "twin", "class_teacher", "rank_teacher"}
    ages = pd.read_csv(dst / "metrics/plots/predictions.csv")  # each test face, each model
    assert len(ages) == split["test"]
    for name, r in results.items():
        assert r["mae"] == pytest.approx((ages[name] - ages["true_age"]).abs().mean(), abs=1e-4)
        assert r["cs10"] >= r["cs5"] >= r["cs0"]
        assert 0 < r["mae_flip"] < 60 and r["mae_flip"] != r["mae"]  # test-time flip, scored too
    for f in ("models/student.pt", "models/student.json", "metrics/plots/cs_curve.png",
              "metrics/plots/cs_curve.csv", "metrics/plots/predictions.csv"):  # fmt: skip
        assert (dst / f).is_file(), f
    assert "student" in out and "MAE" in out  # the closing table


def test_the_student_learns_more_than_the_train_parts_mean_age(pipeline):
    """A model answering one constant age must fail: the student beats the train part's mean."""
    dst, _ = pipeline
    train = pd.read_csv(dst / "data/split/train.csv")
    test = pd.read_csv(dst / "data/split/test.csv")
    baseline = float((test["age"] - train["age"].mean()).abs().mean())
    results = json.loads((dst / "metrics/evaluate.json").read_text())
    print(f"train-mean MAE {baseline:.2f}; " + ", ".join(
        f"{name} {r['mae']:.2f}" for name, r in results.items()))  # fmt: skip
    assert results["student"]["mae"] < baseline - MARGIN
    assert 0.4 < results["student"]["std_coverage"] <= 1.0


def test_unchanged_repro_runs_nothing(pipeline):
    dst, _ = pipeline
    assert ran_stages(run(["dvc", "repro"], dst)) == []


def test_temperature_change_reruns_only_distill_and_evaluate(pipeline):
    dst, _ = pipeline
    out = run(["dvc", "exp", "run", "-S", "distill.temperature=4"], dst)
    assert ran_stages(out) == ["distill", "evaluate"]
    shown = run(["dvc", "exp", "show", "--json"], dst)
    assert "student" in shown


def test_store_is_ignored_and_pipeline_up_to_date_after_exp_run(pipeline):
    dst, _ = pipeline
    out = subprocess.run(
        ["git", "status", "--porcelain", "mlflow.db"], cwd=dst, capture_output=True, text=True
    )
    assert out.stdout == ""  # the store is git-ignored
    assert (dst / "mlflow.db").is_file()
    assert json.loads(run(["dvc", "status", "--json"], dst)) == {}


def test_stage_error_is_one_line_naming_the_key(pipeline, tmp_path):
    dst, _ = pipeline
    params = (dst / "params.yaml").read_text()
    try:
        (dst / "params.yaml").write_text(re.sub(r"temperature: .*", "temperature: hot", params))
        proc = subprocess.run(
            ["python", "-m", "stages.distill", "--crops", "x", "--split", "x", "--class-teacher",
             "x", "--rank-teacher", "x", "--model", str(tmp_path / "m.pt"), "--metrics", "x"],
            cwd=dst, capture_output=True, text=True, env=env(),
        )  # fmt: skip
    finally:
        (dst / "params.yaml").write_text(params)
    assert proc.returncode == 2
    assert "distill.temperature" in proc.stderr
    assert "Traceback" not in proc.stderr
