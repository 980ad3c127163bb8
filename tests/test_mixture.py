import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_schedules import schedules

from annealmix import Constant, Cosine, Linear, Mixture, Phase, PiecewiseLinear, Step


@st.composite
def mixtures(draw, max_sources=8, max_steps=400):
    n = draw(st.integers(2, max_sources))
    names = [f"s{i}" for i in range(n)]

    def vector():
        w = draw(st.lists(st.floats(0, 10), min_size=n, max_size=n))
        if sum(w) == 0:
            w[draw(st.integers(0, n - 1))] = 1.0
        return dict(zip(names, w))

    cuts = sorted(draw(st.lists(st.integers(0, max_steps), min_size=0, max_size=6)))
    phases = []
    for a, b in zip(cuts[::2], cuts[1::2]):
        if b > a and (not phases or a >= phases[-1].end_step):
            phases.append(
                Phase(start_step=a, end_step=b, weights=vector(), schedule=draw(schedules()))
            )
    return Mixture(weights=vector(), phases=phases)


@settings(max_examples=60, deadline=None)
@given(mixtures())
def test_weights_lie_on_the_simplex(mix):
    w = mix.weights_at(np.arange(450))
    assert (w >= 0).all()
    assert np.allclose(w.sum(axis=1), 1.0)


@settings(max_examples=60, deadline=None)
@given(mixtures())
def test_smoothness_matches_brute_force(mix):
    w = mix.weights_at(np.arange(450))
    brute = 0.5 * np.abs(np.diff(w, axis=0)).sum(axis=1).max()
    assert mix.smoothness() == pytest.approx(brute, abs=1e-12)


def test_one_phase_smoothness_is_gamma_step_times_tv():
    start, end = {"x": 0.9, "y": 0.1}, {"x": 0.2, "y": 0.8}
    mix = Mixture(
        weights=start, phases=[Phase(start_step=0, end_step=99, weights=end, schedule=Cosine())]
    )
    gamma = Cosine()(np.arange(100) / 99)
    assert mix.smoothness() == pytest.approx(np.abs(np.diff(gamma)).max() * 0.7, rel=1e-12)


def test_phases_hold_and_chain():
    mix = Mixture(
        weights={"a": 1, "b": 0},
        phases=[
            Phase(start_step=10, end_step=20, weights={"b": 1}, schedule=Linear()),
            Phase(start_step=30, end_step=31, weights={"a": 1}, schedule=Step(at=1.0)),
        ],
    )
    w = mix.weights_at(np.array([0, 10, 15, 20, 25, 30, 31, 10**9]))
    assert w[:, 0].tolist() == pytest.approx([1, 1, 0.5, 0, 0, 0, 1, 1])


def test_weights_are_relative():
    assert Mixture(weights={"a": 3, "b": 1}).weights_at(0).tolist() == [0.75, 0.25]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"weights": {"a": -0.2, "b": 1}},
            "initial weight for source 'a' must be finite and >= 0, got -0.2",
        ),
        ({"weights": {"a": float("nan")}}, "must be finite and >= 0, got nan"),
        ({"weights": {"a": 0, "b": 0}}, "initial weights are all zero"),
        ({"weights": {}}, "at least one source"),
        ({"weights": {"a": "x"}}, "must be a number, got 'x'"),
        (
            {"weights": {"a": 1}, "phases": [Phase(start_step=0, end_step=5, weights={"aa": 1})]},
            "unknown source in phases[0]: 'aa' (did you mean 'a'?)",
        ),
        (
            {
                "weights": {"a": 1},
                "phases": [
                    Phase(start_step=0, end_step=5, weights={"a": 1}),
                    Phase(start_step=3, end_step=9, weights={"a": 1}),
                ],
            },
            "phases[1] starts at step 3, before phases[0] ends at step 5",
        ),
    ],
)
def test_bad_mixtures_are_named(kwargs, message):
    with pytest.raises((ValueError, TypeError)) as err:
        Mixture(**kwargs)
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"start_step": 5, "end_step": 5}, "end_step must be greater than start_step, got 5 -> 5"),
        ({"start_step": -1, "end_step": 5}, "phase start_step must be >= 0, got -1"),
        ({"start_step": 0.5, "end_step": 5}, "phase start_step must be a whole number, got 0.5"),
        ({"start_step": 0, "end_step": 5, "schedule": "cosin"}, "did you mean 'cosine'?"),
    ],
)
def test_bad_phases_are_named(kwargs, message):
    with pytest.raises((ValueError, TypeError)) as err:
        Phase(weights={"a": 1}, **kwargs)
    assert message in str(err.value)


