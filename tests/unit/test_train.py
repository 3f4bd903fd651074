"""Tiny end-to-end trainings on real sample chips (resized, no detector): fast and real."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from agedistill.config import RankTeacherParams
from agedistill.data.tables import FaceTable
from agedistill.models.files import build_model, load_model
from agedistill.models.predictions import age_mae
from agedistill.training.recipes import (
    Teachers,
    train_classifier,
    train_rank_teacher,
    train_student,
)
from tests.chips import chip_table
from tests.params import AGES, distill_params, model_params, train_params

ARCH = {
    "widths": [8, 16, 24],
    "stem_stride": 2,
    "depthwise": False,
    "dropout": 0.0,
    "input_size": 32,
}


@pytest.fixture(scope="module")
def faces(sample_images) -> FaceTable:
    return chip_table(sample_images, step=8, n=96)


MODEL = model_params(ARCH)


def opt(epochs: int):
    return train_params(epochs)


def test_classifier_loss_goes_down_and_best_epoch_is_saved(faces, tmp_path):
    history = []
    out = tmp_path / "ct.pt"
    m = train_classifier(
        faces, faces, MODEL, opt(6), AGES, out=out, log=lambda m, e: history.append(m)
    )
    losses = [h["train_loss"] for h in history]
    assert losses[-1] < losses[0] - 0.3
    best = min(h["val_mae"] for h in history)
    assert m["best_val_mae"] == pytest.approx(best)
    model, config = load_model(out)
    assert config["num_classes"] == 101 and config["min_age"] == 0
    from agedistill.models.predictions import age_mae

    assert age_mae(model, faces.images, faces.ages, 0) == pytest.approx(best, abs=1e-4)


def test_distillation_terms_switch_off_and_teachers_stay_frozen(faces, tmp_path):
    config = {"arch": "convnet", **ARCH, "num_classes": 101, "min_age": 0}
    ct = build_model(config)
    rt = build_model(
        {"arch": "rank_teacher", **ARCH, "widths": [8, 16, 32], "k": 3, "feature_dim": 8}
    )
    before = {k: v.clone() for k, v in ct.state_dict().items()}
    logs = []
    train_student(
        faces, faces, MODEL, distill_params(opt(1), kd_weight=0.0), AGES, Teachers(ct, rt, 1),
        out=tmp_path / "s.pt", log=lambda m, e: logs.append(m),
    )  # fmt: skip
    assert "train_kd_loss" not in logs[0] and "train_hint_loss" in logs[0]
    assert not ct.training and not rt.training
    assert all(torch.equal(before[k], v) for k, v in ct.state_dict().items())
    logs.clear()
    train_student(
        faces, faces, MODEL, distill_params(opt(1), hint_weight=0.0), AGES, Teachers(ct, rt, 1),
        out=tmp_path / "s2.pt", log=lambda m, e: logs.append(m),
    )  # fmt: skip
    assert "train_kd_loss" in logs[0] and "train_hint_loss" not in logs[0]


def test_ranking_teacher_reads_faces_at_its_own_input_size(faces, tmp_path, monkeypatch):
    config = {"arch": "convnet", **ARCH, "num_classes": 101, "min_age": 0}
    ct = build_model(config)
    # a teacher trained on 16-px faces: its stage 0 map (8x8) matches the student's stage 1
    rt = build_model({"arch": "rank_teacher", **ARCH, "input_size": 16, "widths": [8, 16],
                      "k": 3, "feature_dim": 8})  # fmt: skip
    seen = []
    feature_map = rt.feature_map
    monkeypatch.setattr(rt, "feature_map", lambda x, i: seen.append(x.shape) or feature_map(x, i))
    logs = []
    train_student(
        faces, faces, MODEL, distill_params(opt(2)), AGES, Teachers(ct, rt, 0, input_size=16),
        out=tmp_path / "s.pt", log=lambda m, e: logs.append(m),
    )  # fmt: skip
    assert seen and all(s[-2:] == (16, 16) for s in seen)
    assert logs[-1]["train_hint_loss"] < logs[0]["train_hint_loss"]
    with pytest.raises(ValueError, match=r"stage 0 map is \(16, 16\) at 32 px.*\(8, 8\) at 16 px"):
        train_student(
            faces, faces, MODEL, distill_params(opt(1), hint_stage=0), AGES,
            Teachers(ct, rt, 0, input_size=16), out=tmp_path / "s2.pt",
        )  # fmt: skip


def test_hint_check_reads_each_network_on_its_own_device():
    from agedistill.models.nets import ConvNet, RankTeacher
    from agedistill.training.recipes import _check_hint_maps

    # train_student moves the teachers to the training device before the student: here the
    # teacher sits on the meta device and the student on the CPU
    student = ConvNet([8, 16, 24], 101)
    teacher = RankTeacher([8, 16], 3, 8, stem_stride=2).eval().to("meta")
    _check_hint_maps(student, teacher, 32, 16, 1, 0)
    assert student.training  # the check leaves the student's mode as it was
    with pytest.raises(ValueError, match="choose hint stages"):
        _check_hint_maps(student, teacher, 32, 16, 0, 0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_distillation_with_hints_trains_on_a_gpu(faces, tmp_path):
    from agedistill.training.distributed import Context
    from agedistill.training.loop import TrainingSetup

    config = {"arch": "convnet", **ARCH, "num_classes": 101, "min_age": 0}
    rt = build_model({"arch": "rank_teacher", **ARCH, "input_size": 16, "widths": [8, 16],
                      "k": 3, "feature_dim": 8})  # fmt: skip
    logs = []
    run = TrainingSetup(tmp_path / "s.pt", log=lambda m, e: logs.append(m),
              ctx=Context(device=torch.device("cuda")))  # fmt: skip
    on_gpu = FaceTable(faces.images.cuda(), faces.ages, faces.rows)
    train_student(
        on_gpu, on_gpu, MODEL, distill_params(opt(2), mixup=0.2), AGES,
        Teachers(build_model(config), rt, 0, input_size=16), out=run,
    )  # fmt: skip
    assert len(logs) == 2 and logs[-1]["train_hint_loss"] > 0


@pytest.mark.parametrize("head", ["permutation", "plackett_luce"])
def test_rank_teacher_learns_order_above_chance(faces, tmp_path, head):
    history = []
    params = RankTeacherParams(
        model=model_params({**ARCH, "widths": [8, 16, 32]}).model_dump(),
        train=opt(6).model_dump(), k=3, head=head,
        min_gap=10, sampling="uniform_age", sequences_per_epoch=192, val_sequences=96,
        feature_dim=8,
    )  # fmt: skip
    train_rank_teacher(faces, faces, params, out=tmp_path / "rt.pt",
                       log=lambda m, e: history.append(m))  # fmt: skip
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert max(h["val_kendall_tau"] for h in history) > 0.1  # chance is 0
    model, config = load_model(tmp_path / "rt.pt")
    assert config["head"] == head and model.head_kind == head


class Recorder(torch.nn.Module):
    """A frozen teacher that remembers the inputs it was given."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net, self.inputs = net, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.clone())
        return self.net(x)

    def __deepcopy__(self, memo: dict) -> Recorder:  # the trainer's copy records here too
        clone = Recorder(copy.deepcopy(self.net, memo))
        clone.inputs = self.inputs
        return clone


