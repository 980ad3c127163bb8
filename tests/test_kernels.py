"""The compiled kernels (numba, the ``fast`` extra) give the numpy and Python code's integers
bit for bit; threads give the one-thread replay's."""

import os
import subprocess
import sys
from contextlib import contextmanager

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_counts import _before, _counter, _rows, held_gaps
from test_mixture import mixtures

from annealmix import Mixture, Phase, Plan, Stream, TokenPlan
from annealmix import _compiled as _kernels
from annealmix._counting import LOOKAHEAD, Memo, OutOfBound, quantize
from annealmix._counting import threads as _threads_module
from annealmix.online import OnlinePlan

pytest.importorskip("numba")
compiled = pytest.mark.skipif(
    _kernels.kernels() is None, reason="kernels turned off (ANNEALMIX_KERNELS=numpy)"
)


def _both(fn):
    """``fn()`` through the kernels and through numpy."""
    assert _kernels.kernels() is not None
    fast = fn()
    with _kernels.numpy_only():
        plain = fn()
    return fast, plain


@compiled
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mixtures(max_sources=40, max_steps=3000), st.sampled_from([1, 3, 64, 1024, 4096]))
def test_replayed_counts_are_the_numpy_counts(mix, batch):
    if mix.num_sources < 3:
        mix = Mixture(weights={**mix.weights, "extra": 0.5}, phases=[])
    total = 4000

    def rows():
        return _rows(_counter(mix, batch), 0, total)

    compiled, plain = _both(rows)
    assert np.array_equal(compiled, plain)


@compiled
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(held_gaps())
def test_lookups_across_long_phases_are_the_numpy_lookups(case):
    mix, batch, total, steps = case

    def lookups():
        counter = _counter(mix, batch)
        return [_before(counter, s) for s in steps] + [_rows(counter, 0, total)]

    compiled, plain = _both(lookups)
    assert all(np.array_equal(a, b) for a, b in zip(compiled, plain))


@compiled
@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.lists(
            st.sampled_from([0.0, 1e-300, 1e-13, 1e-7, 0.1, 0.5, 1.0, 3.0]), min_size=5, max_size=5
        ),
        min_size=1,
        max_size=20,
    )  # fmt: skip
)
def test_quanta_are_the_numpy_quanta(rows):
    weights = np.array(rows, dtype=np.float64)
    weights[weights.sum(axis=1) == 0, 0] = 1.0
    weights /= weights.sum(axis=1, keepdims=True)
    compiled, plain = _both(lambda: quantize(weights))
    assert np.array_equal(compiled, plain)
    assert (compiled.sum(axis=1) == 1 << 40).all()
    assert ((compiled > 0) == (weights > 0)).all()  # no positive weight starved


@compiled
def test_a_step_the_bound_cannot_hold_is_refused_alike():
    """Counts that claim more samples ahead than a step has bonus samples (no plan
    produces them): both paths refuse with the same message."""
    mix = Mixture(weights={"a": 1.0, "b": 1.0, "c": 1.0})

    def chunk():
        counter = _counter(mix, 1)
        with pytest.raises(OutOfBound, match="within one sample") as err:
            counter.chunk_rows(1, 5, np.array([1, 1, 1]), Memo())
        return str(err.value)

    compiled, plain = _both(chunk)
    assert compiled == plain
    assert "step 1 " in compiled and "(3 sources hold a sample ahead, 2 may)" in compiled


@compiled
def test_long_anneal_lookup_is_the_numpy_lookup():
    names = [f"s{i}" for i in range(64)]
    mix = Mixture(
        weights={x: 1.0 + i for i, x in enumerate(names)},
        phases=[Phase(start_step=0, end_step=3 * LOOKAHEAD, weights={x: 1.0 for x in names})],
    )
    compiled, plain = _both(lambda: Plan(mix, global_batch_size=1024).consumed(40_000))
    assert np.array_equal(compiled, plain)


