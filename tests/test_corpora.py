"""Plans with corpora: units counted exactly, files split in closed form, the bound
at thousands of files, streams unchanged without corpora, the errors."""

import pickle

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from annealmix import Mixture, Phase, Plan, Stream
from annealmix import _compiled as compiled
from annealmix._counting import Grouped, Memo, Q, Targets
from annealmix._counting.grouped import MAX_COUNT, Split, share_of, units

PSI_HALF = 1.6799428  # half the sum of the Fibonacci numbers' reciprocals, rounded up


def cooldown(files: int, corpora: int, steps: int, seed: int = 0):
    """An ALCF-style cooldown: log-normal file weights in ``corpora`` corpora; the
    anneal rescales each corpus and brings in new files of the first corpus."""
    rng = np.random.default_rng(seed)
    names = [f"c{i % corpora:02d}/f{i:05d}" for i in range(files)]
    start = dict(zip(names, rng.lognormal(0.0, 1.0, files)))
    scale = rng.uniform(0.2, 3.0, corpora)
    target = {n: w * scale[int(n[1:3])] for n, w in start.items()}
    for n in names[: 5 * corpora : corpora]:  # new in the second list only
        start[n] = 0.0
    groups: dict[str, list[str]] = {}
    for n in names:
        groups.setdefault(n.split("/")[0], []).append(n)
    phase = Phase(start_step=steps // 4, end_step=3 * steps // 4, weights=target,
                  schedule="cosine")  # fmt: skip
    return Mixture(weights=start, phases=[phase]), groups


def largest_gaps(plan: Plan, steps: int, chunk: int = 2000) -> tuple[float, float]:
    """The largest |C - T| over steps [0, steps): per unit (in exact integers, units
    of 1/Q, returned in samples) and per source (floats)."""
    counter, b = plan._counter, plan.global_batch_size
    unit_of, unit_targets = counter.unit_of, counter.inner.targets
    files, units_gap = 0.0, 0
    base = np.zeros(plan.num_sources, dtype=np.int64)
    ubase = [0] * counter.inner.n
    prev = np.zeros(plan.num_sources, dtype=np.int64)
    for a in range(0, steps, chunk):
        z = min(steps, a + chunk)
        rows = np.cumsum(plan.counts(a, z - a), axis=0) + prev
        prev = rows[-1]
        assert (rows.sum(axis=1) == b * np.arange(a + 1, z + 1)).all()
        quanta = Targets(plan.mixture).quanta(a, z)
        targets = b * ((np.cumsum(quanta, axis=0) + base) / Q)
        base += quanta.sum(axis=0)
        files = max(files, float(np.abs(rows - targets).max()))
        per_unit = np.zeros((z - a, counter.inner.n), dtype=np.int64)
        np.add.at(per_unit.T, unit_of, rows.T)
        uq = np.cumsum(unit_targets.quanta(a, z), axis=0).astype(object) + np.array(ubase, object)
        ubase = list(uq[-1])
        units_gap = max(units_gap, max(abs(int(g)) for g in (per_unit.astype(object) * Q
                                                                - b * uq).ravel()))  # fmt: skip
    return units_gap / Q, files


@pytest.mark.parametrize("steps", [20_000, pytest.param(100_000, marks=pytest.mark.slow)])
def test_thousands_of_files_keep_the_unit_and_file_bounds(steps):
    mix, groups = cooldown(4000, 20, steps)
    plan = Plan(mix, global_batch_size=1024, corpora=groups)
    counter = plan._counter
    assert isinstance(counter, Grouped) and counter.inner.n == 21  # the new files: one more
    unit_gap, file_gap = largest_gaps(plan, steps)
    print(f"{steps:,} steps of 4,000 files: largest gaps {unit_gap:.7f} samples per unit, "
          f"{file_gap:.4f} per file")  # fmt: skip
    assert unit_gap < 1
    assert file_gap < PSI_HALF
    for step in (steps // 3, steps // 2, steps - 1):  # a fresh lookup lands on the walk
        assert (Plan(mix, global_batch_size=1024, corpora=groups).consumed(step)
                == plan.consumed(step)).all()  # fmt: skip


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.floats(1e-4, 1e4), min_size=2, max_size=40),
    st.integers(1, 300),
    st.integers(0, 5),
)
def test_a_split_keeps_every_source_within_the_bound(weights, batch, extra):
    names = [f"f{i}" for i in range(len(weights))]
    others = {f"o{i}": 1.0 + i for i in range(extra)}
    mix = Mixture(weights=dict(zip(names, weights)) | others)
    plan = Plan(mix, global_batch_size=batch, corpora={"c": names})
    counts = np.cumsum(plan.counts(0, 300), axis=0)
    assert (counts.min(axis=0) >= 0).all() and (np.diff(counts, axis=0) >= 0).all()
    targets = batch * np.cumsum(Targets(mix).quanta(0, 300), axis=0) / Q
    assert np.abs(counts - targets).max() < PSI_HALF


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 1 << 40), st.integers(0, MAX_COUNT - 1))
def test_the_split_rounds_exactly_in_int64(share, count):
    want = (share * count + (1 << 39)) >> 40
    assert int(share_of(np.int64(share), np.int64(count))) == want
    assert int(share_of(np.array([share]), np.array([count]))[0]) == want


def test_compiled_and_numpy_splits_agree():
    mix, groups = cooldown(300, 7, 2000, seed=3)
    plan = Plan(mix, global_batch_size=512, corpora=groups)
    with compiled.numpy_only():
        numpy = Plan(mix, global_batch_size=512, corpora=groups).counts(0, 2000)
    assert (plan.counts(0, 2000) == numpy).all()


