"""``evaluate``'s scoring per test source: real chips, tiny saved models, metrics read back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from agedistill.config import EvaluateParams
from agedistill.data.tables import FaceTable
from agedistill.evaluation.metrics import grouped_mae, mae
from agedistill.evaluation.scoring import evaluate_models, summary_table, write_plots
from agedistill.models.files import build_model, save_model
from tests.chips import chip_table
from tests.params import AGES

ARCH = {"widths": [8, 16], "stem_stride": 2, "depthwise": False, "dropout": 0.0,
        "input_size": 32}  # fmt: skip
# the keys each model's results held before they were also given per source
OVERALL = {"mae", "mae_21_60", "mae_flip", "mae_21_60_flip", *(f"cs{t}" for t in range(6)),
           "mae_age_group", "params", "file_mb", "faces_per_s", "latency_batch_ms",
           "latency_single_ms", "faces_per_s_eager"}  # fmt: skip
STD_SCALE = 1.7  # the student's age_std_scale
UTK, APPA, ONE = "utkface", "/data/raw/APPA-REAL", "one_child"  # any strings, a path among them


@pytest.fixture(scope="module")
def faces(sample_images) -> FaceTable:
    """48 real chips from two fake sources, and one child alone in a third."""
    t = chip_table(sample_images, step=10, n=48)
    source = np.where(np.arange(len(t)) % 3 == 0, APPA, UTK).astype(object)
    source[int(np.flatnonzero(t.ages.numpy() < 13)[0])] = ONE
    return FaceTable(t.images, t.ages, t.rows.assign(source=source))


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory) -> dict[str, Path]:
    """Three untrained tiny models saved to files; the student with an ``age_std_scale``."""
    tmp = tmp_path_factory.mktemp("scoring")
    torch.manual_seed(0)
    classifier = {"arch": "convnet", **ARCH, "num_classes": 101, "min_age": 0}
    ranker = {"arch": "rank_teacher", **ARCH, "k": 3, "feature_dim": 4}
    paths = {}
    calibrated = {**classifier, "age_std_scale": STD_SCALE}
    for name, config in (("student", calibrated), ("class_teacher", classifier),
                         ("rank_teacher", ranker)):  # fmt: skip
        paths[name] = tmp / f"{name}.pt"
        save_model(paths[name], build_model(config), config)
    return paths


@pytest.fixture(scope="module")
def evaluated(faces, saved_models):
    """(results, predictions) of evaluate_models on the saved tiny models."""
    params = EvaluateParams(cs_max=5, latency_batch=2, latency_repeats=1)
    return evaluate_models(saved_models, lambda size: (faces, faces), AGES, params)


def test_every_metric_is_also_given_per_source(faces, evaluated):
    results, preds = evaluated
    true = faces.ages.numpy()
    source = faces.rows["source"].to_numpy()
    for name, r in results.items():
        age_model = name != "rank_teacher"
        spread = {"std_coverage", "std_coverage_flip"} if age_model else set()
        assert set(r) == OVERALL | {"by_source"} | spread
        # the overall numbers are those of all faces, as before
        assert r["mae"] == pytest.approx(mae(preds[name], true))
        groups = grouped_mae(preds[name], faces.rows)["age_group"]
        assert r["mae_age_group"] == pytest.approx(groups)
        assert list(r["by_source"]) == sorted([UTK, APPA, ONE])
        assert sum(s["n"] for s in r["by_source"].values()) == len(faces)
        for src, s in r["by_source"].items():
            keep = source == src
            assert s["n"] == keep.sum()
            assert s["mae"] == pytest.approx(mae(preds[name][keep], true[keep]))
            assert s["cs5"] == pytest.approx(np.mean(np.abs(preds[name][keep] - true[keep]) <= 5))
            assert s["worst_group_ratio"] == pytest.approx(
                max(s["mae_age_group"].values()) / s["mae"]
            )
            assert "mae_flip" in s and "worst_group_ratio_flip" in s
            assert ("std_coverage" in s) == ("std_coverage_flip" in s) == age_model
    assert len({r["by_source"][UTK]["mae"] for r in results.values()}) == 3  # each model's own


def test_std_coverage_is_the_share_within_the_calibrated_spread(faces, evaluated, saved_models):
    """Coverage by hand: softmax, median and spread in numpy, the spread times the file's scale;
    with flip, of the mixture of each face's and its mirror image's distributions."""
    from agedistill.models.files import load_model
    from agedistill.models.inputs import normalize

    results, preds = evaluated
    true = faces.ages.numpy().astype(float)
    source = faces.rows["source"].to_numpy()

    def probabilities(model, images: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            logits = model.eval()(normalize(images)).double().numpy()
        p = np.exp(logits - logits.max(1, keepdims=True))
        return p / p.sum(1, keepdims=True)

    def median_and_spread(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k = np.arange(p.shape[1])
        mean = p @ k
        spread = np.sqrt(np.clip(p @ k**2 - mean**2, 0, None))
        # the median: the first class where the cumulative share reaches one half, each class
        # spread evenly over [age - 0.5, age + 0.5)
        cdf = p.cumsum(1)
        c = (cdf < 0.5).sum(1)
        rows = np.arange(len(p))
        return c - 0.5 + (0.5 - (cdf[rows, c] - p[rows, c])) / p[rows, c], spread

    by_hand = {}
    for name, scale in (("student", STD_SCALE), ("class_teacher", 1.0)):
        model, _ = load_model(saved_models[name])
        p = probabilities(model, faces.images)
        median, spread = median_and_spread(p)
        inside = np.abs(median - true) <= spread * scale
        by_hand[name] = inside.mean(), (np.abs(median - true) <= spread).mean()
        assert np.allclose(median, preds[name], atol=1e-3)
        assert results[name]["std_coverage"] == pytest.approx(inside.mean())
        # with flip: the mixture of the face's and its mirror image's distributions
        mixed = (p + probabilities(model, faces.images.flip(-1))) / 2
        median_f, spread_f = median_and_spread(mixed)
        inside_f = np.abs(median_f - true) <= spread_f * scale
        assert results[name]["mae_flip"] == pytest.approx(np.abs(median_f - true).mean(), abs=1e-3)
        assert results[name]["std_coverage_flip"] == pytest.approx(inside_f.mean())
        for src in (UTK, APPA, ONE):
            keep = source == src
            got = results[name]["by_source"][src]
            assert got["std_coverage"] == pytest.approx(inside[keep].mean())
            assert got["std_coverage_flip"] == pytest.approx(inside_f[keep].mean())
            groups = grouped_mae(median_f[keep], faces.rows[keep])["age_group"]
            worst = max(groups.values()) / np.abs(median_f[keep] - true[keep]).mean()
            assert got["worst_group_ratio_flip"] == pytest.approx(worst, rel=1e-3)
    scaled, unscaled = by_hand["student"]
    assert scaled > unscaled  # the file's scale widened the spread: more true ages inside


def test_a_one_face_source_leaves_out_what_it_has_no_faces_for(evaluated):
    results, _ = evaluated
    one = results["student"]["by_source"][ONE]
    assert one["n"] == 1 and list(one["mae_age_group"]) == ["0-12"]
    assert one["worst_group_ratio"] == pytest.approx(1.0)
    assert "mae_21_60" not in one and "mae_21_60_flip" not in one  # a child: no adults, no NaN
    assert "mae_21_60" in results["student"]["by_source"][UTK]


def test_without_a_source_column_results_are_as_before(faces, evaluated):
    from agedistill.evaluation.scoring import score

    results, preds = evaluated
    plain = FaceTable(faces.images, faces.ages, faces.rows.drop(columns="source"))
    got = score(preds["student"].to_numpy(), plain, 5)
    assert "by_source" not in got
    assert got["mae"] == results["student"]["mae"] and got["cs5"] == results["student"]["cs5"]


def test_summary_lists_every_source_once_per_model(evaluated):
    results, _ = evaluated
    lines = summary_table(results).splitlines()
    for src in (UTK, APPA, ONE):
        rows = [line for line in lines if line.startswith(src + " ")]
        assert [line.split()[1] for line in rows] == list(results)
        n, student_mae = rows[0].split()[2:4]
        student = results["student"]["by_source"][src]
        assert int(n) == student["n"] and float(student_mae) == pytest.approx(
            student["mae"], abs=5e-3
        )
    one = next(line for line in lines if line.startswith(ONE + " "))
    assert "nan" in one and "1.00x (0-12)" in one


def test_summary_of_one_source_is_the_table_of_before(evaluated):
    results, _ = evaluated
    one = {n: {**r, "by_source": {UTK: r["by_source"][UTK]}} for n, r in results.items()}
    before = {n: {k: v for k, v in r.items() if k != "by_source"} for n, r in results.items()}
    assert summary_table(one) == summary_table(before)
    assert UTK not in summary_table(one)


def test_plots_include_the_mae_per_source(evaluated, tmp_path):
    results, preds = evaluated
    pngs = write_plots(results, preds, tmp_path)
    table = pd.read_csv(tmp_path / "mae_by_source.csv")
    assert list(table.columns) == ["source", "student", "class_teacher", "rank_teacher"]
    assert list(table["source"]) == sorted([UTK, APPA, ONE])
    for _, row in table.iterrows():
        for name in results:
            assert row[name] == pytest.approx(results[name]["by_source"][row["source"]]["mae"])
    assert pngs["mae_by_source"].stat().st_size > 0


def test_headline_gives_the_students_mae_per_source(evaluated):
    from agedistill.pipeline.headline import headline

    results, _ = evaluated
    h = headline(results)
    by = results["student"]["by_source"]
    assert h["student_mae_data_raw_appa_real"] == pytest.approx(by[APPA]["mae"], abs=5e-5)
    assert h["student_mae_utkface"] == pytest.approx(by[UTK]["mae"], abs=5e-5)
    assert h["student_mae_one_child"] == pytest.approx(by[ONE]["mae"], abs=5e-5)
