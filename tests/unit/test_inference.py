"""The inference copy of a network: the same outputs, BatchNorm folded, the original untouched."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from agedistill.models.files import load_model
from agedistill.models.inputs import normalize
from agedistill.models.nets import RankTeacher
from agedistill.models.predictions import predict_ages, predict_logits
from agedistill.serving.inference import for_inference
from agedistill.training.recipes import train_classifier
from tests.chips import chip_table
from tests.params import AGES, model_params, train_params

ARCH = {"widths": [8, 16, 24], "stem_stride": 1, "depthwise": False, "dropout": 0.1,
        "input_size": 32}  # fmt: skip


@pytest.fixture(scope="module")
def trained(sample_images, tmp_path_factory):
    """A tiny net trained two epochs on real chips (BatchNorm statistics far from 0 and 1)."""
    faces = chip_table(sample_images, step=10, n=64)
    path = tmp_path_factory.mktemp("inference") / "net.pt"
    opt = train_params(2, batch_size=16)
    train_classifier(faces, faces, model_params(ARCH), opt, AGES, out=path)
    return load_model(path)[0], normalize(faces.images)


def _batchnorms(net: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in net.modules())


def test_inference_copy_gives_the_same_logits_on_real_faces(trained):
    model, x = trained
    fast = for_inference(model)
    assert _batchnorms(fast) == 0 and _batchnorms(model) == 6  # folded in the copy only
    with torch.inference_mode():
        ref = model.eval()(x)
        assert torch.allclose(fast(x), ref, atol=1e-4)
        assert torch.allclose(fast(x.contiguous(memory_format=torch.channels_last)), ref, atol=1e-4)


def test_original_network_is_left_trainable(trained):
    model = trained[0]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for_inference(model.train())
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    model.eval()


def test_rank_teacher_backbone_folds_too():
    t = RankTeacher([8, 16], k=3, feature_dim=4, stem_stride=2).eval()
    x = torch.randn(3, 3, 32, 32)
    fast = for_inference(t.backbone)
    assert _batchnorms(fast) == 0
    with torch.inference_mode():
        assert torch.allclose(fast(x), t.backbone(x), atol=1e-5)


def test_flip_averages_each_face_with_its_mirror_image(trained):
    model, x = trained
    faces = ((x - x.min()) / (x.max() - x.min()) * 255).round().to(torch.uint8)  # uint8 again
    plain = predict_ages(model, faces, 0)
    mirrored = predict_ages(model, faces.flip(-1), 0)
    both = predict_ages(model, faces, 0, flip=True)
    assert not torch.allclose(plain, mirrored, atol=1e-3)  # a real face is not symmetric
    assert torch.allclose(both, (plain + mirrored) / 2, atol=1e-4)
    # batching does not change the result
    assert torch.allclose(predict_logits(model, faces, batch_size=7, flip=True),
                          predict_logits(model, faces, flip=True), atol=1e-5)  # fmt: skip


def test_probe_flip_reads_the_mirror_image_features(sample_images):
    from agedistill.data.tables import FaceTable
    from agedistill.evaluation.scoring import linear_probe

    faces = chip_table(sample_images, step=10, n=64)
    torch.manual_seed(0)
    rt = RankTeacher([8, 16], k=3, feature_dim=4, stem_stride=2)
    plain, flip = linear_probe(rt, faces, faces)
    assert plain.shape == flip.shape == (64,) and not torch.allclose(
        torch.from_numpy(plain), torch.from_numpy(flip), atol=1e-3
    )
    # faces that are their own mirror image: both probes see the same features
    sym = faces.images.clone()
    sym[..., sym.shape[-1] // 2 :] = sym[..., : sym.shape[-1] // 2].flip(-1)
    mirror = FaceTable(sym, faces.ages, faces.rows)
    plain, flip = linear_probe(rt, mirror, mirror)
    assert torch.allclose(torch.from_numpy(plain), torch.from_numpy(flip), atol=1e-6)


def test_probe_resizes_faces_to_the_teachers_input_size(sample_images):
    from agedistill.data.tables import FaceTable
    from agedistill.evaluation.scoring import linear_probe

    big = chip_table(sample_images, step=10, n=64, size=32)
    torch.manual_seed(0)
    rt = RankTeacher([8, 16], k=3, feature_dim=4, stem_stride=2)
    # the probe on 32-px faces resized for a 16-px teacher reads what the teacher reads
    from agedistill.models.inputs import resize_faces

    small = resize_faces(big.images.float(), 16).round().clamp(0, 255).to(torch.uint8)
    resized, _ = linear_probe(rt, big, big, size=16)
    direct, _ = linear_probe(rt, FaceTable(small, big.ages, big.rows),
                             FaceTable(small, big.ages, big.rows))  # fmt: skip
    unresized, _ = linear_probe(rt, big, big)
    assert abs(resized - direct).max() < 0.5  # only the rounding to uint8 differs
    assert abs(resized - unresized).max() > 1.0


def test_probe_ages_are_the_probe_clipped_to_the_age_range(sample_images):
    import numpy as np

    from agedistill.config import AgesParams
    from agedistill.evaluation.scoring import linear_probe, probe_ages

    faces = chip_table(sample_images, step=10, n=64)
    torch.manual_seed(0)
    rt = RankTeacher([8, 16], k=3, feature_dim=4, stem_stride=2)
    raw, raw_flip = linear_probe(rt, faces, faces, size=16)
    lo, hi = (int(a) for a in np.percentile(raw, [25, 75]).round())  # clips both tails
    plain, flip = probe_ages(rt, faces, faces, AgesParams(min_age=lo, max_age=hi), 16)
    assert plain.min() == lo and plain.max() == hi and flip.min() >= lo and flip.max() <= hi
    inside = (raw > lo) & (raw < hi)
    assert inside.any() and np.array_equal(plain[inside], raw[inside])
    assert np.array_equal(flip, np.clip(raw_flip, lo, hi))


def test_score_reports_flip_metrics_only_when_given(sample_images):
    from agedistill.evaluation.scoring import score

    faces = chip_table(sample_images, step=10, n=64)
    true = faces.ages.numpy().astype(float)
    plain = score(true + 2.0, faces, 5)
    assert plain["mae"] == pytest.approx(2.0) and "mae_flip" not in plain
    both = score(true + 2.0, faces, 5, pred_flip=true - 1.0)
    assert both["mae"] == pytest.approx(2.0) and both["mae_flip"] == pytest.approx(1.0)
    assert ((true >= 21) & (true <= 60)).any() and both["mae_21_60_flip"] == pytest.approx(1.0)
