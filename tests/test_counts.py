"""Exact counts: the bound in the algorithm's real regime, chunk invariance, strategies."""

import contextlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_mixture import mixtures

from annealmix import Mixture, Phase, Plan
from annealmix import _compiled as compiled
from annealmix._counting import (
    LOOKAHEAD,
    Bernoulli,
    EarliestDeadline,
    Memo,
    Nearest,
    Point,
    Q,
    Targets,
    step_counts,
)


def _counter(mix, batch: int) -> EarliestDeadline:
    return EarliestDeadline(Targets(mix), batch)


def _rows(counter, start: int, num_steps: int, prev=None) -> np.ndarray:
    """C(t) for t in [start, start + num_steps), through a fresh memo."""
    if prev is None:
        prev = counter.point(start, Memo()).counts
    return counter.range(Point(start, np.asarray(prev)), num_steps, Memo())[0]


def _before(counter, step: int, memo=None) -> np.ndarray:
    return counter.point(step, Memo() if memo is None else memo).counts


def _targets(plan: Plan, num_steps: int) -> np.ndarray:
    """T(t) for t < num_steps: B * (quanta summed through t) / Q, as floats."""
    quanta = Targets(plan.mixture).quanta(0, num_steps)
    return plan.global_batch_size * (np.cumsum(quanta, axis=0) / Q)


def _assert_within_bound(plan: Plan, num_steps: int) -> None:
    """Counts within one sample of the targets (one half for two sources), checked in
    exact integers (units of 1/Q): in floats a gap of 1 - 3e-12 rounds to 1.0."""
    counts = plan.counts(0, num_steps)
    assert (counts.sum(axis=1) == plan.global_batch_size).all()
    quanta = Targets(plan.mixture).quanta(0, num_steps).astype(object)
    exact = np.cumsum(counts, axis=0).astype(object) * Q - plan.global_batch_size * np.cumsum(
        quanta, axis=0
    )
    gap = max(abs(int(g)) for g in exact.ravel())
    if plan.num_sources == 2:
        assert 2 * gap <= Q, gap / Q
    else:
        assert gap < Q, gap / Q


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    mixtures(max_sources=64, max_steps=120),
    st.one_of(st.integers(1, 16), st.integers(17, 4096)),
)
def test_exact_counts_stay_within_one_sample_of_the_target(mix, batch):
    plan = Plan(mix, global_batch_size=batch)
    _assert_within_bound(plan, 130 if batch <= 256 else 20)