def test_corpora_whose_files_keep_no_ratio_give_the_stream_without_corpora():
    rng = np.random.default_rng(1)
    names = [f"f{i}" for i in range(6)]
    later = Phase(start_step=10, end_step=50, weights=dict(zip(names, rng.random(6))))
    mix = Mixture(weights=dict(zip(names, rng.random(6))), phases=[later])
    plain = Plan(mix, global_batch_size=64)
    grouped = Plan(mix, global_batch_size=64, corpora={"a": names[:3], "b": names[3:]})
    assert units(mix, ((0, 1, 2), (3, 4, 5)))[0] == [[k] for k in range(6)]
    assert (grouped.counts(0, 80) == plain.counts(0, 80)).all()
    assert grouped.fingerprint != plain.fingerprint  # the corpora are part of the plan


def test_units_follow_the_ratios_inside_each_corpus():
    w0 = {"a1": 1.0, "a2": 2.0, "a3": 1.0, "b1": 1.0, "b2": 3.0, "x": 1.0}
    w1 = {"a1": 2.0, "a2": 4.0, "a3": 5.0, "b1": 0.5, "b2": 1.5}  # a3 changes its ratio
    mix = Mixture(weights=w0, phases=[Phase(start_step=0, end_step=9, weights=w1)])
    assert units(mix, ((0, 1, 2), (3, 4)))[0] == [[0, 1], [2], [3, 4], [5]]


def test_one_corpus_takes_every_sample_and_splits_it():
    names = [f"f{i}" for i in range(5)]
    plan = Plan(Mixture(weights=dict(zip(names, [5, 4, 3, 2, 1]))), global_batch_size=15,
                corpora={"all": names})  # fmt: skip
    assert plan.counts(0, 1).tolist() == [[5, 4, 3, 2, 1]]
    assert plan.consumed(1000).tolist() == [5000, 4000, 3000, 2000, 1000]


def test_a_plan_with_corpora_pickles_resumes_and_refuses_other_corpora():
    mix, groups = cooldown(60, 4, 400)
    plan = Plan(mix, global_batch_size=32, sizes=dict.fromkeys(mix.sources, 50), corpora=groups)
    assert pickle.loads(pickle.dumps(plan)) == plan
    assert plan.replace(seed=1).corpora == plan.corpora
    s = Stream(plan)
    s.take(150)
    state = s.state_dict()
    fresh = Stream(Plan(mix, global_batch_size=32, sizes=dict.fromkeys(mix.sources, 50),
                        corpora=groups))  # fmt: skip
    fresh.load_state_dict(state)
    assert (fresh.take(5).indices == s.take(5).indices).all()
    other = Plan(mix, global_batch_size=32, sizes=dict.fromkeys(mix.sources, 50))
    with pytest.raises(ValueError, match="corpora"):
        Stream(other).load_state_dict(state)


def test_a_huge_unit_count_is_refused_not_wrapped():
    split = Split(2, [[0, 1]], [1.0, 3.0])
    assert split.expand(np.array([[MAX_COUNT - 1]])).sum() == MAX_COUNT - 1
    with pytest.raises(OverflowError, match="2\\*\\*44"):
        split.expand(np.array([[MAX_COUNT]]))


def test_the_huffman_tree_puts_heavy_files_high():
    split = Split(5, [[0, 1, 2, 3, 4]], [8.0, 1.0, 1.0, 1.0, 1.0])
    assert split.depth == 3  # the heavy file sits one below the root


@pytest.mark.parametrize(
    ("corpora", "mode", "error", "match"),
    [
        ({"c": ["a", "zz"]}, "exact", ValueError, "source in corpora\\['c'\\].*'zz'"),
        ({"c": ["a", "b"], "d": ["b"]}, "exact", ValueError, "'b' is in corpora 'c' and 'd'"),
        ({"c": "ab"}, "exact", TypeError, "corpora\\['c'\\] must be a list"),
        ([("c", ["a"])], "exact", TypeError, "corpora must map"),
        ({"c": ["a", "b"]}, "random", ValueError, 'mode "random".*leave corpora out'),
    ],
)
def test_bad_corpora_are_refused_naming_the_fix(corpora, mode, error, match):
    mix = Mixture(weights={"a": 1.0, "b": 2.0, "c": 3.0})
    with pytest.raises(error, match=match):
        Plan(mix, global_batch_size=8, mode=mode, corpora=corpora)


def test_memo_free_lookups_agree_with_walks():
    mix, groups = cooldown(200, 5, 3000, seed=7)
    plan = Plan(mix, global_batch_size=100, corpora=groups)
    walked = np.cumsum(plan.counts(0, 3000), axis=0)
    counter = plan._counter
    for step in (1, 700, 1500, 2999):
        assert (counter.point(step + 1, Memo()).counts == walked[step]).all()


def test_the_sources_targets_and_the_units_counts_keep_apart_caches():
    # a plan's targets (per source) and its unit counter share the plan's memo: a lookup
    # of targets between lookups of counts must change no count
    mix, groups = cooldown(300, 6, 4000, seed=5)
    fresh = Plan(mix, global_batch_size=128, corpora=groups)
    for first, before, step in ((3200, 3100, 3999), (500, 300, 900), (2000, 1500, 3500)):
        plan = Plan(mix, global_batch_size=128, corpora=groups)
        plan.consumed(first)
        plan.targets(before)
        assert (plan.consumed(step) == fresh.consumed(step)).all()
        assert (plan.counts(step, 3) == fresh.counts(step, 3)).all()
