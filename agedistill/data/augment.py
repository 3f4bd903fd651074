"""Batch augmentation of uint8 faces and seeded index batches.

Shifts, flips, similarity and colour jitter, mixup, and the corruptions a camera, a scanner and a
cropper leave on real photos (grey scans, blur, JPEG artefacts, small faces, missing context).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.io import decode_jpeg, encode_jpeg

# Strengths of the real-photo corruptions; their params are only per-face probabilities.
BLUR_SIGMA = (0.4, 1.6)  # Gaussian blur: sigma ~ U(lo, hi) pixels, at the crop size
JPEG_QUALITY = (15, 60)  # re-encoding quality ~ U{lo..hi}: a web photo down to a harsh thumbnail
LOW_RES_SIDE = (1 / 4, 1 / 1.5)  # small face: downscaled to side x U(lo, hi), then back up
CROP_BAND = 0.2  # tight crop: a black band of side x U(0, CROP_BAND) on each side independently
SCAN_CONTRAST = (0.55, 0.9)  # old print: luma contrast about the face's mean x U(lo, hi)
SCAN_GRAIN = (2.0, 8.0)  # old print: monochrome film grain of sigma ~ U(lo, hi) grey levels
SEPIA = ((40.0, 26.0, 13.0), (255.0, 240.0, 192.0))  # old print: the tones of black and white


def augment(
    images: torch.Tensor,
    max_shift: int,
    flip: bool,
    generator: torch.Generator,
    *,
    rotate: float = 0.0,
    scale: float = 0.0,
    color: float = 0.0,
    grayscale: float = 0.0,
    scan: float = 0.0,
    blur: float = 0.0,
    jpeg: float = 0.0,
    low_res: float = 0.0,
    crop_context: float = 0.0,
) -> torch.Tensor:
    """Random flips, shifts of up to ``max_shift`` pixels (edge-replicated) and optional jitter.

    ``grayscale``, ``scan``, ``blur``, ``low_res``, ``jpeg`` and ``crop_context`` are the
    probabilities that a face gets a real photo's corruption (:func:`corrupt`); they run first, in
    the order of a photo's life: a grey print, an old print's fade, tone and grain, a soft lens, a
    small face, the file's compression, then the aligner's black fill where the photo ended.
    ``rotate`` (degrees) and ``scale`` (relative) draw one similarity transform per face
    (:func:`similarity_jitter`); ``color`` jitters brightness, contrast and saturation per face
    (:func:`color_jitter`). Each is drawn only when non-zero, so runs without them draw exactly
    the random numbers they always did. The numbers come from ``generator`` (a CPU generator) and
    the work runs on ``images.device``, so faces held on a GPU are augmented there, with the same
    draws as on the CPU. Returns float images in [0, 255].
    """
    images = corrupt(images, generator, grayscale=grayscale, scan=scan, blur=blur, jpeg=jpeg,
                     low_res=low_res, crop_context=crop_context)  # fmt: skip
    return jitter(images, max_shift, flip, generator, rotate=rotate, scale=scale, color=color)


def augment_views(
    images: torch.Tensor,
    max_shift: int,
    flip: bool,
    generator: torch.Generator,
    *,
    rotate: float = 0.0,
    scale: float = 0.0,
    color: float = 0.0,
    **corruptions: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`augment`'s faces, and the same faces moved the same way without the corruptions.

    The first view is exactly what :func:`augment` returns for the same generator state; the
    second has the same flips, shifts, similarity and colour jitter (the generator is rewound to
    draw them again) but not the real-photo corruptions (``corruptions``: :func:`corrupt`'s
    probabilities): the face a teacher should read while the student reads the damaged one.
    Without a corruption the two views are one tensor.
    """
    corrupted = corrupt(images, generator, **corruptions)
    before = generator.get_state()
    seen = jitter(corrupted, max_shift, flip, generator, rotate=rotate, scale=scale, color=color)
    if corrupted is images:
        return seen, seen
    after = generator.get_state()
    generator.set_state(before)
    clean = jitter(images, max_shift, flip, generator, rotate=rotate, scale=scale, color=color)
    generator.set_state(after)
    return seen, clean


