"""bf16 autocast and channels-last training: same files, float32 losses, clear errors."""

from __future__ import annotations

import warnings

import pytest
import torch

from agedistill.models.files import build_model, load_model
from agedistill.models.predictions import age_mae
from agedistill.training import precision
from agedistill.training.losses import age_loss, hint_loss, kd_loss, mixed_age_loss
from agedistill.training.precision import autocast, check_precision, to_memory_format
from agedistill.training.recipes import Teachers, train_classifier, train_student
from tests.chips import chip_table
from tests.params import AGES, distill_params, model_params, train_params
from tests.unit.test_train import ARCH

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def faces(sample_images):
    return chip_table(sample_images, step=8, n=96)


def fast_opt(epochs: int):
    return train_params(epochs, precision="bf16", channels_last=True)


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="fp32"):
        check_precision("fp16", CPU)


def test_emulated_bf16_warns(monkeypatch):
    monkeypatch.setattr(precision, "native_bf16", lambda device: False)
    with pytest.warns(RuntimeWarning, match="emulated"):
        check_precision("bf16", CPU)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_precision("fp32", CPU)


def test_autocast_runs_convolutions_in_bf16_only_when_asked():
    conv = torch.nn.Conv2d(3, 4, 3)
    x = torch.randn(2, 3, 8, 8)
    with autocast("fp32", CPU):
        assert conv(x).dtype == torch.float32
    with autocast("bf16", CPU):
        assert conv(x).dtype == torch.bfloat16


def test_channels_last_lays_out_conv_weights_and_keeps_outputs():
    net = build_model({"arch": "convnet", **ARCH, "num_classes": 5, "min_age": 0}).eval()
    x = torch.randn(2, 3, 32, 32)
    before = net(x)
    to_memory_format([net], True)
    conv = net.stages[0][0][0]
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not conv.weight.is_contiguous()
    torch.testing.assert_close(net(x), before, rtol=1e-4, atol=1e-5)


def test_losses_are_float32_under_bf16_autocast():
    torch.manual_seed(0)
    s = torch.randn(4, 7).bfloat16()
    t = torch.randn(4, 7).bfloat16()
    y = torch.tensor([0, 3, 6, 2])
    small, large = torch.randn(4, 5, 2, 2), torch.randn(4, 5, 4, 4)
    with autocast("bf16", CPU):
        values = {
            "kd": kd_loss(s, t, 3.0),
            "age": age_loss(s, y, label_sigma=1.0, mae_weight=0.5),
            "mixed": mixed_age_loss(s, y, torch.tensor([1, 0, 3, 2]), 0.3, 1.0, 0.5),
            "hint": hint_loss(small.bfloat16(), large.bfloat16()),
        }
    assert all(v.dtype == torch.float32 for v in values.values())
    # the same numbers as float32 arithmetic on the same (bf16-representable) inputs
    assert values["kd"].item() == pytest.approx(kd_loss(s.float(), t.float(), 3.0).item(), rel=1e-5)
    assert values["age"].item() == pytest.approx(
        age_loss(s.float(), y, label_sigma=1.0, mae_weight=0.5).item(), rel=1e-5
    )
    mixed = mixed_age_loss(s.float(), y, torch.tensor([1, 0, 3, 2]), 0.3, 1.0, 0.5)
    assert values["mixed"].item() == pytest.approx(mixed.item(), rel=1e-5)
    hint = hint_loss(small.bfloat16().float(), large.bfloat16().float())
    # the larger map is pooled in bfloat16 before the float32 norm: within its rounding (2^-8)
    assert values["hint"].item() == pytest.approx(hint.item(), rel=1e-3)


def test_bf16_channels_last_training_learns_and_saves_a_plain_model(faces, tmp_path):
    history = []
    out = tmp_path / "ct.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a CI CPU may emulate bf16
        result = train_classifier(
            faces, faces, model_params(ARCH), fast_opt(6), AGES, out=out,
            log=lambda m, e: history.append(m),
        )  # fmt: skip
    losses = [h["train_loss"] for h in history]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0] - 0.3
    state = torch.load(out, weights_only=True)["state_dict"]
    assert all(v.dtype in (torch.float32, torch.int64) for v in state.values())
    assert all(v.is_contiguous() for v in state.values())  # NCHW on file
    model, _ = load_model(out)  # a plain float32 NCHW model, scored without autocast
    assert age_mae(model, faces.images, faces.ages, 0) == pytest.approx(
        result["best_val_mae"], abs=1e-3
    )


def test_bf16_distillation_with_every_term(faces, tmp_path):
    config = {"arch": "convnet", **ARCH, "num_classes": 101, "min_age": 0}
    ct = build_model(config)
    rt = build_model(
        {"arch": "rank_teacher", **ARCH, "widths": [8, 16, 32], "k": 3, "feature_dim": 8}
    )
    logs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        train_student(
            faces, faces, model_params(ARCH), distill_params(fast_opt(2), mixup=0.2), AGES,
            Teachers(ct, rt, 1), out=tmp_path / "s.pt", log=lambda m, e: logs.append(m),
        )  # fmt: skip
    for key in ("train_gt_loss", "train_kd_loss", "train_hint_loss"):
        assert all(torch.isfinite(torch.tensor(m[key])) for m in logs)
        assert logs[-1][key] > 0
    # distill reads folded, channels-last copies of the teachers: the caller's are untouched
    assert ct.stages[0][0][0].weight.is_contiguous()
    assert isinstance(ct.stages[0][0][1], torch.nn.BatchNorm2d)
