"""Pretrained teachers, the twin, unlabelled faces and age_std calibration in the trainers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agedistill.config import ClassTeacherParams, ParamsError, load_params, parse_params
from agedistill.data.tables import UNLABELLED_AGE, FaceTable
from agedistill.models.backbones import pretrained_state
from agedistill.models.files import build_model, load_model, save_model
from agedistill.models.predictions import age_mae
from agedistill.training import recipes
from agedistill.training.calibration import calibrate_model_file, fit_std_scale
from agedistill.training.recipes import Teachers, classifier_config, train_classifier, train_student
from tests.chips import chip_table
from tests.params import AGES, distill_params, model_params, train_params

ARCH = {"widths": [8, 16, 24], "stem_stride": 2, "depthwise": False, "dropout": 0.0,
        "input_size": 32}  # fmt: skip
MODEL = model_params(ARCH)
CONVNET = {"arch": "convnet", **ARCH, "num_classes": 101, "min_age": 0}
RANKER = {"arch": "rank_teacher", **ARCH, "widths": [8, 16, 32], "k": 3, "feature_dim": 8}


@pytest.fixture(scope="module")
def faces(sample_images) -> FaceTable:
    return chip_table(sample_images, step=8, n=64)


def pretrained_teacher(epochs: int = 1, **change) -> ClassTeacherParams:
    base = train_params(epochs).model_dump()
    return ClassTeacherParams(**{**base, "backbone": "mobilenet_v2", "input_size": 32, **change})


def test_a_pretrained_class_teacher_starts_from_the_package_weights(faces, tmp_path):
    config = classifier_config(MODEL, pretrained_teacher(), AGES)
    assert config["arch"] == "pretrained" and config["backbone"] == "mobilenet_v2"
    assert config["input_size"] == 32 and config["num_classes"] == 101
    net = build_model(config)
    recipes._load_pretrained(net, config)
    state = pretrained_state("mobilenet_v2")
    for key, value in net.net.state_dict().items():
        assert torch.equal(value, state[key]), key
    # trained one epoch, the file loads back as that architecture with its calibrated spread
    out = tmp_path / "ct.pt"
    metrics = train_classifier(faces, faces, MODEL, pretrained_teacher(lr=1e-4), AGES, out=out)
    model, saved = load_model(out)
    assert saved["arch"] == "pretrained" and saved["age_std_scale"] == metrics["age_std_scale"]
    # one epoch at a low learning rate moves the ImageNet weights only a little
    moved = model.net.state_dict()["features.0.0.weight"] - state["features.0.0.weight"]
    assert 0 < moved.abs().max() < 0.1


def test_the_students_net_stays_the_default_class_teacher():
    config = classifier_config(MODEL, train_params(1), AGES)
    assert config["arch"] == "convnet" and config["widths"] == ARCH["widths"]


def test_params_reject_an_unknown_backbone_by_name():
    raw = load_params().model_dump()
    raw["rank_teacher"]["model"]["backbone"] = "resnet50"
    with pytest.raises(ParamsError, match=r"rank_teacher\.model\.backbone.*resnet50"):
        parse_params(raw)
    raw = load_params().model_dump()
    raw["class_teacher"]["backbone"] = "vgg16"
    with pytest.raises(ParamsError, match=r"class_teacher\.backbone.*vgg16"):
        parse_params(raw)


def test_a_pretrained_ranking_teachers_map_is_pooled_to_the_students(faces, tmp_path):
    """The hint reads a 112-px MobileNetV2's stride-8 map (14x14) against a 64-px student's 8x8."""
    raw = load_params().model_dump()
    raw["rank_teacher"]["model"].update(backbone="mobilenet_v2", input_size=112)
    raw["rank_teacher"]["hint_stage"] = 2
    raw["distill"]["hint_stage"] = 2
    parse_params(raw)  # 14 >= 8: accepted
    raw["rank_teacher"]["hint_stage"] = 3  # 7x7 < 8x8
    with pytest.raises(ParamsError, match="at least the student's side"):
        parse_params(raw)


def test_the_twin_trains_without_teachers_and_reads_what_the_student_reads(faces, tmp_path):
    history = []
    metrics = train_student(
        faces, faces, MODEL, distill_params(train_params(2)), AGES, None,
        out=tmp_path / "twin.pt", log=lambda m, e: history.append(m),
    )  # fmt: skip
    assert "kd_loss" not in str(history) and "hint_loss" not in str(history)
    assert all(h["train_gt_loss"] == pytest.approx(h["train_loss"]) for h in history)
    assert metrics["age_std_scale"] > 0
    twin, config = load_model(tmp_path / "twin.pt")  # the best epoch's, scored as validated
    assert age_mae(twin, faces.images, faces.ages, AGES.min_age) == pytest.approx(
        metrics["best_val_mae"], abs=1e-4
    )
    assert config["arch"] == "convnet" and config["age_std_scale"] == metrics["age_std_scale"]


def test_unlabelled_faces_reach_the_teacher_terms_and_never_the_ground_truth(
    faces, tmp_path, monkeypatch
):
    labelled = FaceTable(faces.images[:32], faces.ages[:32], faces.rows.iloc[:32])
    extra = FaceTable(faces.images[32:], torch.full((32,), UNLABELLED_AGE), faces.rows.iloc[32:])
    gt_rows, kd_rows = [], []
    age_loss, kd_loss = recipes.age_loss, recipes.kd_loss

    def spy_gt(logits, labels, *args, **kwargs):
        gt_rows.append((len(logits), int(labels.min())))
        return age_loss(logits, labels, *args, **kwargs)

    def spy_kd(student, teacher, t):
        kd_rows.append(len(student))
        return kd_loss(student, teacher, t)

    monkeypatch.setattr(recipes, "age_loss", spy_gt)
    monkeypatch.setattr(recipes, "kd_loss", spy_kd)
    params = distill_params(train_params(2, batch_size=16), unlabelled_ratio=0.5)
    teachers = Teachers(build_model(CONVNET), build_model(RANKER), 1)
    train_student(labelled, labelled, MODEL, params, AGES, teachers, out=tmp_path / "s.pt",
                  unlabelled=extra)  # fmt: skip
    assert len(kd_rows) == 4 and set(kd_rows) == {16 + 8}  # 2 epochs x 2 batches, 8 extra each
    assert [n for n, _ in gt_rows] == [16] * 4  # the ground truth reads the labelled rows only
    assert all(lowest >= 0 for _, lowest in gt_rows)  # no unlabelled age ever became a label


def test_std_scale_puts_the_asked_share_within_the_spread():
    rng = np.random.default_rng(0)
    true = rng.uniform(0, 80, 5000)
    std = rng.uniform(1, 5, 5000)
    pred = true + rng.normal(0, 2.5 * std)  # the spread is 2.5x too narrow
    scale = fit_std_scale(pred, std, true)
    assert scale == pytest.approx(2.5, rel=0.05)
    inside = np.abs(pred - true) <= scale * std
    assert inside.mean() == pytest.approx(0.6827, abs=0.002)
    with pytest.raises(ValueError, match="no faces"):
        fit_std_scale(np.zeros(0), np.zeros(0), np.zeros(0))


def test_calibration_is_written_into_the_model_file(faces, tmp_path):
    path = tmp_path / "m.pt"
    torch.manual_seed(0)
    save_model(path, build_model(CONVNET), CONVNET)
    out = calibrate_model_file(path, faces)
    _, config = load_model(path)
    assert config["age_std_scale"] == out["age_std_scale"]
    assert out["val_std_coverage"] == pytest.approx(0.6827, abs=1.5 / len(faces))
    # the age_std the file now serves is the calibrated one: the same faces need no more scaling
    from agedistill.serving.loading import load_age_model

    model = load_age_model(path)
    crops = faces.images.permute(0, 2, 3, 1).numpy()
    age, std = model.ages(crops)
    assert fit_std_scale(age, std, faces.ages.numpy()) == pytest.approx(1.0, rel=1e-4)


def test_the_twin_trains_by_its_declared_distill_fields_alone(faces, tmp_path):
    """Every DistillParams field outside TWIN_DISTILL_FIELDS changed at once: the same twin."""
    base = distill_params(train_params(1, batch_size=16, jpeg=0.5))
    others = {
        "temperature": 4.0,
        "kd_weight": 0.0,
        "hint_weight": 3.0,
        "hint_stage": 0,
        "hint_norm": "attention",
        "unlabelled_ratio": 0.5,
        "teachers_read_clean": True,
    }
    assert set(others) | set(recipes.TWIN_DISTILL_FIELDS) == set(type(base).model_fields)
    states = []
    for i, params in enumerate((base, base.model_copy(update=others))):
        train_student(faces, faces, MODEL, params, AGES, None, out=tmp_path / f"twin{i}.pt")
        states.append(load_model(tmp_path / f"twin{i}.pt")[0].state_dict())
    for name, tensor in states[0].items():
        assert torch.equal(tensor, states[1][name]), name


@pytest.mark.parametrize("balance", [0.0, 0.5])
def test_age_balance_weights_each_faces_ground_truth_by_its_age(
    faces, tmp_path, monkeypatch, balance
):
    from agedistill.training.age_balance import age_balance_weights

    calls = []
    age_loss = recipes.age_loss

    def spy_gt(logits, labels, sigma, mae, *, weights=None):
        calls.append((labels.clone(), weights))
        return age_loss(logits, labels, sigma, mae, weights=weights)

    monkeypatch.setattr(recipes, "age_loss", spy_gt)
    params = distill_params(train_params(1, batch_size=16), age_balance=balance)
    train_student(faces, faces, MODEL, params, AGES, None, out=tmp_path / "twin.pt")
    assert len(calls) == 4  # 64 faces, batches of 16
    if balance == 0:
        assert all(w is None for _, w in calls)
        return
    labels = faces.labels(AGES.min_age)
    weights = age_balance_weights(labels, AGES.num_classes, balance).tolist()
    by_class = dict(zip(labels.tolist(), weights, strict=True))
    seen = torch.cat([y for y, _ in calls])
    assert sorted(seen.tolist()) == sorted(labels.tolist())  # every face once in the epoch
    for y, w in calls:
        assert w.tolist() == pytest.approx([by_class[c] for c in y.tolist()])
    assert len(set(by_class.values())) > 1  # the chips' ages differ, so do their weights