def test_mixup_feeds_the_teacher_the_blend_the_student_reads(faces, tmp_path, monkeypatch):
    import agedistill.training.recipes as train_module
    from agedistill.data.augment import mix_pairs

    blends = []

    def spy(x, alpha, rng, generator):
        out = mix_pairs(x, alpha, rng, generator)
        blends.append(out[0].clone())
        return out

    monkeypatch.setattr(train_module, "mix_pairs", spy)
    config = {"arch": "convnet", **ARCH, "num_classes": 101, "min_age": 0}
    ct = Recorder(build_model(config))
    rt = build_model(
        {"arch": "rank_teacher", **ARCH, "widths": [8, 16, 32], "k": 3, "feature_dim": 8}
    )
    rt_inputs = []
    feature_map = rt.feature_map
    monkeypatch.setattr(
        rt, "feature_map", lambda x, i: rt_inputs.append(x.clone()) or feature_map(x, i)
    )
    history = []
    train_student(
        faces, faces, MODEL, distill_params(opt(4), mixup=0.4), AGES, Teachers(ct, rt, 1),
        out=tmp_path / "s.pt", log=lambda m, e: history.append(m),
    )  # fmt: skip
    assert len(blends) == len(ct.inputs) == len(rt_inputs) == 4 * 3  # 96 faces / 32, 4 epochs
    assert all(torch.equal(b, t) for b, t in zip(blends, ct.inputs, strict=True))
    assert all(torch.equal(b, t) for b, t in zip(blends, rt_inputs, strict=True))
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_mixup_off_draws_no_blend(faces, tmp_path, monkeypatch):
    import agedistill.training.recipes as train_module

    def refuse(*args, **kwargs):
        raise AssertionError("mix_pairs called with mixup off")

    monkeypatch.setattr(train_module, "mix_pairs", refuse)
    config = {"arch": "convnet", **ARCH, "num_classes": 101, "min_age": 0}
    rt = build_model(
        {"arch": "rank_teacher", **ARCH, "widths": [8, 16, 32], "k": 3, "feature_dim": 8}
    )
    train_student(
        faces, faces, MODEL, distill_params(opt(1)), AGES, Teachers(build_model(config), rt, 1),
        out=tmp_path / "s.pt",
    )  # fmt: skip


