import os
import pickle
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_mixture import mixtures

from annealmix import Mixture, Phase, Plan, Stream, indexed


@settings(max_examples=40, deadline=None)
@given(mixtures(max_sources=12, max_steps=300), st.integers(1, 64), st.integers(0, 299))
def test_random_access_equals_the_sequential_walk(mix, batch, step):
    plan = Plan(mix, global_batch_size=batch)
    walk = Stream(plan)
    if step:
        walk.take(step)
    fresh = Plan(mix, global_batch_size=batch)
    assert np.array_equal(walk.take(1).sources, fresh.batch(step).sources)
    assert np.array_equal(fresh.consumed(step + 1), walk.consumed)


def test_slices_of_a_batch_follow_the_mixture():
    plan = Plan(Mixture(weights={"a": 0.5, "b": 0.3, "c": 0.2}), global_batch_size=1024)
    batch = plan.batch(3).sources[0]
    for world in (2, 4, 8):
        for share in np.split(batch, world):
            counts = np.bincount(share, minlength=3) / share.size
            assert np.abs(counts - [0.5, 0.3, 0.2]).max() < 8 / share.size


def test_draw_numbers_count_up_within_each_source():
    plan = Plan(
        Mixture(
            weights={"a": 0.6, "b": 0.4}, phases=[Phase(start_step=2, end_step=8, weights={"b": 1})]
        ),
        global_batch_size=10,
    )
    batch = plan.batches(0, 12)
    for k in range(2):
        order = np.argsort(batch.draws[batch.sources == k])
        draws = batch.draws[batch.sources == k][order]
        assert draws.tolist() == list(range(draws.size))


def test_random_mode_follows_gamma_per_position():
    mix = Mixture(
        weights={"x": 0.1, "y": 0.9},
        phases=[Phase(start_step=0, end_step=99, weights={"x": 0.9, "y": 0.1})],
    )
    plan = Plan(mix, global_batch_size=2048, mode="random", seed=3)
    share = (plan.batches(0, 100).sources == 0).mean(axis=1)
    gamma = mix.weights_at(np.arange(100))[:, 0]
    assert np.abs(share - gamma).max() < 5 * np.sqrt(0.25 / 2048)
    walk = Stream(plan)
    walk.take(100)
    assert np.array_equal(plan.consumed(100), walk.consumed)


def test_indices_follow_each_sources_order():
    sizes = {"a": 50, "b": 7}
    plan = Plan(
        Mixture(weights={"a": 1, "b": 1}),
        global_batch_size=10,
        sizes=sizes,
        order={"a": "shuffle", "b": "sequential"},
    )
    batch = indexed(plan, plan.batches(0, 20))
    a = batch.indices[batch.sources == 0][np.argsort(batch.draws[batch.sources == 0])]
    assert sorted(a[:50].tolist()) == list(range(50))
    b = batch.indices[batch.sources == 1][np.argsort(batch.draws[batch.sources == 1])]
    assert b.tolist() == [d % 7 for d in range(b.size)]
    assert np.allclose(plan.epochs(20), [100 / 50, 100 / 7])


GOLDEN_MIX = Mixture(
    weights={"web": 0.7, "code": 0.2, "math": 0.1},
    phases=[
        Phase(
            start_step=2,
            end_step=6,
            weights={"web": 0.2, "code": 0.3, "math": 0.5},
            schedule="cosine",
        )
    ],
)


def test_golden_sequence_exact():
    # Pinned on purpose: a change here changes every user's data stream (algorithm 2).
    plan = Plan(
        GOLDEN_MIX, global_batch_size=8, seed=7, sizes={"web": 1000, "code": 100, "math": 10}
    )
    batch = indexed(plan, plan.batch(4))
    assert batch.sources.tolist() == [[0, 2, 0, 2, 1, 0, 2, 1]]
    assert batch.indices.tolist() == [[318, 5, 122, 4, 80, 100, 8, 21]]


def test_golden_sequence_random():
    plan = Plan(
        GOLDEN_MIX,
        global_batch_size=8,
        seed=7,
        mode="random",
        sizes={"web": 1000, "code": 100, "math": 10},
        order="replacement",
    )
    batch = indexed(plan, plan.batch(4))
    assert batch.sources.tolist() == [[2, 1, 2, 0, 0, 2, 1, 1]]
    assert batch.indices.tolist() == [[5, 44, 4, 355, 146, 8, 63, 56]]


