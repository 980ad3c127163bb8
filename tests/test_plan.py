import json
import subprocess
import sys

import numpy as np
import pytest
from helpers import assert_resume_equivalent
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_mixture import mixtures

from annealmix import Mixture, Phase, Plan


def _realized(plan: Plan, num_steps: int) -> np.ndarray:
    """Cumulative counts per step, from the batches themselves."""
    batch = plan.batches(0, num_steps)
    n = plan.mixture.num_sources
    per_step = np.stack([np.bincount(row, minlength=n) for row in batch.sources])
    assert (per_step.sum(axis=1) == plan.global_batch_size).all()
    return np.cumsum(per_step, axis=0)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    mixtures(max_sources=64, max_steps=120),
    st.one_of(st.integers(1, 16), st.integers(17, 4096)),
)
def test_exact_counts_stay_within_one_sample_of_the_target(mix, batch):
    plan = Plan(mix, global_batch_size=batch)
    steps = 130 if batch <= 256 else 20
    realized = _realized(plan, steps)
    targets = np.stack([plan.targets(t) for t in range(steps)])
    bound = 0.5 if mix.num_sources == 2 else 1.0
    assert np.abs(realized - targets).max() <= bound + 1e-9
    if mix.num_sources > 2:
        assert np.abs(realized - targets).max() < 1.0


@settings(max_examples=40, deadline=None)
@given(mixtures(max_sources=12, max_steps=300), st.integers(1, 64), st.integers(0, 299))
def test_random_access_equals_the_sequential_walk(mix, batch, step):
    plan = Plan(mix, global_batch_size=batch)
    walk = plan.iterate()
    if step:
        walk.take(step)
    fresh = Plan(mix, global_batch_size=batch)
    assert np.array_equal(walk.take(1).sources, fresh.batch(step).sources)
    assert np.array_equal(fresh.consumed(step + 1), walk.consumed)


def test_targets_follow_the_float_weights():
    mix = Mixture(
        weights={"a": 1, "b": 2, "c": 3},
        phases=[Phase(start_step=5, end_step=50, weights={"a": 5}, schedule="cosine")],
    )
    plan = Plan(mix, global_batch_size=7)
    float_target = 7 * mix.weights_at(np.arange(80)).sum(axis=0)
    assert np.allclose(plan.targets(79), float_target, atol=1e-6)


@pytest.mark.parametrize("n", [2, 3, 8, 64])
def test_tiny_weights_are_not_starved(n):
    weights = {f"s{i}": 1.0 for i in range(n - 1)} | {"rare": 1e-6}
    plan = Plan(Mixture(weights=weights), global_batch_size=64)
    share = 1e-6 / (n - 1 + 1e-6)
    steps = int(2.05 / (share * 64)) + 1  # the rare source's target passes 2 samples
    consumed = plan.consumed(steps)
    assert consumed[-1] >= 2 and abs(consumed[-1] - steps * 64 * share) < 1


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
    walk = plan.iterate()
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
    batch = plan.batches(0, 20)
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
    # Pinned on purpose: a change here changes every user's data stream.
    plan = Plan(
        GOLDEN_MIX, global_batch_size=8, seed=7, sizes={"web": 1000, "code": 100, "math": 10}
    )
    batch = plan.batch(4)
    assert batch.sources.tolist() == [[0, 2, 0, 2, 1, 0, 2, 0]]
    assert batch.indices.tolist() == [[754, 0, 580, 6, 23, 887, 4, 655]]


def test_golden_sequence_random():
    plan = Plan(
        GOLDEN_MIX,
        global_batch_size=8,
        seed=7,
        mode="random",
        sizes={"web": 1000, "code": 100, "math": 10},
        order="replacement",
    )
    batch = plan.batch(4)
    assert batch.sources.tolist() == [[2, 1, 2, 0, 0, 2, 1, 1]]
    assert batch.indices.tolist() == [[5, 44, 4, 355, 146, 8, 63, 56]]


def test_two_processes_produce_the_same_stream():
    code = (
        "import json, annealmix as am; from test_plan import GOLDEN_MIX;"
        "p = am.Plan(GOLDEN_MIX, global_batch_size=64, seed=11,"
        " sizes={'web': 10**9, 'code': 10**6, 'math': 333});"
        "b = p.batches(0, 50); print(json.dumps([b.sources.tolist(), b.indices.tolist()]))"
    )
    env_path = str(__import__("pathlib").Path(__file__).parent)
    runs = [
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=env_path
        ).stdout
        for _ in range(2)
    ]
    assert runs[0] == runs[1] and json.loads(runs[0])


@pytest.mark.parametrize("mode", ["exact", "random"])
@pytest.mark.parametrize("n", [2, 5])
def test_iterator_resumes_exactly(mode, n):
    mix = Mixture(
        weights={f"s{i}": i + 1 for i in range(n)},
        phases=[Phase(start_step=3, end_step=30, weights={"s0": 1})],
    )
    sizes = {f"s{i}": 13 * (i + 1) for i in range(n)}
    assert_resume_equivalent(
        lambda: Plan(mix, global_batch_size=6, mode=mode, sizes=sizes).iterate(),
        lambda it: next(it),
        total=40,
        seed=n,
    )


def test_state_is_small_json():
    it = Plan(GOLDEN_MIX, global_batch_size=8).iterate()
    it.take(5)
    state = json.loads(json.dumps(it.state_dict()))
    assert state["step"] == 5 and sum(state["consumed"].values()) == 40
    assert set(state) == {"version", "step", "consumed", "fingerprint", "plan"}


def test_state_from_another_plan_is_refused():
    state = Plan(GOLDEN_MIX, global_batch_size=8).iterate().state_dict()
    other = Plan(GOLDEN_MIX, global_batch_size=16).iterate()
    with pytest.raises(ValueError, match="different plan: global_batch_size changed"):
        other.load_state_dict(state)
    with pytest.raises(ValueError, match="lacks"):
        other.load_state_dict({"step": 3})
    with pytest.raises(ValueError, match="state version 99 is not 1"):
        other.load_state_dict({**state, "version": 99})


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
    ],
)
def test_bad_plans_are_named(kwargs, message):
    with pytest.raises((ValueError, TypeError)) as err:
        Plan(GOLDEN_MIX, **kwargs)
    assert message in str(err.value)


def test_epochs_need_sizes():
    with pytest.raises(ValueError, match="epochs need source sizes"):
        Plan(GOLDEN_MIX, global_batch_size=8).epochs(3)
