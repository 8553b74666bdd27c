"""Shards: a table of work split into N contiguous pieces, each a separate (GPU) job.

A shard is named ``"<i>-of-<n>"`` (``i`` zero-based, zero-padded to the width of ``n`` so that
names sort). Shard boundaries fall on multiples of ``align`` rows (the generation batch size),
so every batch a shard computes is the very batch an unsharded run computes: the gathered
images are bit-identical to one job's, whatever the shard count.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from kd_core.errors import KDError

_NAME = re.compile(r"^(\d+)-of-(\d+)$")


class Shard(NamedTuple):
    index: int
    count: int

    @property
    def name(self) -> str:
        return f"{self.index:0{len(str(self.count))}d}-of-{self.count}"

    @classmethod
    def parse(cls, name: str) -> Shard:
        m = _NAME.match(name)
        if not m or not 0 <= int(m.group(1)) < int(m.group(2)):
            raise KDError(f"bad shard name {name!r}: expected '<index>-of-<count>' with 0 <= index < count, e.g. '0-of-3'")
        return cls(int(m.group(1)), int(m.group(2)))


def shard_names(count: int) -> list[str]:
    """Every shard's name for a split into ``count`` shards."""
    if count < 1:
        raise KDError(f"shard count must be >= 1, got {count}")
    return [Shard(i, count).name for i in range(count)]


def shard_bounds(n_rows: int, shard: Shard, align: int = 1) -> tuple[int, int]:
    """``[start, stop)`` rows of ``shard``: ``align``-row blocks dealt out contiguously and as evenly
    as possible (shards differ by at most one block; surplus shards are empty)."""
    if align < 1:
        raise KDError(f"shard alignment must be >= 1, got {align}")
    blocks = -(-n_rows // align)
    lo = shard.index * blocks // shard.count
    hi = (shard.index + 1) * blocks // shard.count
    return min(lo * align, n_rows), min(hi * align, n_rows)
