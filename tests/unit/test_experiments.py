import json
from pathlib import Path

import pytest

from agedistill.cli import main
from agedistill.pipeline.experiments import ExpRow, ExpShowError, exp_show, format_rows, rows

# `dvc exp show --json` of the tiny test pipeline after `dvc repro`, a commit, and
# `dvc exp run -S distill.temperature=4 -S evaluate.register_model=false` (deps and outs trimmed)
EXP_SHOW = Path(__file__).resolve().parents[1] / "data" / "exp_show_tiny.json"


def test_rows_of_a_real_exp_show():
    shown = json.loads(EXP_SHOW.read_text())
    table = rows(shown)
    assert [r.name for r in table] == ["workspace", "master", "bulgy-sike"]
    master, exp = table[1], table[2]
    assert master.changed == {}
    assert exp.changed == {"distill.temperature": 4, "evaluate.register_model": False}
    evaluate = shown[1]["experiments"][0]["revs"][0]["data"]["metrics"]["metrics/evaluate.json"]
    assert exp.student_mae == evaluate["data"]["student"]["mae"]
    assert exp.class_teacher_mae == evaluate["data"]["class_teacher"]["mae"]
    assert exp.gain == pytest.approx(exp.class_teacher_mae - exp.student_mae)


def test_format_rows_puts_the_headline_in_one_line_per_experiment():
    text = format_rows(
        [ExpRow("main", {}, 12.6, 12.72), ExpRow("exp-t4", {"distill.temperature": 4}, 12.4, 12.72)]
    )
    lines = text.splitlines()
    assert lines[0].split() == ["experiment", "changed", "params", "student", "MAE", "twin", "MAE",
                                "class-teacher", "MAE", "gain"]  # fmt: skip
    assert lines[2].split() == ["main", "-", "12.600", "-", "12.720", "+0.120"]
    assert lines[3].split() == ["exp-t4", "distill.temperature=4", "12.400", "-", "12.720",
                                "+0.320"]  # fmt: skip


def test_the_gain_is_over_the_twin_where_there_is_one():
    row = ExpRow("exp", {}, 5.0, 4.6, twin_mae=5.3)
    assert row.gain == pytest.approx(0.3)  # the twin, not the (pretrained, stronger) teacher
    line = format_rows([row]).splitlines()[2].split()
    assert line == ["exp", "-", "5.000", "5.300", "4.600", "+0.300"]


def test_a_run_without_evaluate_metrics_has_no_gain():
    row = ExpRow("failed", {"distill.temperature": 4}, None, None)
    assert row.gain is None
    assert format_rows([row]).splitlines()[2].split() == ["failed", "distill.temperature=4", "-",
                                                          "-", "-", "-"]  # fmt: skip


def test_outside_a_dvc_repo_exp_show_is_a_clear_error(tmp_path, capsys, monkeypatch):
    with pytest.raises(ExpShowError, match="dvc exp show failed"):
        exp_show(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert main(["report", "--exps"]) == 2
    assert "agedistill report --exps: error: dvc exp show failed" in capsys.readouterr().err
