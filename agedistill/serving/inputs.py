"""The files ``predict`` reads: folders listed in a fixed order, each file decoded or refused.

Both paths of ``predict``, one file at a time (:func:`agedistill.serving.predict.predict_files`)
and in chunks (:mod:`agedistill.serving.predict_batch`), list and read their inputs here, so a
file gets the same image, or the same error, on either.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from PIL import Image

from agedistill.faces.decode import ImageReadError, load_image


def iter_input_files(paths: Iterable[str | Path]) -> Iterator[tuple[Path, Path | None]]:
    """Each input file with the folder it was found under (``None`` for a file given directly).

    Folders are walked recursively in sorted order; every file is tried whatever its suffix (the
    decoder decides, as in ``align``). Hidden files and folders are skipped. A path that does not
    exist, and a broken link in a folder, is yielded as is, so it gets an error row.
    """
    for p in map(Path, paths):
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                rel = f.relative_to(p)
                listed = f.is_file() or (f.is_symlink() and not f.exists())
                if listed and not any(part.startswith(".") for part in rel.parts):
                    yield f, p
        else:
            yield p, None


def read_input(path: Path, max_side: int) -> tuple[Image.Image | None, float, str | None]:
    """Decode one input file for ``predict``, or say why it cannot be read; never raises.

    Parameters
    ----------
    path : Path
        Any path: a missing file, a folder or a file that is not an image get an error.
    max_side : int
        Longer side of the returned image (:func:`agedistill.faces.decode.load_image`).

    Returns
    -------
    image : PIL.Image.Image or None
        Upright 8-bit RGB, downscaled to ``max_side``; ``None`` when unreadable.
    scale : float
        ``image`` pixels per original-image pixel (1.0 when unreadable).
    error : str or None
        The reason of an unreadable file (``unreadable: no such file``, ``not an image``, ...).
    """
    if not path.exists():
        return None, 1.0, "unreadable: no such file"
    try:
        image, scale = load_image(path, max_side=max_side)
        return image, scale, None
    except ImageReadError as e:
        return None, 1.0, str(e)
    except OSError as e:  # a folder, permissions and the like
        return None, 1.0, f"unreadable: {e.strerror or e}"