def test_processes_with_other_hash_seeds_and_threads_produce_the_pinned_stream():
    code = (
        "import hashlib, annealmix as am; from test_plan import GOLDEN_MIX;"
        "p = am.Plan(GOLDEN_MIX, global_batch_size=64, seed=11,"
        " sizes={'web': 10**9, 'code': 10**6, 'math': 333});"
        "b = am.indexed(p, p.batches(0, 50));"
        "print(hashlib.sha256(b.sources.tobytes() + b.indices.tobytes()).hexdigest())"
    )
    here = str(Path(__file__).parent)
    digests = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            cwd=here,
            env=dict(
                os.environ,
                PYTHONHASHSEED=str(hash_seed),
                OMP_NUM_THREADS=str(threads),
                OPENBLAS_NUM_THREADS=str(threads),
            ),  # fmt: skip
        ).stdout.strip()
        for hash_seed, threads in ((0, 1), (12345, 2))
    }
    # Pinned on purpose: a change here changes every user's data stream (algorithm 2).
    assert digests == {"6a497eb645a48ff36221883b9639a27dc7519985fa89aac0680caca3e52df91f"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"global_batch_size": 0}, "global_batch_size must be >= 1, got 0"),
        ({"global_batch_size": 8, "mode": "exat"}, "unknown mode 'exat' (did you mean 'exact'?)"),
        (
            {"global_batch_size": 8, "sizes": {"web": 0, "code": 1, "math": 1}},
            "source 'web' is empty",
        ),
        ({"global_batch_size": 8, "sizes": {"web": 5}}, "sizes has no entry for source 'code'"),
        (
            {"global_batch_size": 8, "sizes": {"web": 5, "code": 1, "math": 1, "mth": 2}},
            "did you mean 'math'?",
        ),
        ({"global_batch_size": 8, "order": "shufle"}, "did you mean 'shuffle'?"),
        ({"global_batch_size": 8, "seed": -1}, "seed must be >= 0"),
        ({"global_batch_size": 8, "seed": 2**64}, "seed must be < 2**64"),
        ({"global_batch_size": True}, "global_batch_size must be an integer, got True"),
    ],
)
def test_bad_plans_are_named(kwargs, message):
    with pytest.raises((ValueError, TypeError)) as err:
        Plan(GOLDEN_MIX, **kwargs)
    assert message in str(err.value)


def test_epochs_need_sizes():
    with pytest.raises(ValueError, match="epochs need source sizes"):
        Plan(GOLDEN_MIX, global_batch_size=8).epochs(3)


def test_a_plan_is_an_immutable_hashable_value():
    plan = Plan(GOLDEN_MIX, global_batch_size=8, seed=7, sizes={"web": 9, "code": 9, "math": 9})
    with pytest.raises(AttributeError, match="immutable"):
        plan.seed = 3
    same = Plan(GOLDEN_MIX, global_batch_size=8, seed=7, sizes={"web": 9, "code": 9, "math": 9})
    assert plan == same and hash(plan) == hash(same) and len({plan, same}) == 1
    assert plan != Plan(
        GOLDEN_MIX, global_batch_size=8, seed=8, sizes=dict.fromkeys(GOLDEN_MIX.sources, 9)
    )


def test_a_warm_plan_pickles_small_and_equal():
    names = [f"s{i}" for i in range(8)]
    mix = Mixture(
        weights=dict.fromkeys(names, 1.0),
        phases=[Phase(start_step=0, end_step=100_000, weights={"s0": 1})],
    )
    plan = Plan(mix, global_batch_size=1024, sizes=dict.fromkeys(names, 10**6))
    plan.batches(50_000, 64)  # warm: the replay's caches stay behind when pickled
    data = pickle.dumps(plan)
    assert len(data) < 4096, len(data)
    back = pickle.loads(data)
    assert back == plan and np.array_equal(
        indexed(back, back.batch(50_001)).indices, indexed(plan, plan.batch(50_001)).indices
    )


