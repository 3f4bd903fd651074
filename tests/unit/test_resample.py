"""MTCNN's crop resampling: the summed-area table gives exactly ``interpolate(mode="area")``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.nn.functional import interpolate

from agedistill.faces.resample import area_crops, summed_area_table, table_dtype


@pytest.fixture(scope="module")
def images(sample_images) -> torch.Tensor:
    files = sorted(sample_images.iterdir())[:3]
    arrays = [np.array(Image.open(f).convert("RGB").resize((160, 120))) for f in files]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float()


@pytest.mark.parametrize("size", [24, 48, (13, 31)])
def test_crops_equal_area_interpolation_of_each_box(images, size):
    table = summed_area_table(images)
    gen = torch.Generator().manual_seed(0)
    boxes, inds, refs = [], [], []
    for _ in range(60):
        b = int(torch.randint(0, 3, (1,), generator=gen))
        w, h = (int(torch.randint(2, 120, (1,), generator=gen)) for _ in range(2))
        x = int(torch.randint(0, 160 - w + 1, (1,), generator=gen))
        y = int(torch.randint(0, 120 - min(h, 120) + 1, (1,), generator=gen))
        h = min(h, 120 - y)
        boxes.append([x, y, x + w, y + h])
        inds.append(b)
        out = (size, size) if isinstance(size, int) else size
        refs.append(interpolate(images[b : b + 1, :, y : y + h, x : x + w], size=out, mode="area"))
    crops = area_crops(table, torch.tensor(inds), torch.tensor(boxes), size)
    assert torch.allclose(crops, torch.cat(refs), atol=1e-3)  # values are 0..255


def test_whole_image_pyramid_level_equals_interpolate(images):
    table = summed_area_table(images)
    whole = torch.tensor([[0, 0, 160, 120]]).expand(3, 4)
    level = area_crops(table, torch.arange(3), whole, (43, 57))
    assert torch.allclose(level, interpolate(images, size=(43, 57), mode="area"), atol=1e-3)


def test_table_is_exact_integer_sums_channels_last(images):
    table = summed_area_table(images)
    assert table.dtype == torch.int32 and table.shape == (3, 121, 161, 3)
    expected = images.permute(0, 2, 3, 1).double().sum(dim=(1, 2))  # (B, C) whole-image sums
    assert torch.equal(table[:, -1, -1].double(), expected)
    assert torch.equal(summed_area_table(images.to(torch.uint8)), table)  # uint8 input: same


def test_large_images_get_a_wider_integer_table():
    assert table_dtype(2900, 2900) == torch.int32  # 255 * 8.41 M < 2**31
    assert table_dtype(2901, 2903) == torch.int64
    img = torch.full((1, 1, 1100, 1100), 255, dtype=torch.uint8)
    assert summed_area_table(img)[0, -1, -1, 0] == 255 * 1100 * 1100


def test_crops_are_float32_division_of_exact_sums(images):
    """Each value is sum / area rounded once: float64 area interpolation rounded to float32."""
    table = summed_area_table(images)
    boxes = torch.tensor([[0, 0, 160, 120], [5, 7, 101, 99], [30, 2, 31, 3]])
    crops = area_crops(table, torch.tensor([0, 1, 2]), boxes, 24)
    for k, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        ref = interpolate(images[k : k + 1, :, y1:y2, x1:x2].double(), size=24, mode="area")
        assert torch.equal(crops[k : k + 1], ref.float())


def test_no_boxes_give_an_empty_batch_of_crops(images):
    table = summed_area_table(images)
    crops = area_crops(table, torch.zeros(0, dtype=torch.long), torch.zeros((0, 4)), 48)
    assert crops.shape == (0, 3, 48, 48) and crops.dtype == torch.float32


@pytest.mark.parametrize("h, w", [(1, 1), (1, 7), (9, 1), (120, 160)])
def test_every_cell_of_the_table_is_the_sum_above_and_left_of_it(images, h, w):
    imgs = images[:, :, :h, :w]
    table = summed_area_table(imgs)
    ref = imgs.permute(0, 2, 3, 1).double().cumsum(1).cumsum(2)
    assert table.shape == (3, h + 1, w + 1, 3)
    assert not table[:, 0].any() and not table[:, :, 0].any()
    assert torch.equal(table[:, 1:, 1:].double(), ref)


def test_crops_come_channels_last_and_the_plain_pnet_gets_its_default_layout(images):
    """R-Net / O-Net / predict's P-Net run channels-last; the align stage's P-Net sees NCHW
    memory, as its crops were computed with (another layout moves the last float bits)."""
    from facenet_pytorch import MTCNN

    from agedistill.faces.mtcnn import _propose

    table = summed_area_table(images)
    crops = area_crops(table, torch.arange(3), torch.tensor([[0, 0, 50, 50]]).expand(3, 4), 24)
    assert crops.is_contiguous(memory_format=torch.channels_last)
    pnet = MTCNN(device="cpu").pnet.eval()
    seen = []

    class Recording(torch.nn.Module):
        def forward(self, x):
            seen.append(x.is_contiguous())
            return pnet(x)

    with torch.inference_mode():
        _propose(table, Recording(), 40.0, 0.709, 0.6)
    assert seen and all(seen)
