import numpy as np
import pytest

from annealmix import Mixture, Plan, Shard


def test_each_rank_slice_follows_the_mixture():
    p = Plan(Mixture(weights={"a": 0.5, "b": 0.3, "c": 0.2}), global_batch_size=1024)
    batch = p.batch(0).sources[0]
    for rank in range(8):
        part = batch[Shard(global_batch_size=1024, rank=rank, world_size=8).positions(0)]
        share = np.bincount(part, minlength=3) / part.size
        assert np.abs(share - [0.5, 0.3, 0.2]).max() <= 2 / part.size


def test_positions_and_columns_tile_the_batch():
    seen = []
    for rank in range(3):
        shard = Shard(global_batch_size=24, rank=rank, world_size=3, micro_batches=2)
        parts = [shard.positions(m) for m in range(2)]
        assert shard.columns() == slice(parts[0].start, parts[1].stop)
        seen += [i for p in parts for i in range(p.start, p.stop)]
    assert seen == list(range(24))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(global_batch_size=10, world_size=3), "does not divide into world_size 3"),
        (dict(global_batch_size=12, world_size=2, micro_batches=4), "multiple of 8"),
        (dict(global_batch_size=12, rank=2, world_size=2), r"rank must be in \[0, world_size=2\)"),
        (dict(global_batch_size=12, world_size=0), "world_size must be >= 1"),
    ],
)
def test_bad_shards_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Shard(**kwargs)