def test_threads_sharing_a_plan_get_the_serial_stream():
    mix = Mixture(
        weights={"a": 1, "b": 2, "c": 3, "d": 4},
        phases=[Phase(start_step=10, end_step=5000, weights={"a": 4, "d": 1})],
    )
    plan = Plan(mix, global_batch_size=64, sizes=dict.fromkeys("abcd", 999))
    starts = [0, 3000, 17, 4999, 1200, 2500, 40, 4100]
    serial = [indexed(plan, plan.batches(s, 30)).indices for s in starts]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(lambda s: indexed(plan, plan.batches(s, 30)).indices, starts * 3))
    for i, got in enumerate(threaded):
        assert np.array_equal(got, serial[i % len(starts)])


@pytest.mark.parametrize("mode", ["exact", "random"])
def test_an_empty_or_negative_step_range_is_refused(mode):
    plan = Plan(GOLDEN_MIX, global_batch_size=8, mode=mode)
    for num_steps in (0, -2):
        with pytest.raises(ValueError, match=f"num_steps must be >= 1, got {num_steps}"):
            plan.batches(0, num_steps)


def test_a_walk_stands_at_an_explicit_point():
    mix = Mixture(weights={"a": 1, "b": 2, "c": 3},
                  phases=[Phase(start_step=5, end_step=60, weights={"a": 6})])  # fmt: skip
    plan = Plan(mix, global_batch_size=16)
    at = plan.point(40)
    assert at.step == 40 and at.deficits is None
    assert np.array_equal(at.counts, plan.consumed(40))
    fresh = Plan(mix, global_batch_size=16)
    for start in (40, 0):  # from a point, from counts alone, or looked up: the same batches
        given = fresh.point(start)
        want = fresh.batches(start, 7)
        for got in (plan.batches(start, 7, given), plan.batches(start, 7, given.counts)):
            assert np.array_equal(got.sources, want.sources)
            assert np.array_equal(got.draws, want.draws)
    with pytest.raises(ValueError, match="the point given stands at step 40, not at 41"):
        plan.batches(41, 1, at)


@pytest.mark.parametrize(
    ("mode", "extra"),
    [("exact", {"sizes": {"a": 9, "b": 9}}), ("random", {}), ("tokens", {"lengths": "L"}),
     ("online", {"sizes": {"a": 9, "b": 9}}), ("online tokens", {"lengths": "L"})],
)  # fmt: skip
def test_one_plan_class_and_one_mode_vocabulary(mode, extra):
    from annealmix import MODES
    from annealmix.online import OnlinePlan, online
    from annealmix.tokens import TokenPlan

    lengths = {"a": np.array([3, 1, 4]), "b": np.array([1, 5])}
    extra = {k: lengths if v == "L" else v for k, v in extra.items()}
    mix = Mixture(weights={"a": 1, "b": 1})
    plan = Plan(mix, global_batch_size=4, mode=mode, **extra)
    assert type(plan) is Plan and mode in MODES
    assert f"mode={mode!r}" in repr(plan) and plan.spec()["mode"] == mode
    assert plan.walks == (mode != "exact" and mode != "random")
    assert plan.online == mode.startswith("online")
    if mode == "tokens":
        assert TokenPlan(mix, global_batch_size=4, lengths=lengths) == plan
    if mode.startswith("online"):
        base = Plan(mix, global_batch_size=4, **({"mode": "tokens"} if "lengths" in extra else {}),
                    **extra)  # fmt: skip
        assert online(base) == plan
        assert OnlinePlan(mix, global_batch_size=4, **extra) == plan
    with pytest.raises(ValueError, match="unknown mode 'cosine'"):
        Plan(mix, global_batch_size=4, mode="cosine")


def test_a_plan_pickles_as_its_arguments_whatever_it_computed():
    # docs/concepts.md: the plan there pickles in 634 bytes, before and after use.
    mix = Mixture(weights={"web": 0.7, "code": 0.2, "math": 0.1},
                  phases=[Phase(start_step=80_000, end_step=99_999, schedule="cosine",
                                weights={"web": 0.3, "code": 0.35, "math": 0.35})])  # fmt: skip
    plan = Plan(mix, global_batch_size=1024, seed=0,
                sizes={"web": 50_000_000, "code": 8_000_000, "math": 1_000_000})  # fmt: skip
    fresh = len(pickle.dumps(plan))
    plan.batch(90_000), plan.consumed(100_000)
    assert len(pickle.dumps(plan)) == fresh == 634
    assert pickle.loads(pickle.dumps(plan)) == plan
