import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from annealmix import ORDERS, Mixture, Plan, indexed, sample_indices
from annealmix.order import _bit_length, shuffle_key, shuffled


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 5000), st.integers(0, 2**32), st.integers(0, 3))
def test_every_index_once_per_epoch(size, seed, source):
    idx = sample_indices("shuffle", np.arange(3 * size), size=size, seed=seed, source_id=source)
    for e in range(3):
        assert np.array_equal(np.sort(idx[e * size : (e + 1) * size]), np.arange(size))


@pytest.mark.parametrize("size", [2**20, 10**6])
def test_permutation_of_a_million(size):
    idx = sample_indices("shuffle", np.arange(size), size=size, seed=1, source_id=0)
    assert np.array_equal(np.bincount(idx, minlength=size), np.ones(size, dtype=np.int64))


def test_epochs_reshuffle_and_sources_differ():
    a = sample_indices("shuffle", np.arange(200), size=100, seed=0, source_id=0)
    b = sample_indices("shuffle", np.arange(100), size=100, seed=0, source_id=1)
    assert not np.array_equal(a[:100], a[100:]) and not np.array_equal(a[:100], b)


def test_huge_sources_cost_no_memory():
    draws = np.arange(10**10 - 5, 10**10 + 5)
    idx = sample_indices("shuffle", draws, size=10**10, seed=0, source_id=0)
    assert ((idx >= 0) & (idx < 10**10)).all() and len(set(idx[:5].tolist())) == 5

    def peak(size):  # traced bytes while mapping 10^5 draws of a source of `size` samples
        draws = np.arange(10**5)
        tracemalloc.start()
        sample_indices("shuffle", draws, size=size, seed=0, source_id=0)
        top = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return top

    small, huge = peak(10**6), peak(10**12)
    assert huge < 1.5 * small + 65536, (small, huge)  # the same, whatever the source size


def test_any_draw_is_computed_directly():
    full = sample_indices("shuffle", np.arange(1000), size=77, seed=4, source_id=2)
    assert np.array_equal(
        full[500:510], sample_indices("shuffle", np.arange(500, 510), size=77, seed=4, source_id=2)
    )


def _z(statistic: float, df: int) -> float:
    """A chi-square statistic as a standard normal deviate (Wilson-Hilferty)."""
    return ((statistic / df) ** (1 / 3) - (1 - 2 / (9 * df))) / (2 / (9 * df)) ** 0.5


def _uniformity(size: int, epochs: int, seed: int = 3) -> tuple[float, float]:
    """z of the position x index counts and of the (first, second) pairs over
    ``epochs`` shuffles of ``size`` samples; each near N(0, 1) when uniform."""
    draws = np.arange(epochs * size)
    perms = sample_indices("shuffle", draws, size=size, seed=seed, source_id=1)
    perms = perms.reshape(epochs, size)
    cells = np.bincount((np.arange(size) * size + perms).ravel(), minlength=size**2)
    expected = epochs / size
    # each epoch is a permutation matrix (fixed margins): Pearson's X^2 times
    # (n - 1) / n has (n - 1)^2 degrees of freedom's mean
    x2 = ((cells - expected) ** 2 / expected).sum() * (size - 1) / size
    by_position = _z(x2, (size - 1) ** 2)
    pairs = np.bincount(perms[:, 0] * size + perms[:, 1], minlength=size**2)
    pairs = pairs[~np.eye(size, dtype=bool).ravel()]
    expected = epochs / (size * (size - 1))
    by_pair = ((pairs - expected) ** 2 / expected).sum()
    return by_position, _z(by_pair, size * (size - 1) - 1)


@pytest.mark.parametrize(
    "sizes", [range(2, 34), range(34, 65), (65, 100, 127, 128, 129, 130, 200, 255, 257)]
)
def test_shuffles_are_uniform_at_small_sizes(sizes):
    # Before algorithm version 2 a source of 5 samples put an index at a position
    # with frequency 0.154 to 0.238 (z = 68 here); deterministic, so no flakes.
    for size in sizes:
        by_position, by_pair = _uniformity(size, 20_000)
        assert abs(by_position) < 4.5 and abs(by_pair) < 4.5, (size, by_position, by_pair)


def test_a_shuffle_of_a_thousand_is_uniform():
    by_position, _ = _uniformity(1000, 12_000, seed=5)  # (too few pairs per cell to test)
    assert abs(by_position) < 4.5, by_position