def test_negative_step_is_refused():
    with pytest.raises(ValueError, match="step must be an integer >= 0"):
        Mixture(weights={"a": 1}).weights_at(-1)


def test_dict_round_trip():
    mix = Mixture(
        weights={"a": 1, "b": 2},
        phases=[Phase(start_step=1, end_step=9, weights={"a": 1}, schedule="sigmoid")],
    )
    assert Mixture.from_dict(mix.to_dict()) == mix


def test_smoothness_of_a_huge_phase_is_found_without_a_walk():
    step = Mixture(
        weights={"a": 1, "b": 0},
        phases=[Phase(start_step=5, end_step=10**12, weights={"b": 1}, schedule=Step(at=0.3))],
    )
    assert step.smoothness() == pytest.approx(1.0)
    ramp = Mixture(
        weights={"a": 1, "b": 0},
        phases=[Phase(start_step=0, end_step=10**12, weights={"b": 1}, schedule=Linear())],
    )
    assert ramp.smoothness() == pytest.approx(1e-12, rel=1e-3)


def test_segments_cover_every_step_in_order():
    mix = Mixture(
        weights={"a": 1, "b": 1},
        phases=[
            Phase(start_step=10, end_step=20, weights={"a": 1}),
            Phase(start_step=20, end_step=30, weights={"b": 1}),
            Phase(start_step=40, end_step=50, weights={"a": 1, "b": 3}),
        ],
    )
    segs = mix.segments()
    assert [(s.start, s.stop, s.phase) for s in segs] == [
        (0, 10, None), (10, 20, 0), (20, 31, 1), (31, 40, None), (40, 51, 2), (51, None, None),
    ]  # fmt: skip
    for seg in segs:
        if seg.weights is not None:
            assert np.allclose(mix.weights_at(seg.start), seg.weights)


def test_booleans_and_strings_are_not_weights():
    with pytest.raises(TypeError, match="weight for source 'a' must be a number, got True"):
        Mixture(weights={"a": True, "b": 1})
    with pytest.raises(TypeError, match="weight for source 'a' must be a number, got '0.5'"):
        Mixture(weights={"a": "0.5", "b": 1})
    with pytest.raises(TypeError, match="weight for source 'b' must be a number, got '1'"):
        Mixture(weights={"a": 1, "b": 1},
                phases=[Phase(start_step=0, end_step=5, weights={"b": "1"})])  # fmt: skip


def test_smoothness_of_a_phase_that_hands_its_last_step_to_the_next():
    # Found by the property test: phase 0 reaches s1 only at step 1, where phase 1
    # takes over at once, so the weights never leave s0 (the landed code said 1.0).
    mix = Mixture(
        weights={"s0": 1.0, "s1": 0.0},
        phases=[
            Phase(start_step=0, end_step=1, weights={"s1": 1},
                  schedule=PiecewiseLinear(knots=((0.0, 0.0), (0.5, 0.0), (1.0, 1.0)))),
            Phase(start_step=1, end_step=2, weights={"s0": 1}, schedule=Constant(value=1.0)),
        ],
    )  # fmt: skip
    w = mix.weights_at(np.arange(5))
    assert mix.smoothness() == 0.5 * np.abs(np.diff(w, axis=0)).sum(axis=1).max() == 0.0