@st.composite
def long_mixtures(draw):
    """Phases longer than the look-ahead, separated by held segments of any length."""
    n = draw(st.integers(3, 8))
    names = [f"s{i}" for i in range(n)]

    def vector():
        w = draw(st.lists(st.sampled_from([0.0, 1e-4, 0.01, 0.3, 1.0, 5.0]), min_size=n,
                          max_size=n))  # fmt: skip
        w[draw(st.integers(0, n - 1))] = 1.0
        return dict(zip(names, w))

    phases, start = [], draw(st.integers(0, 50))
    for _ in range(draw(st.integers(1, 3))):
        length = draw(st.sampled_from([LOOKAHEAD // 2, LOOKAHEAD + 1, 2 * LOOKAHEAD + 7]))
        schedule = draw(st.sampled_from(["linear", "cosine", "step", "sigmoid"]))
        phases.append(
            Phase(start_step=start, end_step=start + length, weights=vector(), schedule=schedule)
        )
        start += length + draw(st.sampled_from([0, 1, 100, LOOKAHEAD + 3]))
    return Mixture(weights=vector(), phases=phases), start + LOOKAHEAD


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(long_mixtures(), st.sampled_from([1, 3, 64]))
def test_bound_holds_over_phases_longer_than_the_look_ahead(mix_steps, batch):
    mix, num_steps = mix_steps
    _assert_within_bound(Plan(mix, global_batch_size=batch), num_steps)


@st.composite
def held_gaps(draw):
    """Phases separated by held segments shorter and longer than the look-ahead, with
    weights dense (every source a sample per step or more) or sparse, some zero."""
    n = draw(st.integers(3, 9))
    batch = draw(st.sampled_from([1, 3, 64, 1024]))
    names = [f"s{i}" for i in range(n)]

    def vector():
        choices = [0.0, 1.0, 3.0] if draw(st.booleans()) else [0.0, 1e-4, 0.02, 1.0]
        w = draw(st.lists(st.sampled_from(choices), min_size=n, max_size=n))
        w[draw(st.integers(0, n - 1))] = 2.0
        return dict(zip(names, w))

    phases, start = [], draw(st.sampled_from([0, 1, 40, LOOKAHEAD + 5]))
    for _ in range(draw(st.integers(0, 3))):
        length = draw(st.integers(1, 300))
        schedule = draw(st.sampled_from(["linear", "cosine", "step"]))
        phases.append(
            Phase(start_step=start, end_step=start + length, weights=vector(), schedule=schedule)
        )
        start += length + draw(st.sampled_from([0, 1, 2, 3, 100, LOOKAHEAD + 3]))
    steps = draw(st.lists(st.integers(0, start + 2 * LOOKAHEAD), min_size=1, max_size=8))
    return Mixture(weights=vector(), phases=phases), batch, start + 2 * LOOKAHEAD, steps


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(held_gaps())
def test_held_segments_give_the_replayed_counts_without_replaying(case):
    """Lookups through the held-segment closed form (cold and on one cursor, in any
    order) equal the step-by-step replay."""
    mix, batch, total, steps = case
    counter = _counter(mix, batch)
    replay = _rows(counter, 0, total)
    shared = Memo()
    for step in [*steps, *sorted(steps)]:
        want = replay[step - 1] if step else np.zeros(mix.num_sources, dtype=np.int64)
        assert np.array_equal(_before(counter, step), want), step
        assert np.array_equal(_before(counter, step, shared), want), step


def test_held_segment_closed_form_is_taken_only_where_proven():
    """Step 10^9 in O(N) (no replay could reach it) where the sparse sources leave
    under one sample of slack; several tiny weights, or a zero-weight source owed
    most of a sample beside a sparse one: no closed form, the replay decides."""
    names = [f"s{i}" for i in range(64)]
    # weights 1..64 at B = 1024: two sources under a sample per step (0.49, 0.98)
    sparse = Mixture(weights={x: 1.0 + i for i, x in enumerate(names)})
    for mix in (Mixture(weights={x: 16.0 + i for i, x in enumerate(names)}), sparse):
        counter = _counter(mix, 1024)
        far = counter.held_counts(0, 0, np.zeros(64, dtype=np.int64), [0] * 64, 10**9)
        assert far is not None and far.sum() == 1024 * (10**9 + 1)
        targets = 1024 * np.array(counter.targets.before(10**9 + 1), dtype=object) / Q
        assert all(abs(c - t) < 1 for c, t in zip(far.tolist(), targets.tolist()))
        replay = _rows(counter, 0, 20_000)
        for step in (1, 2, 9_999, 20_000):
            assert np.array_equal(_before(counter, step), replay[step - 1])

    tiny = Mixture(weights={"a": 1.0, "b": 1e-3, "c": 1e-3, "d": 1e-3})
    assert _counter(tiny, 64).held_counts(0, 0, np.zeros(4, np.int64), [0] * 4, 10) is None
    # Why not everywhere: after this phase, the held segment's steps keep bits held
    # from the step before against the choice the step alone would make (the numpy
    # replay repairs them), so its counts depend on more than the step.
    names = ["a", "b", "c", "d"]
    end = dict(zip(names, [1.0, 1.0, 0.3, 0.01]))
    mix = Mixture(
        weights=dict(zip(names, [1.0, 1.0, 0.3, 0.3])),
        phases=[Phase(start_step=0, end_step=7, weights=end)],
    )
    counter, repaired = _counter(mix, 3), []
    repair = counter._repair
    counter._repair = lambda i, *rest: repaired.append(i) or repair(i, *rest)
    with compiled.numpy_only():
        before = _rows(counter, 0, 8)[-1]
        repaired.clear()
        _rows(counter, 8, 300, before)
    assert len(repaired) > 50
    assert counter.held_counts(1, 8, before, counter.targets.before(8), 100) is None
    owed = Mixture(
        weights={"a": 1.0, "b": 1.0, "c": 1.0},
        phases=[Phase(start_step=0, end_step=2, weights={"a": 1.0, "b": 0.1, "c": 0.0})],
    )
    counter = _counter(owed, 1)
    before = _rows(counter, 0, 3)[-1]
    assert (
        counter.held_counts(1, 3, before, counter.targets.before(3), 10) is None
    )  # c's target stays fractional


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32), st.sampled_from([3, 64]))
def test_counts_do_not_depend_on_how_steps_are_chunked(seed, n):
    rng = np.random.default_rng(seed)
    names = [f"s{i}" for i in range(n)]
    mix = Mixture(
        weights=dict(zip(names, rng.random(n))),
        phases=[Phase(start_step=100, end_step=30_000, weights=dict(zip(names, rng.random(n))))],
    )
    plan = Plan(mix, global_batch_size=int(rng.integers(1, 50)))
    chunk = plan.replay_chunk
    total = 2 * chunk + 500
    whole = np.cumsum(plan.counts(0, total), axis=0)
    step = 0
    while step < total:  # ragged requests walking on, across chunk boundaries
        size = min(total - step, int(rng.integers(1, 3 * LOOKAHEAD)))
        got = plan.counts(step, size)
        before = whole[step - 1] if step else np.zeros(n, dtype=np.int64)
        assert np.array_equal(before + np.cumsum(got, axis=0), whole[step : step + size])
        step += size
    for s in (chunk - 1, chunk, chunk + 1, total - 1):  # cold lookups, fresh plans
        assert np.array_equal(Plan(mix, global_batch_size=plan.global_batch_size)
                              .consumed(s + 1), whole[s])  # fmt: skip


def test_a_strategy_is_chosen_once_per_plan():
    two = Mixture(weights={"a": 1, "b": 2})
    three = Mixture(weights={"a": 1, "b": 2, "c": 3})
    assert isinstance(Plan(two, global_batch_size=4)._counter, Nearest)
    assert isinstance(Plan(three, global_batch_size=4)._counter, EarliestDeadline)
    assert isinstance(Plan(two, global_batch_size=4, mode="random")._counter, Bernoulli)


def test_random_mode_with_many_sources_numbers_every_draw():
    names = [f"s{i}" for i in range(20)]  # > 16: the sort path of the draw numbering
    mix = Mixture(
        weights={n: i + 1 for i, n in enumerate(names)},
        phases=[Phase(start_step=0, end_step=50, weights={"s0": 1})],
    )
    plan = Plan(mix, global_batch_size=96, mode="random", seed=5)
    batch = plan.batches(0, 60)
    for k in range(20):
        draws = np.sort(batch.draws[batch.sources == k])
        assert draws.tolist() == list(range(draws.size))
    per_step = step_counts(batch.sources, 20)
    assert np.array_equal(plan.consumed(60), per_step.sum(axis=0))
    assert np.array_equal(plan.counts(10, 5), per_step[10:15])


def test_targets_follow_the_float_weights():
    mix = Mixture(
        weights={"a": 1, "b": 2, "c": 3},
        phases=[Phase(start_step=5, end_step=50, weights={"a": 5}, schedule="cosine")],
    )
    plan = Plan(mix, global_batch_size=7)
    float_target = 7 * mix.weights_at(np.arange(80)).sum(axis=0)
    assert np.allclose(plan.targets(79), float_target, atol=1e-6)
    assert np.allclose(_targets(plan, 80)[-1], plan.targets(79))


@pytest.mark.parametrize("n", [2, 3, 8, 64])
def test_tiny_weights_are_not_starved(n):
    weights = {f"s{i}": 1.0 for i in range(n - 1)} | {"rare": 1e-6}
    plan = Plan(Mixture(weights=weights), global_batch_size=64)
    share = 1e-6 / (n - 1 + 1e-6)
    steps = int(2.05 / (share * 64)) + 1  # the rare source's target passes 2 samples
    consumed = plan.consumed(steps)
    assert consumed[-1] >= 2 and abs(consumed[-1] - steps * 64 * share) < 1


def test_huge_weights_are_normalised_without_overflow():
    plan = Plan(Mixture(weights={"a": 1e308, "b": 1e308, "c": 5e307}), global_batch_size=10)
    assert np.abs(plan.consumed(10) - [40, 40, 20]).max() <= 1  # was [0, 0, 100]


@pytest.mark.parametrize(("sources", "batch"), [(3, 6), (5, 10), (6, 12), (3, 3000), (7, 7)])
@pytest.mark.parametrize("kernels", ["compiled", "numpy"])
def test_equal_weights_get_equal_counts_every_step(sources, batch, kernels):
    # 1/n is not a multiple of the quantum: by id alone, {1, 1, 1} at B = 6 drew
    # [2, 3, 1] every step; where rounding to the nearest is an EDF choice, it is taken.
    names = [f"s{k}" for k in range(sources)]
    plan = Plan(Mixture(weights=dict.fromkeys(names, 1.0)), global_batch_size=batch)
    with compiled.numpy_only() if kernels == "numpy" else contextlib.nullcontext():
        plan = plan.replace()
        per_step = step_counts(plan.batches(0, 300).sources, sources)
        assert (per_step == batch // sources).all()
        assert plan.point(10**6).counts.tolist() == [10**6 * batch // sources] * sources


@pytest.mark.parametrize("kernels", ["compiled", "numpy"])
def test_equal_weights_that_do_not_divide_the_batch_take_turns(kernels):
    # {1, 1, 1} at B = 4: each step one source gets the extra sample, in turn (the
    # nearest rounding of 4/3, 8/3, 4, ...), never the same one twice running
    plan = Plan(Mixture(weights=dict.fromkeys("abc", 1.0)), global_batch_size=4)
    with compiled.numpy_only() if kernels == "numpy" else contextlib.nullcontext():
        per_step = step_counts(plan.replace().batches(0, 300).sources, 3)
    extra = per_step.argmax(axis=1)
    assert (per_step.max(axis=1) == 2).all() and (extra[1:] != extra[:-1]).all()
    cumulative = np.cumsum(per_step, axis=0)
    target = 4 * np.arange(1, 301)[:, None] / 3
    assert np.abs(cumulative - target).max() <= 2 / 3 + 1e-9  # within the nearest's 2/3


def largest_remainder(targets: np.ndarray, total: int) -> np.ndarray:
    """Plain largest-remainder rounding of ``targets`` to integers summing to ``total``."""
    counts = np.floor(targets).astype(np.int64)
    counts[np.argsort(-(targets - counts), kind="stable")[: total - counts.sum()]] += 1
    return counts


def test_plain_largest_remainder_takes_a_sample_back_where_weights_jump():
    # What guarantees.md says: rounding the cumulative targets by largest remainder
    # is no plan once weights jump (a count falls), where earliest deadline holds.
    mix = Mixture(weights={"a": 0.4, "b": 0.35, "c": 0.25},
                  phases=[Phase(start_step=0, end_step=1, schedule="step",
                                weights={"b": 0.5, "c": 0.5})])  # fmt: skip
    targets = np.cumsum(mix.weights_at(np.arange(2)), axis=0)  # B = 1
    rounded = [largest_remainder(t, s + 1) for s, t in enumerate(targets)]
    assert rounded[0].tolist() == [1, 0, 0] and rounded[1].tolist() == [0, 1, 1]  # a: 1 -> 0
    plan = Plan(mix, global_batch_size=1)
    counts = np.stack([plan.consumed(t) for t in (1, 2)])
    assert (np.diff(counts, axis=0) >= 0).all() and np.abs(counts - targets).max() < 1