def test_replacement_is_uniform():
    idx = sample_indices("replacement", np.arange(200_000), size=10, seed=0, source_id=0)
    counts = np.bincount(idx, minlength=10)
    assert np.abs(counts - 20_000).max() < 5 * np.sqrt(20_000)


def test_sequential_cycles():
    assert sample_indices("sequential", np.arange(7), size=3, seed=0, source_id=0).tolist() == [
        0,
        1,
        2,
        0,
        1,
        2,
        0,
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"order": "shufle"}, "did you mean 'shuffle'?"),
        ({"size": 0}, "source size must be >= 1, got 0"),
    ],
)
def test_bad_orders_are_named(kwargs, message):
    args = {"order": "shuffle", "size": 5} | kwargs
    with pytest.raises(
        ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")
    ):
        sample_indices(args.pop("order"), np.arange(3), seed=0, source_id=0, **args)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(ORDERS), st.integers(1, 3000)), min_size=1, max_size=24),
    st.integers(0, 2**32),
    st.integers(0, 400),
    st.sampled_from([37, 4096]),  # 4096 x 20 steps: a heavy source is mapped as one run
)
def test_indexed_batches_map_every_source_as_sample_indices_does(specs, seed, start, batch_size):
    names = [f"s{i}" for i in range(len(specs))]
    plan = Plan(
        Mixture(weights={n: 30.0 if i == 0 else 1.0 for i, n in enumerate(names)}),
        global_batch_size=batch_size,
        seed=seed,
        sizes={n: size for n, (_, size) in zip(names, specs)},
        order={n: order for n, (order, _) in zip(names, specs)},
    )
    batch = indexed(plan, plan.batches(start, 20))
    for k, (order, size) in enumerate(specs):
        mine = batch.sources == k
        want = sample_indices(order, batch.draws[mine], size=size, seed=seed, source_id=k)
        assert np.array_equal(batch.indices[mine], want)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(1, 300), min_size=2, max_size=40), st.integers(0, 2**32),
       st.integers(0, 50))  # fmt: skip
def test_small_shuffled_sources_map_in_a_batch_as_alone(sizes, seed, start):
    # Sizes up to 128 sort hashes per epoch, larger ones run the Feistel network;
    # many epochs of each pass in one batch.
    names = [f"s{i}" for i in range(len(sizes))]
    plan = Plan(Mixture(weights=dict.fromkeys(names, 1.0)), global_batch_size=256, seed=seed,
                sizes=dict(zip(names, sizes)))  # fmt: skip
    batch = indexed(plan, plan.batches(start, 8))
    for k, size in enumerate(sizes):
        mine = batch.sources == k
        want = sample_indices("shuffle", batch.draws[mine], size=size, seed=seed, source_id=k)
        assert np.array_equal(batch.indices[mine], want)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 5000), st.integers(0, 3), st.integers(0, 9)),
             min_size=1, max_size=30),
    st.integers(0, 2**32),
)  # fmt: skip
def test_shuffled_draws_of_many_sources_are_their_sample_indices(specs, seed):
    # Sizes 1, up to 128 (sorted hashes) and above (Feistel at every width), each
    # source's draws over several epochs, all of them in one call, interleaved.
    rng = np.random.default_rng(seed)
    sizes, keys, draws, want = [], [], [], []
    for size, source_id, epochs in specs:  # ids may repeat: one key, other sizes
        d = rng.integers(0, size * (epochs + 1), 40)
        sizes.append(np.full(d.size, size))
        keys.append(np.full(d.size, shuffle_key(seed, source_id), dtype=np.uint64))
        draws.append(d)
        want.append(sample_indices("shuffle", d, size=size, seed=seed, source_id=source_id))
    mixed = rng.permutation(sum(x.size for x in draws))
    sizes, keys, draws, want = (np.concatenate(x)[mixed] for x in (sizes, keys, draws, want))
    assert np.array_equal(shuffled(sizes, keys, draws), want)


def test_permutation_widths_are_exact_at_every_power_of_two():
    near = [(1 << b) + e for b in range(64) for e in (-1, 0, 1) if 0 <= (1 << b) + e < 1 << 64]
    values = np.array(near, dtype=np.uint64)
    assert _bit_length(values).tolist() == [v.bit_length() for v in near]
