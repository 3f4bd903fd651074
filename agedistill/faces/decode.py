"""Decoding any image file or PIL image to upright 8-bit RGB, for detection and alignment.

The ``align`` stage and ``predict`` read their inputs through these functions. A bad file never
stops them: every failure is an :class:`ImageReadError` whose message is the input's status.

* images are decoded with EXIF orientation applied and converted to RGB from any mode
  (1, L, LA, P, RGBA, CMYK, I;16, I, F, ...);
* decompression bombs are refused before decoding, and large JPEGs are decoded directly at
  reduced size.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 80_000_000  # refuse to decode larger images (decompression-bomb guard)


class ImageReadError(Exception):
    """An input that cannot be decoded as an image; the message is the reason."""


def read_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode ``path`` as an 8-bit RGB image with EXIF orientation applied.

    Parameters
    ----------
    path : str or Path
        Any file; its content, not its suffix, decides whether it is an image.
    max_pixels : int
        Larger images are refused before their pixels are decoded (decompression bombs).

    Returns
    -------
    PIL.Image.Image
        RGB image, upright.

    Raises
    ------
    ImageReadError
        With a short reason: ``unreadable: empty file``, ``not an image``, ``unreadable: ...``
        (truncated or corrupt), ``image too large: ...``.
    """
    return load_image(path, max_pixels=max_pixels)[0]


def load_image(
    path: str | Path, max_side: int | None = None, max_pixels: int = MAX_PIXELS
) -> tuple[Image.Image, float]:
    """Decode ``path`` as upright 8-bit RGB, downscaled so its longer side is <= ``max_side``.

    JPEGs are decoded at reduced resolution directly (``Image.draft``), so a 40-megapixel photo
    costs neither the time nor the memory of its full size.

    Parameters
    ----------
    path : str or Path
        The file to decode.
    max_side : int, optional
        Longer side of the returned image; ``None`` keeps the full resolution.
    max_pixels : int
        Decompression-bomb guard: images with more pixels are refused before decoding.

    Returns
    -------
    image : PIL.Image.Image
        The RGB image.
    scale : float
        ``image.width / upright original width`` (1.0 when not downscaled); divide coordinates
        in ``image`` by it to get original-image pixels.

    Raises
    ------
    ImageReadError
        See :func:`read_image`.
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise ImageReadError("unreadable: empty file")
        with Image.open(path) as im:
            return _decode(im, max_side, max_pixels)
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError("not an image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageReadError(f"image too large: {e}") from None
    except Exception as e:  # any decoder failure is a reason, never a crash
        raise ImageReadError(f"unreadable: {type(e).__name__}: {e}") from None


def _decode(im: Image.Image, max_side: int | None, max_pixels: int) -> tuple[Image.Image, float]:
    w, h = im.size
    if w * h > max_pixels:
        raise ImageReadError(f"image too large: {w}x{h} exceeds {max_pixels} pixels")
    if max_side is not None and im.format == "JPEG":
        im.draft("RGB", (max_side, max_side))  # DCT-domain downscale, never below max_side
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        im.load()
    rgb = to_rgb(im)
    if max_side is not None and max(rgb.size) > max_side:
        rgb.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    # draft and thumbnail scale both axes alike, and a 90-degree EXIF turn swaps them: the ratio
    # of longer sides is the scale whatever the orientation
    return rgb, max(rgb.size) / max(w, h)


def to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL image to upright 8-bit RGB.

    EXIF orientation is applied (a corrupt EXIF block is ignored), alpha is composited on white,
    16-bit and 32-bit integer images are rescaled from their full range, palettes are expanded.

    Parameters
    ----------
    im : PIL.Image.Image
        Any mode: 1, L, LA, P, PA, RGB, RGBA, CMYK, YCbCr, I;16, I, F, ...

    Returns
    -------
    PIL.Image.Image
        Mode ``RGB``.
    """
    im = _upright(im)
    if im.mode.startswith("I;16"):
        im = _to_l(np.asarray(im, dtype=np.float64) / 257.0)
    elif im.mode in ("I", "F"):
        a = np.asarray(im, dtype=np.float64)
        im = _to_l(a / 257.0 if a.max(initial=0) > 255 else a)
    if im.mode in ("P", "PA"):
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "RGBa", "La"):
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, im.convert("RGBA"))
    return im.convert("RGB")


def _upright(im: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(im)
    except Exception:  # a corrupt EXIF block means "as stored"
        return im


def _to_l(a: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")
