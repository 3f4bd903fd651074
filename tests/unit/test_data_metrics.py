import numpy as np
import pandas as pd
import pytest
import torch

from agedistill.data.augment import (
    augment,
    batches,
    color_jitter,
    jitter,
    similarity_jitter,
)
from agedistill.evaluation.metrics import cumulative_score, group_label, grouped_mae, mae
from agedistill.models.inputs import normalize
from agedistill.training.recipes import kendall_tau


def test_augment_flips_and_shifts_within_bounds():
    g = torch.Generator().manual_seed(0)
    img = torch.arange(2 * 3 * 8 * 8, dtype=torch.uint8).view(2, 3, 8, 8)
    assert torch.equal(augment(img, 0, False, g), img)
    out = augment(img, 2, True, g)
    assert out.shape == img.shape
    flipped_or_not = augment(img.repeat(50, 1, 1, 1), 0, True, g)
    n_flipped = sum(torch.equal(x, img[i % 2].flip(-1)) for i, x in enumerate(flipped_or_not))
    assert 20 < n_flipped < 80


def test_shift_moves_content():
    g = torch.Generator().manual_seed(3)
    img = torch.zeros(64, 1, 9, 9, dtype=torch.uint8)
    img[:, :, 4, 4] = 255
    out = augment(img, 2, False, g)
    peaks = [tuple((x[0] == 255).nonzero()[0].tolist()) for x in out]
    assert all(abs(r - 4) <= 2 and abs(c - 4) <= 2 for r, c in peaks)
    assert len(set(peaks)) > 5


def test_shift_is_a_window_of_the_edge_replicated_face_at_the_drawn_offset():
    img = torch.randint(0, 256, (16, 3, 10, 12), dtype=torch.uint8,
                        generator=torch.Generator().manual_seed(1))  # fmt: skip
    out = jitter(img, 2, False, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)  # the same draws: x offsets, then y offsets
    dx, dy = torch.randint(0, 5, (16,), generator=g), torch.randint(0, 5, (16,), generator=g)
    padded = torch.nn.functional.pad(img.float(), [2] * 4, mode="replicate")
    assert out.shape == (16, 3, 10, 12) and out.dtype == torch.float32
    for i, (y, x) in enumerate(zip(dy.tolist(), dx.tolist(), strict=True)):
        assert torch.equal(out[i], padded[i, :, y : y + 10, x : x + 12])
    assert len(set(zip(dy.tolist(), dx.tolist(), strict=True))) > 5


def test_batches_cover_every_index_once():
    got = torch.cat(list(batches(10, 3, True, torch.Generator().manual_seed(0))))
    assert sorted(got.tolist()) == list(range(10))


def test_normalize_range():
    x = normalize(torch.tensor([0, 255], dtype=torch.uint8))
    assert x.tolist() == pytest.approx([-2.0, 2.0])


def test_metrics_by_hand():
    pred, true = np.array([10.0, 25.0, 70.0]), np.array([12.0, 20.0, 70.0])
    assert mae(pred, true) == pytest.approx(7 / 3)
    assert cumulative_score(pred, true, 5) == pytest.approx(
        [1 / 3, 1 / 3, 2 / 3, 2 / 3, 2 / 3, 1.0]
    )
    rows = pd.DataFrame({"age": true, "gender": [0, 1, 1], "race": [2, 2, None]})
    g = grouped_mae(pred, rows)
    assert g["age_group"] == {"0-12": 2.0, "20-39": 5.0, "60+": 0.0}
    assert g["gender"] == {"male": 2.0, "female": 2.5}
    assert g["race"] == {"asian": 3.5}
    assert [group_label(a) for a in (0, 12, 13, 19, 59, 60)] == [
        "0-12",
        "0-12",
        "13-19",
        "13-19",
        "40-59",
        "60+",
    ]


def test_kendall_tau_by_hand():
    assert kendall_tau(torch.tensor([[0, 1, 2]]), torch.tensor([[0, 1, 2]])).item() == 1.0
    assert kendall_tau(
        torch.tensor([[1, 0, 2]]), torch.tensor([[0, 1, 2]])
    ).item() == pytest.approx(1 / 3)


def test_report_prints_the_committed_table(repo, capsys):
    from agedistill.cli import main

    assert main(["report", str(repo / "metrics" / "evaluate.json")]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:2] == ["model", "MAE"]
    assert {"student", "class_teacher", "rank_teacher"} <= {
        ln.split()[0] for ln in out.splitlines()[2:]
    }
    assert main(["report", str(repo / "missing.json")]) == 2


