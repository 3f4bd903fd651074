"""``--shard K/N``: a deterministic 1/N of the input files, chosen by a hash of each path.

A file belongs to shard ``K`` (1-based) when the SHA-1 of its key, read as a number, is
``K - 1`` modulo ``N``. The key of a file found under a folder is its path relative to that
folder, so machines that mount the folder in different places split it the same way; a file
given directly is keyed by its path as given. Every file is in exactly one of the N shards, and
a file's shard does not depend on which other files exist, so shards stay stable as a folder grows.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (1-based) of ``count``."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 1 <= self.index <= self.count:
            raise ValueError(f"shard must be K/N with 1 <= K <= N, got {self.index}/{self.count}")

    def takes(self, key: str) -> bool:
        """Whether the file with this key (:func:`shard_key`) is in this shard."""
        digest = hashlib.sha1(key.encode("utf-8")).digest()
        return int.from_bytes(digest[:8], "big") % self.count == self.index - 1


def parse_shard(text: str) -> Shard:
    """``"K/N"`` as a :class:`Shard`.

    >>> parse_shard("2/8")
    Shard(index=2, count=8)
    """
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if m is None:
        raise ValueError(f"shard must look like K/N (e.g. 1/4), got {text!r}")
    return Shard(int(m.group(1)), int(m.group(2)))


def shard_key(path: Path, base: Path | None) -> str:
    """The text a file is hashed by: its path under ``base`` (POSIX form), else as given."""
    return path.relative_to(base).as_posix() if base is not None else str(path)
