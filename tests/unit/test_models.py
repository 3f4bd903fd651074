import math
import pickle

import pytest
import torch

from agedistill.config import AgesParams, ModelParams
from agedistill.faces.detection import model_crop
from agedistill.models.backbones import BACKBONE_NAMES
from agedistill.models.files import ModelFileError, build_model, load_model, save_model
from agedistill.models.folding import fold_batchnorm
from agedistill.models.nets import (
    ConvNet,
    HintAdapter,
    RankTeacher,
    count_parameters,
    plackett_luce_logits,
)
from agedistill.models.ordinal import permutations
from agedistill.training.recipes import convnet_config


def test_student_shapes_and_size_budget():
    m = ConvNet([32, 64, 128, 192], 101, stem_stride=2)
    emb, maps = m.forward_features(torch.randn(2, 3, 64, 64))
    assert emb.shape == (2, 192)
    assert [tuple(x.shape[1:]) for x in maps] == [
        (32, 32, 32),
        (64, 16, 16),
        (128, 8, 8),
        (192, 4, 4),
    ]
    assert m(torch.randn(2, 3, 64, 64)).shape == (2, 101)
    assert count_parameters(m) < 1_000_000


def test_rank_teacher_outputs_one_logit_per_permutation():
    t = RankTeacher([16, 32, 64], k=4, feature_dim=8, stem_stride=2)
    assert t(torch.randn(5, 4, 3, 32, 32)).shape == (5, 24)
    assert [m.shape[1] for m in t.feature_maps(torch.randn(1, 3, 32, 32))] == [16, 32, 64]


def _plackett_luce_by_hand(scores: list[float], perm: list[int]) -> float:
    """log P of the order that puts the face at position j at age rank perm[j], oldest first."""
    left = sorted(range(len(perm)), key=lambda j: -perm[j])  # positions, oldest face first
    logp = 0.0
    while left:
        logp += scores[left[0]] - math.log(sum(math.exp(scores[j]) for j in left))
        left = left[1:]
    return logp


@pytest.mark.parametrize("k", [2, 3, 4])
def test_plackett_luce_logits_are_each_orders_likelihood(k):
    scores = torch.randn(3, k, dtype=torch.float64)
    logits = plackett_luce_logits(scores)
    perms = permutations(k)
    assert logits.shape == (3, math.factorial(k))
    for b in range(3):
        for i, p in enumerate(perms.tolist()):
            by_hand = _plackett_luce_by_hand(scores[b].tolist(), p)
            assert logits[b, i].item() == pytest.approx(by_hand)
    assert torch.allclose(logits.exp().sum(-1), torch.ones(3, dtype=torch.float64))
    # the most likely order ranks the faces by their scores
    best = perms[logits.argmax(-1)]
    assert torch.equal(best, scores.argsort(-1).argsort(-1))


def test_plackett_luce_logits_are_float32_under_bf16_autocast():
    scores = torch.tensor([[3.2, -1.7, 0.4, 2.9]]).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = plackett_luce_logits(scores)
    assert logits.dtype == torch.float32
    assert float(logits.exp().sum()) == pytest.approx(1.0, abs=1e-6)


def test_plackett_luce_head_scores_each_face_and_rejects_unknown_heads():
    t = RankTeacher([16, 32, 64], k=3, feature_dim=8, stem_stride=2, head="plackett_luce")
    out = t(torch.randn(5, 3, 3, 32, 32))
    assert out.shape == (5, 6) and not hasattr(t, "perm_head")
    assert torch.allclose(out.exp().sum(-1), torch.ones(5), atol=1e-5)
    with pytest.raises(ValueError, match="unknown ranking head 'pairs'"):
        RankTeacher([16, 32, 64], k=3, feature_dim=8, head="pairs")


def test_adapter_maps_student_channels_to_teacher_channels():
    a = HintAdapter(128, 256)
    assert a(torch.randn(2, 128, 8, 8)).shape == (2, 256, 8, 8)


def test_depthwise_network_is_smaller():
    dense = ConvNet([32, 64, 128], 10)
    dw = ConvNet([32, 64, 128], 10, depthwise=True)
    assert count_parameters(dw) < count_parameters(dense) / 3


