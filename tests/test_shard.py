import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from annealmix import Mixture, Plan, Shard
from annealmix.shard import turn


def test_each_rank_slice_follows_the_mixture():
    p = Plan(Mixture(weights={"a": 0.5, "b": 0.3, "c": 0.2}), global_batch_size=1024)
    batch = p.batch(0).sources[0]
    for rank in range(8):
        part = batch[Shard(global_batch_size=1024, rank=rank, world_size=8).positions(0, 0)]
        share = np.bincount(part, minlength=3) / part.size
        assert np.abs(share - [0.5, 0.3, 0.2]).max() <= 2 / part.size


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10**12), st.sampled_from([(24, 3, 2), (24, 1, 4), (1024, 64, 1), (7, 7, 1)]))
def test_the_windows_of_a_step_tile_its_batch(step, layout):
    b, world, micro = layout
    seen = []
    for rank in range(world):
        shard = Shard(global_batch_size=b, rank=rank, world_size=world, micro_batches=micro)
        parts = [np.arange(b)[shard.positions(m, step)] for m in range(micro)]
        columns = np.arange(b)[shard.columns(np.array([step]))].reshape(-1)
        assert np.array_equal(np.concatenate(parts), columns)
        seen += [i for p in parts for i in p.tolist()]
    assert sorted(seen) == list(range(b))


def test_one_rank_takes_the_whole_batch_in_plan_order():
    shard = Shard(global_batch_size=16)
    assert shard.positions(0, 12345) == slice(0, 16)
    assert shard.columns(np.arange(5)) == slice(0, 16)
    split = Shard(global_batch_size=16, micro_batches=4)
    assert [split.positions(m, 999) for m in range(4)] == [
        slice(4 * m, 4 * m + 4) for m in range(4)
    ]


def test_the_turn_is_exact_integer_arithmetic_spread_over_the_batch():
    steps = np.arange(100_000)
    t = turn(steps, 1000)
    assert t.min() >= 0 and t.max() < 1000
    assert np.abs(np.bincount(t, minlength=1000) - 100).max() <= 2  # golden: very even
    assert turn(10**12, 4 << 20) == (((10**12 * 0x9E3779B97F4A7C15) % 2**64) * (4 << 20)) >> 64


def test_every_rank_share_converges_to_the_mixture_at_64_ranks():
    # Under constant weights the batch is the same mix every step; the windows turn,
    # so a rank meets every part of it over time (with fixed windows, a 10% source
    # made 6.2% of one rank's samples and 18.8% of another's for ever).
    plan = Plan(Mixture(weights={"a": 0.6, "b": 0.3, "c": 0.1}), global_batch_size=1024)
    sources = plan.batches(0, 2000).sources
    for rank in range(64):
        shard = Shard(global_batch_size=1024, rank=rank, world_size=64)
        mine = np.take_along_axis(sources, shard.columns(np.arange(2000)), axis=1)
        share = np.bincount(mine.ravel(), minlength=3) / mine.size
        assert np.abs(share - [0.6, 0.3, 0.1]).max() < 0.01, (rank, share)
        assert np.abs((mine == 2).mean(axis=1) - 0.1).max() <= 2 / 16  # and every step's slice
    fixed = [(sources[:, r * 16 : (r + 1) * 16] == 2).mean() for r in range(64)]  # no turn
    assert (min(fixed), max(fixed)) == (0.0625, 0.1875)  # the 6.2% and 18.8% of the docs


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