def test_similarity_jitter_keeps_size_range_and_draws_per_face():
    img = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8).repeat(6, 1, 1, 1)
    g = torch.Generator().manual_seed(0)
    same = similarity_jitter(img, 0.0, 0.0, g)  # no rotation, no zoom: the identity
    assert torch.allclose(same, img.float(), atol=1e-3)
    out = similarity_jitter(img, 20.0, 0.2, g)
    assert out.shape == img.shape and out.min() >= 0 and out.max() <= 255
    assert not torch.allclose(out[0], out[1])  # each face gets its own transform
    # a 2x zoom-out of a constant face stays constant: borders replicate, no black corners
    flat = torch.full((2, 3, 16, 16), 200, dtype=torch.uint8)
    assert torch.allclose(similarity_jitter(flat, 45.0, 0.45, g), flat.float(), atol=1e-3)


def test_color_jitter_scales_brightness_within_bounds():
    img = torch.full((200, 3, 8, 8), 100, dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(color_jitter(img, 0.0, g), img.float())
    out = color_jitter(img, 0.3, g)
    # grey faces: contrast and saturation leave them grey, brightness scales them by 0.7..1.3
    means = out.mean((1, 2, 3))
    assert means.min() >= 70 - 1e-3 and means.max() <= 130 + 1e-3
    assert means.std() > 5  # drawn per face
    assert torch.allclose(out, means[:, None, None, None].expand_as(out))
    assert color_jitter(torch.full((4, 3, 2, 2), 250, dtype=torch.uint8), 0.9, g).max() <= 255


def test_augment_draws_no_random_numbers_for_knobs_that_are_off():
    img = torch.randint(0, 256, (16, 3, 12, 12), dtype=torch.uint8)
    g = torch.Generator().manual_seed(5)
    before = g.get_state()
    out = augment(img, 0, False, g, rotate=0.0, scale=0.0, color=0.0)
    assert torch.equal(g.get_state(), before) and torch.equal(out, img)
    augment(img, 0, False, g, color=0.1)
    assert not torch.equal(g.get_state(), before)


def test_mix_pairs_blends_each_face_with_a_partner_by_one_weight():
    from agedistill.data.augment import mix_pairs

    x = torch.arange(5 * 3 * 2 * 2, dtype=torch.float32).view(5, 3, 2, 2)
    gen = torch.Generator().manual_seed(0)
    mixed, partner, lam = mix_pairs(x, 0.4, np.random.default_rng(0), gen)
    assert sorted(partner.tolist()) == list(range(5))  # a permutation of the batch
    assert 0 < lam < 1 and lam == float(np.random.default_rng(0).beta(0.4, 0.4))
    assert torch.allclose(mixed, lam * x + (1 - lam) * x[partner])
    again = mix_pairs(x, 0.4, np.random.default_rng(0), torch.Generator().manual_seed(0))
    assert torch.equal(again[0], mixed)  # the same seeds give the same blend
    with pytest.raises(ValueError, match="positive"):
        mix_pairs(x, 0.0, np.random.default_rng(0), torch.Generator())


def test_resize_faces_matches_the_resize_of_load_time(sample_images):
    from PIL import Image

    from agedistill.models.inputs import resize_faces

    path = sorted(sample_images.glob("*.jpg"))[0]
    with Image.open(path) as im:
        im = im.convert("RGB").resize((64, 64), Image.Resampling.BILINEAR)
        big = torch.from_numpy(np.array(im)).permute(2, 0, 1)[None].float()
        small = (
            torch.from_numpy(np.array(im.resize((32, 32), Image.Resampling.BILINEAR)))
            .permute(2, 0, 1)[None]
            .float()
        )
    assert resize_faces(big, 64) is big
    ours = resize_faces(big, 32)
    assert ours.shape == (1, 3, 32, 32)
    assert (ours - small).abs().mean() < 1.5  # grey levels: the same antialiased bilinear filter
    naive = big[..., ::2, ::2]  # what skipping the filter would give
    assert (naive - small).abs().mean() > 2 * (ours - small).abs().mean()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("jitter", [{}, {"rotate": 10.0, "scale": 0.1, "color": 0.2}])
def test_augment_on_a_gpu_draws_what_the_cpu_draws(jitter):
    x = torch.randint(0, 256, (64, 3, 48, 48), dtype=torch.uint8)
    on_cpu = augment(x, 4, True, torch.Generator().manual_seed(1), **jitter)
    on_gpu = augment(x.cuda(), 4, True, torch.Generator().manual_seed(1), **jitter)
    assert on_gpu.is_cuda
    # the same flips and shifts exactly; jitter's interpolation may round differently
    assert (on_gpu.cpu() - on_cpu).abs().max() <= (0.01 if jitter else 0.0)
