import pytest

from kd_core.errors import KDError
from kd_core.shards import Shard, shard_bounds, shard_names


@pytest.mark.parametrize(("n_rows", "count", "align"), [(13, 3, 2), (13, 1, 4), (7, 5, 2), (100, 7, 8), (0, 2, 3), (5, 8, 1)])
def test_shards_partition_the_rows_on_batch_boundaries(n_rows, count, align):
    bounds = [shard_bounds(n_rows, Shard(i, count), align) for i in range(count)]
    rows = [r for lo, hi in bounds for r in range(lo, hi)]
    assert rows == list(range(n_rows))  # every row once, in order
    assert all(lo % align == 0 for lo, hi in bounds if hi > lo)
    sizes = [-(-(hi - lo) // align) for lo, hi in bounds]  # batches per shard differ by at most one
    assert max(sizes) - min(sizes) <= 1


def test_shard_names_sort_and_parse():
    names = shard_names(12)
    assert names[0] == "00-of-12" and names == sorted(names)
    assert [Shard.parse(n) for n in names] == [Shard(i, 12) for i in range(12)]
    for bad in ("3-of-3", "a-of-3", "1of3"):
        with pytest.raises(KDError, match="bad shard name"):
            Shard.parse(bad)
    with pytest.raises(KDError, match=">= 1"):
        shard_names(0)
