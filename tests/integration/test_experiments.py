"""Two experiments compared as DVC and MLflow users do: parent runs, ``report --exps``, plots.

A tiny-params copy of the repository runs ``dvc repro``, is committed, then runs
``dvc exp run -n temp4 -S distill.temperature=4`` (which reruns only ``distill`` and
``evaluate``). A real ``mlflow server`` then answers over its REST API, and headless Chromium
renders ``dvc plots show`` / ``dvc plots diff`` pages built from the offline template.
"""

from __future__ import annotations

import re
import sys

import pytest

from tests.integration.browser import chromium, dump_dom
from tests.integration.mlflow_server import is_parent, metrics, mlflow_server, params, runs, tags
from tests.integration.pipeline_repo import run, two_experiments

pytestmark = pytest.mark.integration

HEADLINE = {"student_mae", "twin_mae", "class_teacher_mae", "rank_teacher_mae", "gain_over_twin",
            "gain_over_class_teacher", "student_cs5", "student_mae_21_60", "student_params",
            "student_file_mb", "student_faces_per_s", "student_std_coverage", "student_mae_flip",
            "student_mae_21_60_flip", "student_std_coverage_flip"}  # fmt: skip
PLOTS = 4  # the plots dvc.yaml declares


@pytest.fixture(scope="module")
def experiments(repo, tmp_path_factory):
    """(repo copy, {"baseline": evaluate.json, "temp4": evaluate.json})."""
    dst = tmp_path_factory.mktemp("experiments")
    return dst, two_experiments(repo, dst)


@pytest.fixture(scope="module")
def store(experiments):
    """Every run of the copy's store, read through a real ``mlflow server``."""
    dst, _ = experiments
    with mlflow_server(dst) as base:
        yield runs(base)


def _parents(store: list[dict]) -> dict[float, dict]:
    return {float(params(r)["distill.temperature"]): r for r in store if is_parent(r)}


def test_one_parent_run_per_pipeline_execution(experiments, store):
    _, results = experiments
    parents = _parents(store)
    assert sorted(parents) == [2.0, 4.0]  # dvc repro, then dvc exp run -S distill.temperature=4
    assert parents[4.0]["info"]["run_name"] == "temp4"
    assert parents[2.0]["info"]["run_name"].startswith("workspace-")
    for temperature, key in ((2.0, "baseline"), (4.0, "temp4")):
        parent = parents[temperature]
        got = metrics(parent)
        assert set(got) >= HEADLINE
        # the metrics of the outputs this execution holds, not of another run
        near = {"abs": 5e-5}  # logged to 4 decimals
        assert got["student_mae"] == pytest.approx(results[key]["student"]["mae"], **near)
        assert got["class_teacher_mae"] == pytest.approx(
            results[key]["class_teacher"]["mae"], **near
        )
        assert got["gain_over_twin"] == pytest.approx(
            results[key]["twin"]["mae"] - results[key]["student"]["mae"], **near
        )
        assert parent["info"]["status"] == "FINISHED"
        # the whole pipeline's params, flattened
        p = params(parent)
        assert p["align.size"] == "64" and p["split.seed"] == "0"
        assert p["class_teacher.epochs"] == "6" and p["rank_teacher.train.epochs"] == "1"
        assert p["class_teacher.backbone"] == "mobilenet_v2"


def test_stage_runs_are_children_of_their_execution(store):
    parents = _parents(store)
    children: dict[str, set[str]] = {r["info"]["run_id"]: set() for r in parents.values()}
    for r in store:
        if not is_parent(r):
            children[tags(r)["mlflow.parentRunId"]].add(tags(r)["agedistill.stage"])
    assert children[parents[2.0]["info"]["run_id"]] == {
        "rank_teacher", "class_teacher", "twin", "distill", "evaluate"
    }  # fmt: skip
    # DVC reran only what the temperature reaches; those runs sit under the experiment's parent
    assert children[parents[4.0]["info"]["run_id"]] == {"distill", "evaluate"}


def test_report_exps_puts_the_headline_first(experiments):
    dst, results = experiments
    out = run([sys.executable, "-m", "agedistill.cli", "report", "--exps"], dst)
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["experiment", "changed", "params"]
    (exp,) = [line for line in lines if line.startswith("temp4 ")]
    student, teacher = results["temp4"]["student"]["mae"], results["temp4"]["class_teacher"]["mae"]
    twin = results["temp4"]["twin"]["mae"]
    assert exp.split() == [
        "temp4", "distill.temperature=4", f"{student:.3f}", f"{twin:.3f}", f"{teacher:.3f}",
        f"{twin - student:+.3f}",
    ]  # fmt: skip
    (base,) = [line for line in lines if line.startswith("master ")]
    assert base.split()[1] == "-"  # the baseline commit: nothing changed against itself
    assert base.split()[2] == f"{results['baseline']['student']['mae']:.3f}"


def _charts(dom: str) -> list[str]:
    """The SVG chart each plot drew (vega's ``<svg class="marks">``), as HTML."""
    return re.findall(r'<svg [^>]*class="marks".*?</svg>', dom, flags=re.S)


needs_chromium = pytest.mark.skipif(chromium() is None, reason="chromium is not installed")


@needs_chromium
def test_plots_show_draws_every_chart_offline(experiments, tmp_path):
    dst, _ = experiments
    run(["dvc", "plots", "show", "-o", str(tmp_path / "show")], dst)
    page = (tmp_path / "show" / "index.html").read_text()
    assert "<script src=" not in page and "cdn.jsdelivr" not in page  # nothing to fetch
    charts = _charts(dump_dom((tmp_path / "show" / "index.html").as_uri()))
    assert len(charts) == PLOTS
    for chart in charts:
        # drawn: axes and data marks (lines, points or bars), not an empty frame
        assert "role-axis" in chart
        assert len(re.findall(r"<path", chart)) >= 5
    assert "error threshold (years)" in charts[0]  # dvc.yaml's x_label of the CS curve


@needs_chromium
def test_plots_diff_draws_both_experiments(experiments, tmp_path):
    dst, _ = experiments
    run(["dvc", "plots", "diff", "master", "temp4", "-o", str(tmp_path / "diff")], dst)
    dom = dump_dom((tmp_path / "diff" / "index.html").as_uri())
    charts = _charts(dom)
    assert len(charts) == PLOTS
    # vega labels each mark with its revision: both experiments are drawn in the CS curve
    revs = set(re.findall(r"rev: ([\w-]+)", charts[0]))
    assert {"master", "temp4"} <= revs
