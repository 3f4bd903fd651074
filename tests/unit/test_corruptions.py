"""The real-photo corruptions of ``augment`` (grey and old prints, blur, JPEG, small faces, crops).

On real faces: the bundled UTKFace chips resized to the 64 px crop size.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from agedistill.config import ParamsError, TrainParams, parse_params
from agedistill.data.augment import (
    CROP_BAND,
    SCAN_CONTRAST,
    SCAN_GRAIN,
    augment,
    augment_views,
    corrupt,
)
from agedistill.training.loop import augment_batch

KINDS = ("grayscale", "scan", "blur", "jpeg", "low_res", "crop_context")
SIDE = 64


@pytest.fixture(scope="module")
def faces(sample_images) -> torch.Tensor:
    """Twelve real faces, (12, 3, 64, 64) uint8."""
    out = []
    for path in sorted(sample_images.glob("*.jpg"))[::80][:12]:
        with Image.open(path) as im:
            im = im.convert("RGB").resize((SIDE, SIDE), Image.Resampling.BILINEAR)
            out.append(torch.from_numpy(np.array(im)).permute(2, 0, 1))
    return torch.stack(out)


def high_freq(x: torch.Tensor) -> torch.Tensor:
    """Per-face mean squared difference between neighbouring pixels, (B,)."""
    x = x.float()
    dy = (x[..., 1:, :] - x[..., :-1, :]).pow(2).mean((1, 2, 3))
    dx = (x[..., :, 1:] - x[..., :, :-1]).pow(2).mean((1, 2, 3))
    return dx + dy


def corrupted(faces: torch.Tensor, kind: str, p: float = 1.0, seed: int = 0) -> torch.Tensor:
    """``faces`` through ``augment`` with only ``kind`` on (no flips, shifts or jitter)."""
    return augment(faces, 0, False, torch.Generator().manual_seed(seed), **{kind: p})


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("p", [0.5, 1.0])
def test_output_is_float_in_0_255_with_the_batch_shape(faces, kind, p):
    out = corrupted(faces, kind, p)
    assert out.shape == faces.shape and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 255


@pytest.mark.parametrize("kind", KINDS)
def test_probability_zero_is_bit_identical_to_leaving_the_knob_out(faces, kind):
    jitter = {"rotate": 10.0, "scale": 0.1, "color": 0.2}
    g_without, g_with = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    without = augment(faces, 4, True, g_without, **jitter)
    with_zero = augment(faces, 4, True, g_with, **jitter, **{kind: 0.0})
    assert torch.equal(with_zero, without)
    assert torch.equal(g_with.get_state(), g_without.get_state())


@pytest.mark.parametrize("kind", KINDS)
def test_probability_zero_draws_nothing_and_changes_nothing(faces, kind):
    g = torch.Generator().manual_seed(5)
    before = g.get_state()
    assert corrupt(faces, g, **{kind: 0.0}) is faces
    assert torch.equal(augment(faces, 0, False, g, **{kind: 0.0}), faces)
    assert torch.equal(g.get_state(), before)
    corrupt(faces, g, **{kind: 0.5})  # on, it draws
    assert not torch.equal(g.get_state(), before)


@pytest.mark.parametrize("kind", KINDS)
def test_only_the_chosen_faces_change_and_the_caller_s_tensor_is_kept(faces, kind):
    batch = faces.repeat(3, 1, 1, 1).float()  # 36 faces, float: a step could write into it
    kept = batch.clone()
    out = corrupt(batch, torch.Generator().manual_seed(1), **{kind: 0.5})
    assert torch.equal(batch, kept)
    changed = (out != batch).flatten(1).any(1)
    assert 0 < changed.sum() < len(batch)  # some faces drawn, some left exactly as they were


@pytest.mark.parametrize("kind", KINDS)
def test_the_same_seed_gives_the_same_corruption(faces, kind):
    assert torch.equal(corrupted(faces, kind, 0.5, seed=7), corrupted(faces, kind, 0.5, seed=7))
    assert not torch.equal(corrupted(faces, kind, 0.5, seed=7), corrupted(faces, kind, 0.5, 8))


def test_grayscale_makes_the_three_channels_equal_to_the_luma(faces):
    out = corrupted(faces, "grayscale")
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])
    x = faces.float()
    luma = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    assert torch.allclose(out[:, 0], luma, atol=1e-4)
    assert not torch.equal(faces[:, 0], faces[:, 2])  # the faces were in colour


def test_scan_fades_every_face_and_tones_it_from_grey_to_sepia(faces):
    out = corrupted(faces, "scan")
    luma = lambda x: 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]  # noqa: E731
    before, after = luma(faces.float()).std((1, 2)), luma(out).std((1, 2))
    # contrast x U(0.55, 0.9), plus grain of at most 8 levels: every face flatter than it was
    assert (after < before * SCAN_CONTRAST[1] + SCAN_GRAIN[1]).all() and (after < before).all()
    red_minus_blue = (out[:, 0] - out[:, 2]).mean((1, 2))  # grain is the same on every channel
    assert (red_minus_blue >= 0).all() and (red_minus_blue > 5).sum() >= len(faces) // 2
    assert ((out[:, 0] - out[:, 2]) >= -1e-3).all()  # a print's tone: never bluer than grey


def test_scan_grain_is_monochrome_with_a_sigma_drawn_per_face():
    flat = torch.full((200, 3, SIDE, SIDE), 128, dtype=torch.uint8)
    out = corrupted(flat, "scan")
    noise = out[:, 1] - out[:, 1].mean((1, 2), keepdim=True)
    sigma = noise.std((1, 2))
    assert sigma.min() > SCAN_GRAIN[0] * 0.9 and sigma.max() < SCAN_GRAIN[1] * 1.1
    assert sigma.max() > 2 * sigma.min()  # drawn per face
    # the three channels carry the same grain: what differs between them is the tone alone
    tone = out[:, 0] - out[:, 2]
    assert (tone - tone.mean((1, 2), keepdim=True)).abs().max() < 0.5 * sigma.min()


def test_blur_removes_high_frequencies_from_every_face(faces):
    out = corrupted(faces, "blur")
    ratio = high_freq(out) / high_freq(faces)
    # every face loses some (sigma 0.4 px is a mild blur), on average much (1.6 px a strong one)
    assert (ratio < 0.95).all() and ratio.mean() < 0.7
    # a Gaussian keeps each face's mean grey level (borders replicated: up to a little)
    assert torch.allclose(out.mean((1, 2, 3)), faces.float().mean((1, 2, 3)), atol=1.0)


def test_blur_strength_varies_per_face(faces):
    same = faces[:1].repeat(16, 1, 1, 1)
    energy = high_freq(corrupted(same, "blur"))
    assert energy.max() > 1.5 * energy.min()  # sigma drawn per face


def test_jpeg_changes_every_face_a_little(faces):
    out = corrupted(faces, "jpeg")
    diff = (out - faces.float()).abs().mean((1, 2, 3))
    assert (diff > 0).all() and (diff < 10).all()
    assert torch.equal(out, out.round())  # decoded pixels: whole grey levels


def test_low_res_removes_high_frequencies_from_every_face(faces):
    out = corrupted(faces, "low_res")
    assert (high_freq(out) < 0.7 * high_freq(faces)).all()
    assert ((out - faces.float()).abs().mean((1, 2, 3)) < 20).all()  # still the same face


def test_crop_context_blacks_out_border_bands_and_keeps_the_centre(faces):
    out = corrupted(faces, "crop_context")
    edges = torch.stack(
        [out[:, :, 0, :], out[:, :, -1, :], out[:, :, :, 0], out[:, :, :, -1]], 1
    )  # (B, 4 sides, 3, side)
    assert (edges == 0).flatten(2).all(2).any(1).all()  # every face has a black border line
    black = lambda x: (x == 0).all(1).flatten(1).sum(1)  # noqa: E731  black pixels per face
    assert (black(out) > black(faces)).all()  # every face lost context it had
    band = int(CROP_BAND * SIDE)  # the widest band
    centre = (slice(None), slice(None), slice(band, SIDE - band), slice(band, SIDE - band))
    assert torch.equal(out[centre], faces[centre].float())
    untouched = out != 0  # what is not black is the face itself
    assert torch.equal(out[untouched], faces.float()[untouched])


def test_crop_context_bands_are_drawn_per_side_up_to_the_widest():
    grey = torch.full((400, 3, SIDE, SIDE), 128, dtype=torch.uint8)
    out = corrupted(grey, "crop_context")
    kept_rows, kept_cols = (out[:, 0] > 0).any(2), (out[:, 0] > 0).any(1)  # (B, side) each
    first = lambda kept: kept.float().argmax(1)  # noqa: E731  width of the band before the face
    widths = torch.stack([first(kept_rows), first(kept_rows.flip(1)),
                          first(kept_cols), first(kept_cols.flip(1))], 1)  # fmt: skip
    assert widths.min() == 0 and widths.max() == int(CROP_BAND * SIDE)  # U(0, 0.2) x side, floored
    assert abs(widths.float().mean() - (CROP_BAND * SIDE / 2 - 0.5)) < 0.3  # floor: -0.5 px
    corr = torch.corrcoef(widths.T.float())  # (4, 4): the sides drawn independently
    assert (corr - torch.eye(4)).abs().max() < 0.15
    # the band is a rectangle's complement: inside it, the face (grey) everywhere
    assert ((out == 0) | (out == 128)).all()


def test_views_are_augment_s_faces_and_the_same_moves_without_the_corruptions(faces):
    moves = {"rotate": 8.0, "scale": 0.1}
    g_views, g_plain = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    seen, clean = augment_views(faces, 5, True, g_views, **moves, grayscale=1.0, jpeg=0.0)
    assert torch.equal(seen, augment(faces, 5, True, g_plain, **moves, grayscale=1.0))
    assert torch.equal(g_views.get_state(), g_plain.get_state())  # the next batch is unchanged
    # grey is linear, so it commutes with the moves: the clean view, made grey, is the seen one
    luma = 0.299 * clean[:, 0] + 0.587 * clean[:, 1] + 0.114 * clean[:, 2]
    assert (luma - seen[:, 0]).abs().max() < 1e-3
    assert not torch.equal(clean[:, 0], clean[:, 2])  # and it kept its colour


def test_views_without_a_corruption_are_one_tensor(faces):
    seen, clean = augment_views(faces, 5, True, torch.Generator().manual_seed(4), scan=0.0)
    assert seen is clean


def test_augment_batch_passes_the_corruptions_from_the_params(faces):
    opt = TrainParams(max_shift=0, flip=False, grayscale=1.0)
    out = augment_batch(opt, faces, torch.Generator().manual_seed(0))
    assert torch.equal(out[:, 0], out[:, 2])
    for kind in KINDS[1:]:
        opt = TrainParams(max_shift=0, flip=False, **{kind: 1.0})
        assert not torch.equal(augment_batch(opt, faces, torch.Generator()), faces.float())


@pytest.fixture
def raw(repo):
    return yaml.safe_load((repo / "params.yaml").read_text())


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_a_probability_outside_0_1_is_rejected_naming_the_key(raw, kind, value):
    raw["class_teacher"][kind] = value
    raw["distill"]["train"][kind] = value
    with pytest.raises(ParamsError, match=rf"class_teacher\.{kind}") as err:
        parse_params(raw)
    assert f"distill.train.{kind}" in str(err.value)


@pytest.mark.parametrize("kind", KINDS)
def test_probabilities_0_and_1_are_valid_in_every_training_section(raw, kind):
    raw["rank_teacher"]["train"][kind] = 1.0
    raw["class_teacher"][kind] = 1
    params = parse_params(raw)
    assert getattr(params.rank_teacher.train, kind) == 1.0
    assert getattr(params.distill.train, kind) == 0.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("kind", KINDS)
def test_on_a_gpu_the_corruptions_draw_what_the_cpu_draws(faces, kind):
    on_cpu = corrupted(faces, kind, 0.5)
    on_gpu = augment(faces.cuda(), 0, False, torch.Generator().manual_seed(0), **{kind: 0.5})
    assert on_gpu.is_cuda
    assert (on_gpu.cpu() - on_cpu).abs().max() <= 0.01