def jitter(
    images: torch.Tensor,
    max_shift: int,
    flip: bool,
    generator: torch.Generator,
    *,
    rotate: float = 0.0,
    scale: float = 0.0,
    color: float = 0.0,
) -> torch.Tensor:
    """:func:`augment` after the corruptions: similarity and colour jitter, flips, shifts."""
    if rotate > 0 or scale > 0:
        images = similarity_jitter(images, rotate, scale, generator)
    if color > 0:
        images = color_jitter(images, color, generator)
    dev = images.device  # random numbers come from the (CPU) generator, the work runs on `dev`
    if flip:
        mask = (torch.rand(len(images), generator=generator) < 0.5).to(dev)
        images = torch.where(mask[:, None, None, None], images.flip(-1), images)
    if max_shift > 0:
        b, _, h, w = images.shape
        padded = F.pad(images.float(), [max_shift] * 4, mode="replicate")
        dx = torch.randint(0, 2 * max_shift + 1, (b,), generator=generator).tolist()
        dy = torch.randint(0, 2 * max_shift + 1, (b,), generator=generator).tolist()
        # one window per face: plain copies, ~7x faster than one advanced-indexing gather
        windows = enumerate(zip(dy, dx, strict=True))
        images = torch.stack([padded[i, :, y : y + h, x : x + w] for i, (y, x) in windows])
    return images


def corrupt(
    images: torch.Tensor,
    generator: torch.Generator,
    *,
    grayscale: float = 0.0,
    scan: float = 0.0,
    blur: float = 0.0,
    jpeg: float = 0.0,
    low_res: float = 0.0,
    crop_context: float = 0.0,
) -> torch.Tensor:
    """The real-photo corruptions, each applied to a face with its probability, in a fixed order.

    :func:`to_grayscale`, :func:`old_print`, :func:`gaussian_blur`, :func:`downscale`,
    :func:`jpeg_reencode`, then :func:`drop_context`; their strengths are this module's constants
    (:data:`SCAN_CONTRAST`, :data:`SCAN_GRAIN`, :data:`SEPIA`, :data:`BLUR_SIGMA`,
    :data:`LOW_RES_SIDE`, :data:`JPEG_QUALITY`, :data:`CROP_BAND`).

    A probability of 0 draws nothing from ``generator`` and leaves ``images`` as they are (the same
    tensor), so runs without corruptions are the runs there were before them.
    """
    steps = ((grayscale, to_grayscale), (scan, old_print), (blur, gaussian_blur),
             (low_res, downscale), (jpeg, jpeg_reencode), (crop_context, drop_context))  # fmt: skip
    for p, step in steps:
        if p > 0:
            images = step(images, p, generator)
    return images


def _chosen(b: int, p: float, generator: torch.Generator) -> torch.Tensor:
    """Indices (CPU, int64) of the faces among ``b`` that get a corruption of probability ``p``."""
    return (torch.rand(b, generator=generator) < p).nonzero().flatten()


def _uniform(n: int, lo: float, hi: float, generator: torch.Generator) -> torch.Tensor:
    """``n`` draws of U(lo, hi) on the CPU."""
    return lo + (hi - lo) * torch.rand(n, generator=generator)