def test_kernels_can_be_turned_off_and_are_not_imported_with_annealmix():
    code = (
        "import sys, annealmix; from annealmix import _compiled as compiled; "
        "print('numba' in sys.modules, compiled.kernels() is None)"
    )
    env = {**os.environ, "ANNEALMIX_KERNELS": "numpy"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.split() == ["False", "True"], out.stderr


@compiled
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(held_gaps(), st.integers(2, 5), st.sampled_from([60, 300, 5000]))
def test_threads_give_the_serial_replay(case, threads, piece):
    """Long replays split across threads (pieces guessed from their floors, then
    checked and re-met in order) equal the one-thread replay, rows and lookups."""
    mix, batch, total, steps = case

    def run(workers):
        counter = _counter(mix, batch)
        counter.piece, counter.chunk = piece, max(1, piece // 3)
        with _threads(workers):
            return [_rows(counter, 0, total)] + [_before(counter, s) for s in steps]

    serial, parallel = run(1), run(threads)
    assert all(np.array_equal(a, b) for a, b in zip(serial, parallel))


@contextmanager
def _threads(count):
    saved = os.environ.get("ANNEALMIX_THREADS")
    os.environ["ANNEALMIX_THREADS"] = str(count)
    try:
        yield
    finally:
        if saved is None:
            del os.environ["ANNEALMIX_THREADS"]
        else:
            os.environ["ANNEALMIX_THREADS"] = saved


def test_a_bad_thread_count_names_the_variable():
    with _threads("many"), pytest.raises(ValueError, match="ANNEALMIX_THREADS must be a whole"):
        _kernels.threads()


@compiled
def test_a_piece_whose_guess_never_meets_the_truth_is_replayed_again(monkeypatch):
    """One-row chunks: a low-weight source's held bit outlives the first chunk, so
    the guessed piece is replayed from the true counts; rows equal the serial ones."""
    weights = {"s0": 0.3, "s1": 1.0, "s2": 1.0, "s3": 0.01, "s4": 0.01}
    counter = _counter(Mixture(weights=weights), 2)
    counter.piece, counter.chunk = 100, 1
    replays = []
    serial = _threads_module._serial
    monkeypatch.setattr(_threads_module, "_serial",
                        lambda c, *a: replays.append(a[0]) or serial(c, *a))  # fmt: skip
    with _threads(4):
        parallel = _rows(counter, 0, 400)
    assert len(replays) > 4  # four pieces, and at least one again
    with _threads(1):
        assert np.array_equal(parallel, _rows(_counter(Mixture(weights=weights), 2), 0, 400))


def test_a_bad_kernel_setting_names_the_variable():
    code = "from annealmix import _compiled as compiled; compiled.kernels()"
    env = {**os.environ, "ANNEALMIX_KERNELS": "off"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode != 0
    assert "ANNEALMIX_KERNELS must be 'numba' or 'numpy', got 'off'" in out.stderr


@compiled
def test_a_guess_that_meets_a_refused_step_is_replayed_from_the_true_counts(monkeypatch):
    """Should a guessed piece reach a step the bound refuses (no plan's counts do),
    it is replayed from the true counts; a refusal of the true counts still raises."""
    weights = {"s0": 0.3, "s1": 1.0, "s2": 1.0, "s3": 0.01}
    counter = _counter(Mixture(weights=weights), 2)
    counter.piece, counter.chunk = 100, 30
    tried, serial = set(), _threads_module._serial

    def refuse_guesses_once(c, piece, *rest):
        if piece[0] > 0 and piece not in tried:
            tried.add(piece)
            raise OutOfBound("refused")
        return serial(c, piece, *rest)

    monkeypatch.setattr(_threads_module, "_serial", refuse_guesses_once)
    with _threads(3):
        parallel = _rows(counter, 0, 300)
    assert len(tried) == 2
    with _threads(1):
        serial_rows = _rows(_counter(Mixture(weights=weights), 2), 0, 300)
    assert np.array_equal(parallel, serial_rows)
    monkeypatch.setattr(_threads_module, "_serial",
                        lambda *a: (_ for _ in ()).throw(OutOfBound("x")))  # fmt: skip
    with _threads(3), pytest.raises(OutOfBound, match="x"):
        _rows(counter, 0, 300)


@compiled
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32), st.integers(2, 24), st.sampled_from([1, 3, 64, 4096]))
def test_online_walks_are_the_python_walks(seed, n, batch):
    """An online plan's walk in samples (``Carried``): rows, lookups from marks and
    served carries equal the Python loop's."""
    rng = np.random.default_rng(seed)
    names = [f"s{i}" for i in range(n)]

    def weights():
        w = rng.random(n) ** 3
        w[rng.random(n) < 0.2] = 0.0
        w[rng.integers(n)] = 1.0
        return dict(zip(names, w.tolist()))

    mix = Mixture(weights=weights(), phases=[Phase(start_step=5, end_step=2000, weights=weights())])
    log = []
    for s in np.sort(rng.choice(9000, 4, replace=False)) + 1:  # weight where scheduled
        w = np.array(list(weights().values())) * (mix.weights_at(int(s)) > 0)
        log.append((int(s), w.tolist() if w.any() else mix.weights_at(int(s)).tolist()))

    def make():
        return OnlinePlan(mix, global_batch_size=batch, sizes=dict.fromkeys(names, 10**6))

    def walk():
        plan = make()
        rows = plan.counts(0, 10_000, log=log)
        return [rows, plan.consumed(8193, log=log), make().consumed(9999, log=log),
                np.array(list(plan.batches(4097, 1, log=log).deficits))]  # fmt: skip

    compiled, plain = _both(walk)
    assert all(np.array_equal(a, b) for a, b in zip(compiled, plain))


@compiled
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(0, 2**32),
    st.integers(2, 6),
    st.sampled_from([1, 3, 64, 512]),
    st.sampled_from([2, 3000, 1 << 19]),
)
def test_token_walks_are_the_python_walks(seed, n, batch, longest):
    """A token plan's walk (``Tokens``): rows, lookups and carries equal the Python
    loop's, with documents up to 2^19 tokens and weights down to 1e-9 (finish times
    whose products pass 2^64, compared exactly)."""
    rng = np.random.default_rng(seed)
    names = [f"s{i}" for i in range(n)]

    def weights():
        w = rng.choice([0.0, 1e-9, 1e-3, 0.3, 1.0], n)
        w[rng.integers(n)] = 1.0
        return dict(zip(names, w.tolist()))

    mix = Mixture(weights=weights(), phases=[Phase(start_step=2, end_step=90, weights=weights())])
    lengths = {x: rng.integers(1, longest, int(rng.integers(1, 3000))) for x in names}

    def make():
        return TokenPlan(mix, global_batch_size=batch, lengths=lengths, seed=seed)

    def walk():
        plan = make()
        rows = plan.counts(0, 120)
        return [rows, make().consumed(119), plan.consumed(60),
                np.array(list(plan.batches(30, 3).deficits), dtype=object)]  # fmt: skip

    compiled, plain = _both(walk)
    assert all(np.array_equal(a, b) for a, b in zip(compiled, plain))


@compiled
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32), st.integers(3, 400), st.sampled_from([1, 7, 256]))
def test_wide_shuffles_of_many_sources_are_the_numpy_shuffles(seed, n, batch):
    # many sources of sizes on both sides of the exact-sort limit, drawn a few at a
    # time (positions mapped together), across epoch boundaries
    rng = np.random.default_rng(seed)
    names = [f"s{i}" for i in range(n)]
    sizes = {k: int(z) for k, z in zip(names, rng.integers(1, 3000, n))}
    mix = Mixture(weights=dict(zip(names, rng.lognormal(0, 1, n))))
    plan = Plan(mix, global_batch_size=batch, sizes=sizes, seed=seed)

    def indices():
        return Stream(plan).take(200).indices

    fast, plain = _both(indices)
    assert np.array_equal(fast, plain)
