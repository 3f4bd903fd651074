"""Area resampling from summed-area tables: pyramid levels and box crops at exact averages.

One integer summed-area table per batch (:func:`summed_area_table`) gives every area-resampled
crop (:func:`area_crops`) from exact integer sums with one rounding per pixel, at a cost that does
not grow with the box: the same values as ``F.interpolate(..., mode="area")`` per box. MTCNN's
pyramid and its R-Net and O-Net inputs come from here (:func:`square_crops` with
:func:`mtcnn_scale`), and so can those of any detector that feeds MTCNN's O-Net.
"""

from __future__ import annotations

import torch


def summed_area_table(imgs: torch.Tensor) -> torch.Tensor:
    """Exact integral images (B, H + 1, W + 1, C), channels last, of images (B, C, H, W) whose
    values are integers 0..255 (any dtype).

    Integer sums are exact; int32 holds them for images up to 2**31 / 255 pixels (about 2,900 x
    2,900) and is the fastest (half the memory of float64, no rounding); larger images get int64.
    """
    b, c, h, w = imgs.shape
    dtype = table_dtype(h, w)
    table = torch.zeros((b, h + 1, w + 1, c), dtype=dtype, device=imgs.device)
    pixels = imgs.permute(0, 2, 3, 1).to(dtype)  # a view for NHWC data (decoded images are)
    if imgs.is_cuda:  # one kernel for the whole table
        table[:, 1:, 1:] = pixels.cumsum(2, dtype=dtype).cumsum(1, dtype=dtype)
        return table
    table[:, 1:, 1:] = pixels.cumsum(2, dtype=dtype)
    for y in range(2, h + 1):  # whole-row adds: faster on CPU than a cumsum over dim 1 here
        table[:, y].add_(table[:, y - 1])
    return table


def table_dtype(h: int, w: int) -> torch.dtype:
    """The integer dtype that holds the pixel sums of an ``h`` x ``w`` uint8 image exactly."""
    return torch.int32 if 255 * h * w < 2**31 else torch.int64


def area_crops(
    table: torch.Tensor, inds: torch.Tensor, boxes: torch.Tensor, size: int | tuple[int, int]
) -> torch.Tensor:
    """``F.interpolate(img[:, y1:y2, x1:x2], size, mode="area")`` for every integer box at once.

    Area resampling averages each output pixel's input window (PyTorch's adaptive-pool windows:
    ``floor(i * n / size)`` to ``ceil((i + 1) * n / size)``); from a summed-area table every
    window sum is four lookups, so the cost does not grow with the box. Boxes (N, 4) are integer
    ``x1, y1, x2, y2`` inside the image with ``x2 > x1`` and ``y2 > y1``; ``inds`` their images.
    Returns (N, C, out_h, out_w) float32 in channels-last memory (the layout MTCNN's networks
    run fastest in): each window's exact integer sum divided by its area, rounded once (in
    float32 while the sums fit its 24-bit mantissa, otherwise in float64).
    """
    x1, y1, x2, y2 = boxes.long().unbind(1)
    out_h, out_w = (size, size) if isinstance(size, int) else size
    _, rows, cols, c = table.shape

    def edges(lo, hi, m):
        i, n = torch.arange(m, device=table.device), (hi - lo)[:, None]
        return lo[:, None] + (i * n) // m, lo[:, None] - ((-(i + 1) * n) // m)  # floor, ceil

    ys, ye = edges(y1, y2, out_h)  # (N, out_h)
    xs, xe = edges(x1, x2, out_w)
    base = inds[:, None, None] * (rows * cols)
    ys, ye = base + ys[:, :, None] * cols, base + ye[:, :, None] * cols  # (N, out_h, 1)
    xs, xe = xs[:, None, :], xe[:, None, :]  # (N, 1, out_w)
    flat = table.view(-1, c)  # one row of C sums per table cell: a gather per corner
    sums = flat[ye + xe] - flat[ys + xe] - flat[ye + xs] + flat[ys + xs]  # (N, out_h, out_w, C)
    area = ((ye - ys) // cols) * (xe - xs)
    largest = int(area.max()) if area.numel() else 0  # no boxes: an empty batch of crops
    exact = torch.float32 if largest * 255 < 2**24 else torch.float64
    out = sums.to(exact) / area[..., None].to(exact)  # both exact: one rounding, as interpolate
    return out.float().permute(0, 3, 1, 2)


def mtcnn_scale(x: torch.Tensor) -> torch.Tensor:
    """Pixel values 0..255 scaled as MTCNN's networks take them: ``(x - 127.5) / 128``."""
    return (x - 127.5) * 0.0078125


def square_crops(
    table: torch.Tensor, boxes: torch.Tensor, inds: torch.Tensor, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised ``size`` x ``size`` crops of the boxes clipped to the image, and which boxes
    were not empty after clipping (as MTCNN: a box is cut at the border, then area-resized)."""

    h, w = table.shape[1] - 1, table.shape[2] - 1
    t = boxes[:, :4].trunc()
    x1, y1 = t[:, 0].clamp(min=1) - 1, t[:, 1].clamp(min=1) - 1
    x2, y2 = t[:, 2].clamp(max=w), t[:, 3].clamp(max=h)
    valid = (x2 > x1) & (y2 > y1)
    clipped = torch.stack([x1, y1, x2, y2], dim=1)[valid]
    return mtcnn_scale(area_crops(table, inds[valid], clipped, size)), valid
