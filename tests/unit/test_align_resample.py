"""MTCNN's crop resampling: the summed-area table gives exactly ``interpolate(mode="area")``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.nn.functional import interpolate

from agedistill.faces.align import _area_crops, summed_area_table


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
    crops = _area_crops(table, torch.tensor(inds), torch.tensor(boxes), size)
    assert torch.allclose(crops, torch.cat(refs), atol=1e-3)  # values are 0..255


def test_whole_image_pyramid_level_equals_interpolate(images):
    table = summed_area_table(images)
    whole = torch.tensor([[0, 0, 160, 120]]).expand(3, 4)
    level = _area_crops(table, torch.arange(3), whole, (43, 57))
    assert torch.allclose(level, interpolate(images, size=(43, 57), mode="area"), atol=1e-3)


def test_large_images_get_an_exact_wider_table():
    img = torch.full((1, 1, 1100, 1100), 255.0)
    table = summed_area_table(img)
    assert table.dtype == torch.float64 and table[0, 0, -1, -1] == 255 * 1100 * 1100
