"""The ranking-teacher probe: its params, its folder laid out as a workspace, its table."""

from __future__ import annotations

from pathlib import Path

import pytest

from agedistill.config import ParamsError


def test_a_rank_probe_changes_only_its_section_and_is_validated(tmp_path):
    import yaml

    from research.ablation import Workspace, with_overrides

    ws = Workspace(params=tmp_path / "params.yaml")
    ws.params.write_text(Path("params.yaml").read_text())
    own = yaml.safe_load(ws.params.read_text())
    probe = with_overrides(ws, ["rank_teacher.k=4", "rank_teacher.model.input_size=144"],
                           tmp_path / "k4", section="rank_teacher")  # fmt: skip
    written = yaml.safe_load(probe.params.read_text())
    assert written["rank_teacher"]["k"] == 4
    assert written["rank_teacher"]["model"] == {**own["rank_teacher"]["model"], "input_size": 144}
    assert {k: v for k, v in written.items() if k != "rank_teacher"} == {
        k: v for k, v in own.items() if k != "rank_teacher"
    }
    with pytest.raises(ValueError, match=r"expected rank_teacher\.KEY=VALUE"):
        with_overrides(ws, ["class_teacher.epochs=2"], tmp_path / "x", section="rank_teacher")
    with pytest.raises(ParamsError, match="less than or equal to 5"):  # K! classes: checked first
        with_overrides(ws, ["rank_teacher.k=9"], tmp_path / "y", section="rank_teacher")


def test_a_probe_folder_reads_as_a_workspace_with_the_runs_data_and_class_teacher(tmp_path):
    from research.ablation import Workspace
    from research.rank_probe import link_workspace

    run = tmp_path / "run"
    (run / "data" / "aligned" / "crops").mkdir(parents=True)
    (run / "data" / "split").mkdir(parents=True)
    (run / "data" / "split" / "test.csv").write_text("crop,age\n")
    (run / "models").mkdir()
    (run / "models" / "class_teacher.pt").write_bytes(b"class")
    (run / "models" / "rank_teacher.pt").write_bytes(b"rank of the run")
    (run / "params.yaml").write_text("x: 1\n")
    probe = tmp_path / "run" / "rank-probe" / "k4"
    probe.mkdir(parents=True)
    (probe / "params.yaml").write_text("x: 2\n")
    link_workspace(Workspace.of(run), probe)
    (probe / "models" / "rank_teacher.pt").write_bytes(b"rank of the probe")
    link_workspace(Workspace.of(run), probe)  # a resumed probe: the links stay as they are

    ws = Workspace.of(probe)
    ws.check()
    assert ws.class_teacher.read_bytes() == b"class"
    assert ws.rank_teacher.read_bytes() == b"rank of the probe"
    assert ws.params.read_text() == "x: 2\n"
    assert (ws.split / "test.csv").read_text() == "crop,age\n"


def test_the_table_puts_the_workspace_first_then_each_finished_probe(tmp_path):
    import json

    from research.probes import format_rows, table
    from research.rank_probe import KIND

    def test(mae, utk, aaf):
        by_source = {"utkface": {"mae": utk, "mae_flip": utk}, "aaf": {"mae": aaf, "mae_flip": aaf}}
        return {"mae": mae, "mae_flip": mae - 0.1, "by_source": by_source}

    root = tmp_path / "rank-probe"
    for name, fit in {"k4": {"best_val_kendall_tau": 0.831, "train_wall_s": 2962.0},
                      "unfinished": None}.items():  # fmt: skip
        (root / name).mkdir(parents=True)
        (root / name / "sets.txt").write_text("rank_teacher.k=4\nrank_teacher.min_gap=3\n")
        if fit:
            (root / name / "result.json").write_text(
                json.dumps({"fit": fit, "test": test(6.1, 5.8, 6.2)})
            )
    rows = table(test(6.47, 6.02, 6.44), {"best_val_kendall_tau": 0.843, "train_wall_s": 742.5},
                 root, KIND)  # fmt: skip
    assert [r["name"] for r in rows] == ["workspace", "k4"]  # a probe without a result is left out
    lines = format_rows(rows, KIND).splitlines()
    assert lines[0].split(" | ")[2:5] == ["val τ", "aaf", "utkface"]  # sources sorted by name
    assert lines[2].split(" | ")[1:6] == ["(the run's own)", "0.843", "6.440", "6.020", "6.470"]
    assert lines[2].endswith("| 742 |")
    assert lines[3].split(" | ")[1:6] == ["rank_teacher.k=4 rank_teacher.min_gap=3", "0.831",
                                          "6.200", "5.800", "6.100"]  # fmt: skip
    rows[1]["best_val_kendall_tau"] = rows[1]["train_wall_s"] = None
    assert format_rows(rows, KIND).splitlines()[3].endswith("| 6.100 | 6.000 |  |")


def test_the_workspace_teacher_is_scored_once_per_file(tmp_path, monkeypatch):
    import research.rank_probe as rp
    from research.ablation import Workspace

    ws = Workspace.of(tmp_path)
    ws.rank_teacher.parent.mkdir(parents=True)
    ws.rank_teacher.write_bytes(b"teacher one")
    calls = []
    monkeypatch.setattr(rp, "probe_score", lambda f, w: calls.append(f) or {"mae": len(calls)})
    root = tmp_path / "rank-probe"
    assert rp.workspace_score(ws, root) == {"mae": 1}
    assert rp.workspace_score(ws, root) == {"mae": 1}  # kept: not scored again
    ws.rank_teacher.write_bytes(b"teacher two")  # another file: scored afresh
    assert rp.workspace_score(ws, root) == {"mae": 2}
    assert calls == [ws.rank_teacher, ws.rank_teacher]
