import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from annealmix import SCHEDULES, Cosine, Linear, PiecewiseLinear, Sigmoid, Step, get_schedule
from annealmix.schedules import schedule_from_dict

unit = st.floats(0, 1)


def schedules():
    return st.one_of(
        st.builds(lambda v: get_schedule("constant", value=v), unit),
        st.builds(lambda a, b: Linear(start=a, end=b), unit, unit),
        st.builds(lambda a, b: Cosine(start=a, end=b), unit, unit),
        st.builds(lambda a, b, at: Step(start=a, end=b, at=at), unit, unit, unit),
        st.builds(
            lambda a, b, k, m: Sigmoid(start=a, end=b, steepness=k, midpoint=m),
            unit,
            unit,
            st.floats(0.1, 500),
            unit,
        ),
        st.builds(
            lambda gs, ps: PiecewiseLinear(knots=list(zip([0.0, *sorted(set(ps)), 1.0], gs))),
            st.lists(unit, min_size=12, max_size=12),
            st.lists(st.floats(0.01, 0.99), max_size=10),
        ),
    )


@given(schedules(), st.lists(unit, min_size=1, max_size=50))
def test_values_stay_in_the_unit_interval(schedule, ps):
    g = schedule(np.array(ps))
    assert g.shape == (len(ps),)
    assert ((g >= 0) & (g <= 1)).all()


@given(unit, unit)
def test_ramps_hit_their_endpoints_exactly(a, b):
    for cls in (Linear, Cosine, Sigmoid):
        s = cls(start=a, end=b)
        assert s(0.0) == a and s(1.0) == b


def test_post_formulas():
    p = np.linspace(0, 1, 101)
    assert np.allclose(Linear(start=0.1, end=0.9)(p), 0.1 + 0.8 * p, atol=1e-15)
    expected = 0.1 + 0.8 * (1 - np.cos(np.pi * p)) / 2
    assert np.abs(Cosine(start=0.1, end=0.9)(p) - expected).max() < 1e-15


def test_step_switches_at_its_point():
    s = Step(at=0.25)
    assert s(np.array([0.0, 0.2499, 0.25, 1.0])).tolist() == [0, 0, 1, 1]


def test_sigmoid_is_monotone_and_centred():
    g = Sigmoid(steepness=20, midpoint=0.3)(np.linspace(0, 1, 1001))
    assert (np.diff(g) >= 0).all()
    assert abs(Sigmoid(steepness=20, midpoint=0.5)(0.5) - 0.5) < 1e-12


def test_scalar_in_scalar_out():
    assert isinstance(Cosine()(0.5), float)
    assert math.isclose(Cosine()(0.5), 0.5)


def test_schedules_compare_by_value():
    assert Cosine(start=0.1) == get_schedule("cosine", start=0.1)
    assert Cosine() != Linear()


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_dict_round_trip(name):
    s = get_schedule(name)
    assert schedule_from_dict(s.to_dict()) == s
    assert schedule_from_dict(name) == s


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: get_schedule("cosin"), "unknown schedule 'cosin' (did you mean 'cosine'?)"),
        (lambda: get_schedule("linear", strat=0.1), "did you mean 'start'?"),
        (lambda: Linear(start=1.5), "linear start must lie in [0, 1], got 1.5"),
        (lambda: Cosine(end=float("nan")), "cosine end must be finite"),
        (lambda: Step(at=-0.1), "step at must lie in [0, 1]"),
        (lambda: Sigmoid(steepness=0), "sigmoid steepness must lie in (0, 500]"),
        (lambda: PiecewiseLinear(knots=[(0, 0)]), "at least 2 points"),
        (lambda: PiecewiseLinear(knots=[(0, 0), (0.5, 1), (0.4, 1), (1, 1)]), "rise strictly"),
        (lambda: PiecewiseLinear(knots=[(0, 0), (1, 2)]), "knots[1] gamma must lie in [0, 1]"),
        (lambda: schedule_from_dict({"start": 0}), "schedule needs a 'name'"),
        (lambda: Linear()(1.5), "progress must lie in [0, 1], got 1.5"),
    ],
)
def test_bad_input_is_named(build, message):
    with pytest.raises((ValueError, TypeError)) as err:
        build()
    assert message in str(err.value)


def test_integers_are_fine():
    assert Linear(start=0, end=1) == Linear(start=0.0, end=1.0)


def test_cosine_stays_in_the_unit_interval_next_to_its_ends():
    # cos(pi p) rounds above 1 for p of a few ulps; the curve must not dip below 0.
    p = np.array([0.0, 2.220446049250313e-16, 1e-12, 1 - 1e-16, 1.0])
    gamma = Cosine(start=0.0, end=1.0)(p)
    assert ((gamma >= 0) & (gamma <= 1)).all()
