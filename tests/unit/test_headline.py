import json
from pathlib import Path

import pytest

from agedistill.pipeline.headline import headline, source_key

ROOT = Path(__file__).resolve().parents[2]


def test_headline_of_the_committed_sample_results():
    results = json.loads((ROOT / "metrics/evaluate.json").read_text())
    h = headline(results)
    near = {"abs": 5e-5}  # rounded to 4 decimals
    assert h["student_mae"] == pytest.approx(results["student"]["mae"], **near)
    assert h["class_teacher_mae"] == pytest.approx(results["class_teacher"]["mae"], **near)
    assert h["rank_teacher_mae"] == pytest.approx(results["rank_teacher"]["mae"], **near)
    assert h["gain_over_class_teacher"] == pytest.approx(
        results["class_teacher"]["mae"] - results["student"]["mae"], **near
    )
    assert h["student_cs5"] == results["student"]["cs5"]
    assert h["student_mae_21_60"] == pytest.approx(results["student"]["mae_21_60"], **near)
    assert h["student_params"] == results["student"]["params"]
    assert h["student_faces_per_s"] == pytest.approx(results["student"]["faces_per_s"], **near)
    assert h["student_mae"] == round(h["student_mae"], 4)
    assert h["student_mae_flip"] == pytest.approx(results["student"]["mae_flip"], **near)
    assert h["student_mae_21_60_flip"] == pytest.approx(
        results["student"]["mae_21_60_flip"], **near
    )
    assert h["student_std_coverage_flip"] == results["student"]["std_coverage_flip"]
    for source, r in results["student"]["by_source"].items():
        assert h[f"student_mae_{source_key(source)}_flip"] == pytest.approx(r["mae_flip"], **near)


def test_headline_leaves_out_what_results_lack():
    h = headline({"student": {"mae": 6.0, "cs5": True}})
    assert h == {"student_mae": 6.0}  # no teacher: no gain; a bool is not a metric


def test_report_says_how_the_student_did_against_its_twin(capsys):
    from agedistill.cli import main

    results = json.loads((ROOT / "metrics/evaluate.json").read_text())
    assert main(["report", str(ROOT / "metrics/evaluate.json")]) == 0
    out = capsys.readouterr().out
    g = results["twin"]["mae"] - results["student"]["mae"]
    side = "below" if g > 0 else "above"
    assert f"the student's test MAE is {abs(g):.2f} years {side} its no-distillation twin's" in out


def test_older_results_without_a_twin_compare_with_the_class_teacher():
    from agedistill.pipeline.headline import gain_line

    line = gain_line({"student": {"mae": 5.5}, "class_teacher": {"mae": 5.7}})
    assert line == "distillation: the student's test MAE is 0.20 years below its class teacher's"
