"""``--shard K/N``: every file in exactly one shard, stable, independent of the mount point."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from agedistill.serving.sharding import Shard, parse_shard, shard_key


def test_every_key_is_in_exactly_one_shard_and_shards_are_balanced() -> None:
    keys = [f"person_{i}/img_{i % 7}.jpg" for i in range(3000)]
    for n in (1, 2, 5):
        owners = [[k for k in range(1, n + 1) if Shard(k, n).takes(key)] for key in keys]
        assert all(len(o) == 1 for o in owners)
        sizes = Counter(o[0] for o in owners)
        assert min(sizes.values()) > 0.9 * len(keys) / n  # SHA-1 spreads paths evenly


def test_the_key_is_the_path_under_its_folder(tmp_path: Path) -> None:
    a = Path("/mnt/a/photos/x/1.jpg")
    b = Path("/data/photos/x/1.jpg")
    assert shard_key(a, Path("/mnt/a/photos")) == shard_key(b, Path("/data/photos")) == "x/1.jpg"
    assert shard_key(Path("some/2.jpg"), None) == "some/2.jpg"
    # a fixed value: a shard must not change between Python runs or versions (no hash())
    assert [k for k in range(1, 5) if Shard(k, 4).takes("x/1.jpg")] == [1]


@pytest.mark.parametrize("bad", ["0/4", "5/4", "1/0", "a/b", "3", "1/2/3", "-1/2"])
def test_bad_shards_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="K/N"):
        parse_shard(bad)


def test_parse() -> None:
    assert parse_shard(" 3 / 8 ") == Shard(3, 8)