@pytest.fixture
def saved(tmp_path):
    config = convnet_config(
        ModelParams(widths=[8, 16], stem_stride=2, depthwise=False, dropout=0.0, input_size=32),
        AgesParams(min_age=0, max_age=10),
    )  # fmt: skip
    model = build_model(config)
    path = tmp_path / "m.pt"
    save_model(path, model, config)
    return path, model


def test_model_round_trip_is_exact_and_weights_only(saved):
    path, model = saved
    loaded, _ = load_model(path)
    x = torch.randn(3, 3, 32, 32)
    model.eval()
    assert torch.equal(model(x), loaded(x))
    assert path.with_suffix(".json").is_file()
    torch.load(path, weights_only=True)  # must not need pickled code


def test_model_file_errors_are_one_line_and_name_the_file(saved, tmp_path):
    with pytest.raises(ModelFileError, match="no such model file"):
        load_model(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ModelFileError, match=str(bad.name)):
        load_model(bad)

    class Evil:
        def __reduce__(self):
            return (exec, ("raise SystemExit('pickled code ran')",))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(ModelFileError, match="pickled"):
        load_model(evil)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(1)}, other)
    with pytest.raises(ModelFileError, match="not an agedistill model"):
        load_model(other)
    future = tmp_path / "future.pt"
    torch.save({"format": "agedistill-model/9", "config": {}, "state_dict": {}}, future)
    with pytest.raises(ModelFileError, match="agedistill-model/9"):
        load_model(future)


def test_model_config_records_how_faces_were_aligned():
    arch = ModelParams(widths=[8], stem_stride=2, depthwise=False, dropout=0.0, input_size=32)
    ages = AgesParams(min_age=0, max_age=10)
    crop = {"margin": 0.1, "template": "utkface", "detect_pad": 0.3, "size": 112}
    config = convnet_config(arch, ages, crop=crop)
    assert config["align_margin"] == 0.1 and config["align_template"] == "utkface"
    assert config["align_detect_pad"] == 0.3 and config["align_size"] == 112
    # defaults: what models were trained with before these keys existed (size 0: input_size)
    old = convnet_config(arch, ages)
    assert (old["align_margin"], old["align_template"], old["align_size"]) == (0.0, "arcface", 0)
    # read back for serving, size 0 is the input side, whatever the key's presence
    assert model_crop(config)["size"] == 112 and model_crop(old)["size"] == 32
    assert model_crop({k: v for k, v in old.items() if k != "align_size"})["size"] == 32


@pytest.mark.parametrize(
    ("size", "stride", "widths"),
    [(64, 2, [32, 64, 128, 192]), (128, 2, [16, 32, 64, 128, 192]), (64, 1, [8, 8, 8]),
     (63, 2, [4, 4, 4, 4]), (97, 2, [4, 4, 4])],
)  # fmt: skip
def test_stage_sides_are_the_feature_map_sides(size, stride, widths):
    from agedistill.models.nets import stage_sides

    net = ConvNet(widths, 5, stem_stride=stride).eval()
    maps = net.forward_features(torch.zeros(1, 3, size, size))[1]
    assert stage_sides(size, stride, len(widths)) == [m.shape[-1] for m in maps]


@pytest.mark.parametrize("backbone", ["convnet", *BACKBONE_NAMES])
def test_the_hint_map_equals_the_full_pass_and_runs_no_later_layer(backbone):
    rt = RankTeacher([8, 16, 32], k=3, feature_dim=8, backbone=backbone).eval()
    folded = fold_batchnorm(rt).to(memory_format=torch.channels_last)  # as distill runs it
    x = torch.randn(2, 3, 48, 48).contiguous(memory_format=torch.channels_last)
    convs = [m for m in folded.backbone.modules() if isinstance(m, torch.nn.Conv2d)]
    calls = []
    for conv in convs:
        conv.register_forward_hook(lambda m, i, o: calls.append(m))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        maps = folded.feature_maps(x)
        full = len(calls)
        for stage, expected in enumerate(maps):
            calls.clear()
            assert torch.equal(folded.feature_map(x, stage), expected)
            assert (len(calls) < full) == (stage < len(maps) - 1)
    with pytest.raises(IndexError, match=f"stage {len(maps)}: the network has {len(maps)} stages"):
        rt.feature_map(x, len(maps))
