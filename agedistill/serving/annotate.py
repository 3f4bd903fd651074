"""Annotated copies of ``predict``'s inputs: boxes and ages drawn, written beside the table.

:func:`annotate` draws, :class:`AnnotationNamer` names the copies (the input layout mirrored
under one folder, never two copies on one name) and :func:`save_annotated` writes one, without
ever failing the run.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from agedistill.serving.results import FacePrediction


def annotate(
    image: Image.Image, faces: Sequence[FacePrediction], scale: float = 1.0
) -> Image.Image:
    """A copy of ``image`` with each face's box and ``age ± std`` drawn.

    Parameters
    ----------
    image : PIL.Image.Image
        The image to draw on (a copy is returned).
    faces : sequence of FacePrediction
        Boxes in original-image pixels.
    scale : float
        ``image`` pixels per original-image pixel (``image`` may be a downscaled copy).
    """
    out = image.convert("RGB")  # always a copy
    draw = ImageDraw.Draw(out)
    line = max(2, round(max(out.size) / 400))  # visible on large photos, not heavy on small
    font = _font(max(12, round(max(out.size) / 50)))
    red, white = (255, 32, 32), (255, 255, 255)
    for f in faces:
        x0, y0, x1, y1 = (v * scale for v in (f.x, f.y, f.x + f.w, f.y + f.h))
        draw.rectangle([x0, y0, x1, y1], outline=red, width=line)
        label = f"{f.age:.0f}±{f.age_std:.0f}"
        _, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        height = bottom - top + 2 * line
        ty = y0 - height if y0 >= height else y1  # above the box, or below it at the top edge
        draw.rectangle([x0, ty, x0 + right + 2 * line, ty + height], fill=red)
        draw.text((x0 + line, ty + line - top), label, fill=white, font=font)
    return out


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow without FreeType: fixed-size bitmap font
        return ImageFont.load_default()


def save_annotated(image: Image.Image, out: Path) -> None:
    """Write an annotated copy to ``out``; a failure is a warning on stderr, not an error.

    A full disk or a format PIL cannot write costs that copy, not the run (nor the table).
    """
    try:
        image.save(out)
    except (OSError, ValueError) as e:
        print(f"agedistill predict: could not write {out}: {e}", file=sys.stderr)


class AnnotationNamer:
    """Names of the annotated copies: the input layout mirrored under ``out_dir``.

    A file found under an input folder keeps its path relative to that folder; a file given
    directly keeps its name. A name PIL cannot pick a format from gets ``.png`` appended, and a
    name already given is numbered (``x_1.jpg``), so no copy overwrites another. Names depend
    only on the order of calls: a resumed run that names every listed file, done or not, gives
    each copy the name of the uninterrupted run.

    Parameters
    ----------
    out_dir : Path
        The folder of the copies (subfolders are created as names are given).
    """

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.used: set[Path] = set()

    def name(self, path: Path, base: Path | None) -> Path:
        """The copy's path for input ``path`` found under ``base`` (``None``: given directly)."""
        rel = path.relative_to(base) if base is not None else Path(path.name)
        if rel.suffix.lower() not in Image.registered_extensions():
            rel = rel.with_name(rel.name + ".png")  # PIL picks the format from the suffix
        out, n = self.out_dir / rel, 1
        while out in self.used:  # same name from two inputs: number the later one
            out = (self.out_dir / rel).with_stem(f"{rel.stem}_{n}")
            n += 1
        self.used.add(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        return out