@pytest.mark.parametrize("clean", [False, True])
def test_teachers_read_the_faces_before_their_corruptions_when_asked(faces, tmp_path, clean):
    from agedistill.models.inputs import MEAN, STD

    config = {"arch": "convnet", **ARCH, "num_classes": 101, "min_age": 0}
    ct = Recorder(build_model(config))
    rt = build_model(
        {"arch": "rank_teacher", **ARCH, "widths": [8, 16, 32], "k": 3, "feature_dim": 8}
    )
    train = opt(1).model_copy(update={"grayscale": 1.0})  # every face the student reads is grey
    params = distill_params(train, mixup=0.4, teachers_read_clean=clean)
    train_student(faces, faces, MODEL, params, AGES, Teachers(ct, rt, 1), out=tmp_path / "s.pt")
    assert len(ct.inputs) == 3  # 96 faces, batches of 32
    for x in ct.inputs:
        rgb = x * STD + MEAN  # back to [0, 1]
        grey = (rgb[:, 0] - rgb[:, 2]).abs().amax((1, 2)) < 1e-4  # per face
        assert (~grey).all() if clean else grey.all()


def test_the_twin_makes_no_clean_view_and_trains_the_same_with_or_without_it(
    faces, tmp_path, monkeypatch
):
    import agedistill.training.recipes as train_module

    views = train_module.augment_batch_views
    calls = []
    monkeypatch.setattr(train_module, "augment_batch_views",
                        lambda *a: calls.append(1) or views(*a))  # fmt: skip
    train = opt(2).model_copy(update={"grayscale": 0.5, "scan": 0.5, "jpeg": 0.5})
    weights = []
    for clean in (False, True):
        params = distill_params(train, mixup=0.4, teachers_read_clean=clean)
        train_student(faces, faces, MODEL, params, AGES, None, out=tmp_path / f"twin{clean}.pt")
        weights.append(load_model(tmp_path / f"twin{clean}.pt")[0].state_dict())
    assert not calls  # no teacher reads a clean view, so none is made
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


@pytest.mark.parametrize("epochs", [1, 2, 4, 5])
def test_runs_of_a_few_optimiser_steps_train(faces, tmp_path, epochs):
    # one 32-face batch per epoch: 1 to 5 steps in all (OneCycleLR alone divides by zero at 4)
    few = FaceTable(faces.images[:32], faces.ages[:32], faces.rows.iloc[:32])
    history = []
    m = train_classifier(few, few, MODEL, opt(epochs), AGES, out=tmp_path / "ct.pt",
                         log=lambda m, e: history.append(m))  # fmt: skip
    assert len(history) == epochs and all(math.isfinite(h["train_loss"]) for h in history)
    saved = load_model(tmp_path / "ct.pt")[0]  # the best epoch's weights, scored as validated
    assert age_mae(saved, few.images, few.ages, AGES.min_age) == pytest.approx(
        m["best_val_mae"], abs=1e-4
    )
