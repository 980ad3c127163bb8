import pytest
from hypothesis import given
from hypothesis import strategies as st

from annealmix.weights import proportional, temperature, unimax

SIZES = {"en": 1000.0, "de": 100.0, "sw": 1.0}


def test_proportional_and_temperature():
    assert proportional(SIZES)["en"] == pytest.approx(1000 / 1101)
    assert temperature(SIZES, 1.0) == pytest.approx(proportional(SIZES))
    assert temperature(SIZES, 0.0) == pytest.approx({n: 1 / 3 for n in SIZES})
    t = temperature(SIZES, 0.5)
    assert t["en"] / t["de"] == pytest.approx((1000 / 100) ** 0.5)
    assert temperature({"a": 1e300, "b": 1e-300}, 0.7)["a"] == pytest.approx(1.0)


def test_unimax_spreads_uniformly_and_caps_epochs():
    w = unimax(SIZES, budget=300, max_epochs=4)
    # sw takes its cap of 4, then en and de share the rest equally: 148 each.
    assert w["sw"] == pytest.approx(4 / 300)
    assert w["en"] == pytest.approx(148 / 300) and w["de"] == pytest.approx(148 / 300)
    uniform = unimax(SIZES, budget=3, max_epochs=10)
    assert uniform == pytest.approx({n: 1 / 3 for n in SIZES})


@given(
    st.dictionaries(
        st.text("abc", min_size=1, max_size=3), st.floats(1, 1e6), min_size=1, max_size=8
    ),
    st.floats(0.01, 1.0),
    st.floats(0.1, 10),
)
def test_unimax_never_exceeds_the_cap_and_sums_to_one(sizes, fill, max_epochs):
    budget = fill * sum(sizes.values()) * max_epochs
    w = unimax(sizes, budget=budget, max_epochs=max_epochs)
    assert sum(w.values()) == pytest.approx(1.0)
    for name, share in w.items():
        assert share * budget <= sizes[name] * max_epochs * (1 + 1e-9)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: proportional({}), "sizes is empty"),
        (lambda: proportional({"a": -1}), "size of source 'a' must be > 0, got -1"),
        (lambda: temperature(SIZES, 1.5), r"alpha must lie in \[0, 1\]"),
        (lambda: unimax(SIZES, budget=10_000, max_epochs=2), "exceeds what max_epochs = 2 allows"),
        (lambda: unimax(SIZES, budget=0, max_epochs=2), "must be > 0"),
    ],
)
def test_bad_inputs_name_the_field(call, message):
    with pytest.raises(ValueError, match=message):
        call()
