"""The file list of one source folder: what DVC hashes so that any edit to it reruns ``align``.

DVC cannot take a variable-length list of folders as one stage's deps, so each source in
``align.sources`` gets an ``inventory`` stage (a ``foreach`` in ``dvc.yaml``) whose dependency is
the folder and whose output, ``data/inventory/NAME.csv``, lists every input file with its size and
SHA-1. ``align`` depends on ``data/inventory``: editing, adding or removing a file of any source
changes that source's list, and so reruns ``align``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from agedistill.faces.sources import listed_files

COLUMNS = ["path", "bytes", "sha1"]


def inventory(root: str | Path, progress: bool = True) -> pd.DataFrame:
    """One row per file under ``root`` (hidden ones excepted): relative path, bytes and SHA-1."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"source folder {root} does not exist")
    rows = []
    for p in tqdm(listed_files(root), desc=f"inventory {root}", unit="file", disable=not progress):
        data = p.read_bytes()
        rows.append((p.relative_to(root).as_posix(), len(data), hashlib.sha1(data).hexdigest()))
    return pd.DataFrame(rows, columns=COLUMNS)