def to_grayscale(images: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """Replace each face, with probability ``p``, by its ITU-R 601 luma on all three channels.

    Returns float images (B, 3, H, W) in [0, 255].
    """
    x = _float_copy(images)
    idx = _chosen(len(x), p, generator).to(x.device)
    x[idx] = _grey(x[idx]).expand(-1, 3, -1, -1)
    return x


def old_print(images: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """Make each face, with probability ``p``, an old print, scanned: faded, toned and grainy.

    The face's luma, its contrast about its mean scaled by U(SCAN_CONTRAST), is toned from
    neutral grey towards sepia (black to white through :data:`SEPIA`) by a weight U(0, 1), and
    gets monochrome Gaussian grain of sigma U(SCAN_GRAIN) grey levels, the same on the three
    channels. Returns float images in [0, 255].
    """
    x = _float_copy(images)
    b, _, h, w = x.shape
    idx = _chosen(b, p, generator)
    contrast = _uniform(b, *SCAN_CONTRAST, generator)[idx]
    tone = torch.rand(b, generator=generator)[idx]
    sigma = _uniform(b, *SCAN_GRAIN, generator)[idx]
    if len(idx) == 0:
        return x
    grain = torch.randn(len(idx), 1, h, w, generator=generator) * sigma[:, None, None, None]
    dev = x.device
    on_dev = idx.to(dev)
    luma = _grey(x[on_dev])
    mean = luma.mean((2, 3), keepdim=True)
    level = ((luma - mean) * contrast.to(dev)[:, None, None, None] + mean).clamp(0, 255) / 255
    black, white = (torch.tensor(c, device=dev)[None, :, None, None] for c in SEPIA)
    sepia = black + (white - black) * level  # (N, 3, H, W)
    grey = 255 * level
    toned = grey + (sepia - grey) * tone.to(dev)[:, None, None, None]
    x[on_dev] = (toned + grain.to(dev)).clamp(0, 255)
    return x


def gaussian_blur(images: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """Blur each face, with probability ``p``, by a Gaussian of sigma ~ U(BLUR_SIGMA) px.

    One separable depthwise convolution over the chosen faces (a kernel per face, borders
    replicated). Returns float images in [0, 255].
    """
    x = _float_copy(images)
    b, c, h, w = x.shape
    idx = _chosen(b, p, generator)
    sigma = _uniform(b, *BLUR_SIGMA, generator)[idx]
    if len(idx) == 0:
        return x
    radius = int(np.ceil(3 * BLUR_SIGMA[1]))
    taps = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (taps[None] / sigma[:, None]) ** 2)  # (N, K)
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0).to(x.device)
    idx = idx.to(x.device)
    faces = x[idx].reshape(1, len(idx) * c, h, w)  # one channel group per face and colour
    faces = F.pad(faces, [radius] * 4, mode="replicate")
    faces = F.conv2d(faces, kernel[:, None, None, :], groups=len(idx) * c)  # along rows
    faces = F.conv2d(faces, kernel[:, None, :, None], groups=len(idx) * c)  # along columns
    x[idx] = faces.reshape(len(idx), c, h, w)
    return x


def downscale(images: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """Make each face, with probability ``p``, a small face upsampled back to the crop size.

    Downscaled (bilinear, antialiased) to ``side x U(LOW_RES_SIDE)`` pixels, rounded, and back up
    (bilinear); faces drawn the same small side are resized together. Returns float images in
    [0, 255].
    """
    x = _float_copy(images)
    b, _, h, w = x.shape
    idx = _chosen(b, p, generator)
    small = (h * _uniform(b, *LOW_RES_SIDE, generator)[idx]).round().clamp(min=1).long()
    for side in small.unique().tolist():
        group = idx[small == side].to(x.device)
        size = (side, max(1, round(w * side / h)))
        tiny = F.interpolate(x[group], size=size, mode="bilinear", antialias=True)
        x[group] = F.interpolate(tiny, size=(h, w), mode="bilinear").clamp(0, 255)
    return x


def jpeg_reencode(images: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """Re-encode each face, with probability ``p``, as a JPEG of quality ~ U{JPEG_QUALITY}.

    Only the chosen faces are rounded to uint8, encoded and decoded (on the CPU, one call per
    face: libjpeg takes one quality per call), then put back on ``images.device``. Returns float
    images in [0, 255].
    """
    x = _float_copy(images)
    idx = _chosen(len(x), p, generator)
    quality = torch.randint(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1, (len(x),), generator=generator)
    if len(idx) == 0:
        return x
    on_dev = idx.to(x.device)
    faces = x[on_dev].round().clamp(0, 255).to(torch.uint8).cpu()
    qualities = quality[idx].tolist()
    coded = [decode_jpeg(encode_jpeg(f, quality=q)) for f, q in zip(faces, qualities, strict=True)]
    x[on_dev] = torch.stack(coded).to(x.device, torch.float32)
    return x


def drop_context(images: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """Black out, with probability ``p``, a band along each side of a face: a crop too tight.

    Each of the four bands (top, bottom, left, right) is ``side x U(0, CROP_BAND)`` pixels wide
    (floored), drawn independently: the aligner fills what lies outside the photo with black.
    Returns float images in [0, 255].
    """
    x = _float_copy(images)
    b, _, h, w = x.shape
    chosen = torch.rand(b, generator=generator) < p
    band = torch.rand(b, 4, generator=generator) * CROP_BAND * torch.tensor([h, h, w, w])
    band = (band.floor().long() * chosen[:, None]).to(x.device)  # (B, 4); 0 = face kept
    rows = torch.arange(h, device=x.device)[None, :, None]  # (1, H, 1)
    cols = torch.arange(w, device=x.device)[None, None, :]  # (1, 1, W)
    top, bottom, left, right = (band[:, i, None, None] for i in range(4))  # each (B, 1, 1)
    keep = (rows >= top) & (rows < h - bottom) & (cols >= left) & (cols < w - right)
    return x * keep[:, None]  # (B, 1, H, W): the same mask on every channel


def _float_copy(images: torch.Tensor) -> torch.Tensor:
    """A float32 copy that a corruption may write into without touching the caller's tensor."""
    return images.to(torch.float32, copy=True)


def similarity_jitter(
    images: torch.Tensor, rotate: float, scale: float, generator: torch.Generator
) -> torch.Tensor:
    """Rotate each face by U(-rotate, rotate) degrees and zoom it by U(1-scale, 1+scale).

    One batched ``affine_grid``/``grid_sample`` (bilinear, border-replicated), so the faces keep
    their size and no black corners appear. Returns float images in [0, 255].
    """
    b = len(images)
    angle = (torch.rand(b, generator=generator) * 2 - 1) * rotate * torch.pi / 180
    zoom = 1 + (torch.rand(b, generator=generator) * 2 - 1) * scale
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack(
        [torch.stack([cos, -sin, torch.zeros(b)], 1), torch.stack([sin, cos, torch.zeros(b)], 1)], 1
    ).to(images.device)  # (B, 2, 3): output pixel -> input pixel, in [-1, 1] coordinates
    x = images.float()
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def color_jitter(images: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    """Scale each face's brightness, contrast and saturation by factors in U(1-s, 1+s).

    Contrast scales about the face's mean grey level, saturation about each pixel's grey level.
    Returns float images clamped to [0, 255].
    """
    b = len(images)
    factors = 1 + (torch.rand(3, b, 1, 1, 1, generator=generator) * 2 - 1) * strength
    factors = factors.to(images.device)
    x = images.float() * factors[0]
    mean_grey = _grey(x).mean((2, 3), keepdim=True)
    x = (x - mean_grey) * factors[1] + mean_grey
    grey = _grey(x)
    x = (x - grey) * factors[2] + grey
    return x.clamp(0, 255)


def _grey(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma of RGB images (B, 3, H, W) -> (B, 1, H, W)."""
    return 0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]


def mix_pairs(
    x: torch.Tensor, alpha: float, rng: np.random.Generator, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, float]:
    r"""Mixup (Zhang et al., 2018): blend each face with a random partner from the same batch.

    One weight :math:`\lambda \sim \mathrm{Beta}(\alpha, \alpha)` per batch; returns
    ``lam * x + (1 - lam) * x[partner]``, the partner indices and ``lam``. Distillation feeds the
    blend to the teachers too, so their soft targets and hints describe the very image the student
    sees: new inputs with informative targets, not only a blended label.
    """
    if alpha <= 0:
        raise ValueError("mixup alpha must be positive")
    lam = float(rng.beta(alpha, alpha))
    partner = torch.randperm(len(x), generator=generator).to(x.device)
    return lam * x + (1 - lam) * x[partner], partner, lam


def batches(
    n: int, batch_size: int, shuffle: bool, generator: torch.Generator | None = None
) -> Iterator[torch.Tensor]:
    """Index batches over ``range(n)``; the last partial batch is kept."""
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    yield from order.split(batch_size)
