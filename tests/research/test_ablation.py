"""The ablation grid's plan and its statistics (the training itself is the distill code)."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest

from agedistill.config import ParamsError
from research.ablation import format_table, plan, plot_table, summarize


def test_plan_runs_every_seed_of_a_variant_before_the_next_variant():
    assert plan(["both", "soft"], [0, 1]) == [("both", 0), ("both", 1), ("soft", 0), ("soft", 1)]
    with pytest.raises(ValueError, match="unknown variant"):
        plan(["both", "kd"], [0])


def _write(out, variant, seed, mae, adult=5.0):
    p = out / "runs" / f"{variant}-s{seed}.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps({"variant": variant, "seed": seed, "fit": {"train_wall_s": 10.0},
                             "test": {"mae": mae, "mae_21_60": adult}}))  # fmt: skip


def test_summary_gives_mean_std_and_margin_in_standard_errors(tmp_path):
    for seed, mae in enumerate([5.0, 5.2, 5.4]):
        _write(tmp_path, "both", seed, mae)
    _write(tmp_path, "soft", 0, 5.9)
    table = summarize(tmp_path, class_teacher_mae=6.0)
    both = table["both"]
    assert both["mean"] == pytest.approx(5.2) and both["std"] == pytest.approx(0.2)
    assert both["sem"] == pytest.approx(0.2 / math.sqrt(3))
    assert both["margin_in_sem"] == pytest.approx(0.8 / (0.2 / math.sqrt(3)))
    assert "margin_in_sem" not in table["soft"]  # one seed has no standard error
    assert table["soft"]["std"] is None and table["soft"]["sem"] is None  # null in JSON, not NaN
    md = format_table(table)
    assert "| student, both | 5.200 ± 0.200 | 3 |" in md and "class teacher" in md
    assert "| student, soft | 5.900 | 1 |" in md  # no "± nan" for one seed
    assert plot_table(table, tmp_path / "a.png").stat().st_size > 1000


def test_summary_gives_the_gain_over_the_twin_and_the_mae_per_source(tmp_path):
    def write(variant, seed, mae, by_source):
        p = tmp_path / "runs" / f"{variant}-s{seed}.json"
        p.parent.mkdir(parents=True, exist_ok=True)
        test = {"mae": mae, "mae_21_60": mae,
                "by_source": {k: {"mae": v} for k, v in by_source.items()}}  # fmt: skip
        p.write_text(json.dumps({"variant": variant, "seed": seed,
                                 "fit": {"train_wall_s": 1.0}, "test": test}))  # fmt: skip

    for seed, (both, none) in enumerate([(5.0, 5.5), (5.2, 5.6), (5.4, 5.7)]):
        write("both", seed, both, {"utkface": both - 0.5, "aaf": both + 0.5})
        write("none", seed, none, {"utkface": none - 0.5, "aaf": none + 0.5})
    table = summarize(tmp_path)
    gap_se = math.hypot(0.2 / math.sqrt(3), 0.1 / math.sqrt(3))
    assert table["both"]["gain_over_twin"] == pytest.approx(0.4)
    assert table["both"]["gain_over_twin_in_se"] == pytest.approx(0.4 / gap_se)
    assert "gain_over_twin" not in table["none"]
    assert table["both"]["mae_by_source"]["utkface"]["mean"] == pytest.approx(4.7)
    md = format_table(table)
    assert md.splitlines()[0].endswith("| aaf MAE | utkface MAE |")
    assert f"+0.400 ({0.4 / gap_se:.1f})" in md and "4.700 ± 0.200" in md
    assert "gain_over_soft" not in table["both"]  # no soft runs


def test_summary_gives_the_hint_share_as_both_against_soft(tmp_path):
    for seed, (both, soft) in enumerate([(5.0, 5.3), (5.1, 5.4), (5.2, 5.8)]):
        _write(tmp_path, "both", seed, both)
        _write(tmp_path, "soft", seed, soft)
    table = summarize(tmp_path)
    gap_se = math.hypot(0.1 / math.sqrt(3), statistics.stdev([5.3, 5.4, 5.8]) / math.sqrt(3))
    assert table["both"]["gain_over_soft"] == pytest.approx(0.4)
    assert table["both"]["gain_over_soft_in_se"] == pytest.approx(0.4 / gap_se)
    assert "gain_over_soft" not in table["soft"]
    row = next(line for line in format_table(table).splitlines() if "student, both" in line)
    assert f"+0.400 ({0.4 / gap_se:.1f})" in row


def test_summary_without_runs_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="no finished ablation runs"):
        summarize(tmp_path)


def test_runs_from_other_teachers_are_refused(tmp_path):
    from research.ablation import check_teachers

    ours = {"class_teacher": "a" * 64, "rank_teacher": "b" * 64}
    _write(tmp_path, "both", 0, 5.0)  # an old run without a record passes
    check_teachers(tmp_path, ours)
    p = tmp_path / "runs" / "both-s1.json"
    p.write_text(json.dumps({"variant": "both", "seed": 1, "teachers": ours}))
    check_teachers(tmp_path, ours)
    with pytest.raises(ValueError, match="other teachers"):
        check_teachers(tmp_path, {**ours, "rank_teacher": "c" * 64})


def test_summary_keeps_the_flip_mae_when_every_run_has_it(tmp_path):
    for seed, (mae, flip) in enumerate([(5.0, 4.9), (5.2, 5.0)]):
        _write(tmp_path, "both", seed, mae)
        p = tmp_path / "runs" / f"both-s{seed}.json"
        run = json.loads(p.read_text())
        run["test"]["mae_flip"] = flip
        p.write_text(json.dumps(run))
    _write(tmp_path, "soft", 0, 5.9)  # scored before flip existed
    table = summarize(tmp_path)
    assert table["both"]["mae_flip"] == pytest.approx(4.95)
    assert table["both"]["mae_flip_std"] == pytest.approx(math.sqrt(0.005))  # 2 x 0.05^2 / 1
    assert "mae_flip" not in table["soft"]


def test_probe_overrides_change_only_distill_params_and_stay_with_their_folder(tmp_path):
    import yaml

    from research.ablation import Workspace, with_overrides

    ws = Workspace(params=tmp_path / "params.yaml")
    ws.params.write_text(Path("params.yaml").read_text())  # the repository's own params
    out = tmp_path / "probe"
    probe = with_overrides(ws, ["distill.mixup=0.2", "distill.train.epochs=60"], out)
    written = yaml.safe_load(probe.params.read_text())
    assert probe.params == out / "params.yaml" and probe.class_teacher == ws.class_teacher
    assert written["distill"]["mixup"] == 0.2 and written["distill"]["train"]["epochs"] == 60
    assert written["class_teacher"] == yaml.safe_load(ws.params.read_text())["class_teacher"]
    assert with_overrides(ws, [], out).params == probe.params  # resume / table: same params
    assert with_overrides(ws, ["distill.mixup=0.2", "distill.train.epochs=60"], out) == probe
    with pytest.raises(ValueError, match="other params"):
        with_overrides(ws, ["distill.mixup=0.4"], out)
    with pytest.raises(ValueError, match=r"expected distill\.KEY=VALUE"):
        with_overrides(ws, ["class_teacher.epochs=3"], tmp_path / "other")
    with pytest.raises(ParamsError, match="mixup_alpha"):
        with_overrides(ws, ["distill.mixup_alpha=1"], tmp_path / "other")  # unknown key


def test_a_probe_may_move_the_rank_teachers_hint_stage_but_no_other_teacher_key(tmp_path):
    import yaml

    from research.ablation import Workspace, with_overrides

    ws = Workspace(params=tmp_path / "params.yaml")
    ws.params.write_text(Path("params.yaml").read_text())
    own = yaml.safe_load(ws.params.read_text())
    stage = own["rank_teacher"]["hint_stage"] - 1
    probe = with_overrides(ws, [f"distill.hint_stage={own['distill']['hint_stage'] - 1}",
                                f"rank_teacher.hint_stage={stage}"], tmp_path / "s")  # fmt: skip
    written = yaml.safe_load(probe.params.read_text())
    assert written["rank_teacher"] == {**own["rank_teacher"], "hint_stage": stage}
    with pytest.raises(ValueError, match=r"expected distill\.KEY=VALUE"):
        with_overrides(ws, ["rank_teacher.epochs=3"], tmp_path / "other")


def test_variants_keep_the_params_weight_of_each_signal_they_keep():
    from agedistill.config import load_params
    from research.ablation import variant_weights

    own = load_params(Path("params.yaml")).distill
    d = own.model_copy(update={"kd_weight": 0.5, "hint_weight": 2.0})
    assert variant_weights("both", d) == {"kd_weight": 0.5, "hint_weight": 2.0}
    assert variant_weights("hint", d) == {"kd_weight": 0.0, "hint_weight": 2.0}
    assert variant_weights("none", d) == {"kd_weight": 0.0, "hint_weight": 0.0}
    # the repository's params give the weights every grid so far was trained with
    assert variant_weights("both", own) == {"kd_weight": 1.0, "hint_weight": 1.0}
    with pytest.raises(ValueError, match=r"hint_weight=0\.0"):
        variant_weights("both", own.model_copy(update={"hint_weight": 0.0}))


def test_a_class_teacher_probe_changes_only_its_section(tmp_path):
    import yaml

    from research.ablation import Workspace, with_overrides

    ws = Workspace(params=tmp_path / "params.yaml")
    ws.params.write_text(Path("params.yaml").read_text())
    own = yaml.safe_load(ws.params.read_text())
    probe = with_overrides(ws, ["class_teacher.input_size=144"], tmp_path / "px144",
                           section="class_teacher")  # fmt: skip
    written = yaml.safe_load(probe.params.read_text())
    assert written["class_teacher"] == {**own["class_teacher"], "input_size": 144}
    assert {k: v for k, v in written.items() if k != "class_teacher"} == {
        k: v for k, v in own.items() if k != "class_teacher"
    }
    with pytest.raises(ValueError, match=r"expected class_teacher\.KEY=VALUE"):
        with_overrides(ws, ["distill.mixup=0.4"], tmp_path / "x", section="class_teacher")
    with pytest.raises(ParamsError, match="input_size"):  # validated before any training
        with_overrides(ws, ["class_teacher.input_size=-1"], tmp_path / "y", section="class_teacher")


def test_killing_a_grid_takes_its_training_workers_with_it(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "grid.py"
    script.write_text(
        "import multiprocessing as mp, os, time\n"
        "from research.ablation import exit_on_sigterm\n"
        "def pid(_):\n"
        "    time.sleep(0.05)\n"
        "    return os.getpid()\n"
        "if __name__ == '__main__':\n"
        "    with exit_on_sigterm(), mp.get_context('spawn').Pool(2) as pool:\n"
        "        print(*pool.map(pid, range(8), chunksize=1), flush=True)\n"
        "        pool.map(time.sleep, [60, 60])\n"
    )  # fmt: skip
    root = str(Path(__file__).resolve().parents[2])  # research/ is not installed: on the path
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                            env=env)  # fmt: skip
    workers = {int(p) for p in proc.stdout.readline().split()}
    assert len(workers) >= 1
    time.sleep(0.5)  # the workers are asleep in their 60-s task
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) != 0

    def alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    deadline = time.time() + 10
    while any(alive(p) for p in workers) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(alive(p) for p in workers)


def test_workspace_of_a_folder_puts_every_path_under_it(tmp_path):
    from research.ablation import Workspace

    ws = Workspace.of(tmp_path)
    assert ws.params == tmp_path / "params.yaml"
    assert ws.crops == tmp_path / "data/aligned/crops"
    assert ws.split == tmp_path / "data/split"
    assert ws.class_teacher == tmp_path / "models/class_teacher.pt"
    assert ws.rank_teacher == tmp_path / "models/rank_teacher.pt"


def test_teacher_probe_table_puts_each_source_in_its_column():
    from research.probes import format_rows
    from research.teacher_probe import KIND

    rows = [
        {"name": "workspace", "best_val_mae": 5.26, "train_wall_s": 1607.0, "test_mae": 5.39,
         "test_mae_flip": 5.28, "by_source": {"utkface": {"mae": 5.18}, "aaf": {"mae": 5.27}}},
        {"name": "px144", "best_val_mae": 4.99, "train_wall_s": None, "test_mae": 5.26,
         "test_mae_flip": 5.15, "by_source": {"utkface": {"mae": 4.98}, "aaf": {"mae": 5.20}},
         "sets": ["class_teacher.input_size=144"]},
    ]  # fmt: skip
    lines = format_rows(rows, KIND).splitlines()
    assert lines[0].split(" | ")[3:5] == ["aaf", "utkface"]  # sources sorted by name
    assert lines[2].split(" | ")[1:6] == ["(the run's own)", "5.260", "5.270", "5.180", "5.390"]
    assert lines[3].split(" | ")[1:6] == ["class_teacher.input_size=144", "4.990", "5.200",
                                          "4.980", "5.260"]  # fmt: skip
    assert lines[3].endswith("|  |")  # no wall time recorded: an empty cell, not "None"


def test_a_workspace_with_more_class_teachers_distils_from_their_ensemble(tmp_path):
    from dataclasses import replace

    from agedistill.models.ensemble import TeacherEnsemble
    from research.ablation import Workspace
    from tests.unit.test_ensemble import _saved

    ws = Workspace.of(tmp_path)
    assert ws.more_class_teachers == ()
    ws = replace(ws, class_teacher=_saved(tmp_path, "a", 0)[0], rank_teacher=tmp_path / "r.pt")
    single, _ = ws.load_class_teacher()
    assert not isinstance(single, TeacherEnsemble)
    more = replace(ws, more_class_teachers=(_saved(tmp_path, "b", 1)[0],))
    ensemble, config = more.load_class_teacher()
    assert isinstance(ensemble, TeacherEnsemble) and len(ensemble.members) == 2
    assert config["input_size"] == 32
