"""Controllers: pure updates (golden values), guard rails, refusals that keep the state."""

import copy
import json
import math

import numpy as np
import pytest

from annealmix.controllers import EXP3, Controller, DoReMi, LossProportional

NAMES = ("web", "code", "math")
WINDOWS = [  # mean loss per source over three update windows ("math" absent in the second)
    {"web": 3.0, "code": 2.0, "math": 4.0},
    {"web": 2.5, "code": 2.2},
    {"web": 2.4, "code": 1.9, "math": 3.1},
]
START = {"web": 0.6, "code": 0.3, "math": 0.1}


def run(controller, windows=WINDOWS, start=START):
    weights, out = dict(start), []
    for losses in windows:
        weights = controller.update(losses, weights)
        out.append([round(weights[n], 6) for n in NAMES])
    return out


def test_loss_proportional_golden_values():
    got = run(LossProportional(NAMES))
    assert got[0] == [round(3 / 9, 6), round(2 / 9, 6), round(4 / 9, 6)]
    # "math" drew nothing in the second window: its last loss (4.0) stands
    assert got[1] == [round(2.5 / 8.7, 6), round(2.2 / 8.7, 6), round(4.0 / 8.7, 6)]
    assert got == [[0.333333, 0.222222, 0.444444], [0.287356, 0.252874, 0.45977],
                   [0.324324, 0.256757, 0.418919]]  # fmt: skip
    flat = run(LossProportional(NAMES, temperature=1e6))
    assert np.allclose(flat[-1], 1 / 3, atol=1e-5)  # hot: towards uniform


def test_doremi_golden_values_follow_its_update_rule():
    reference = {"web": 2.5, "code": 2.0, "math": 3.0}
    got = run(DoReMi(NAMES, reference=reference, step_size=0.5, smoothing=0.01))
    log_a = np.log([0.6, 0.3, 0.1])
    for losses, row in zip(WINDOWS, got):  # the rule, written out
        seen = np.array([losses.get(n, np.nan) for n in NAMES])
        log_a = log_a + 0.5 * np.where(np.isnan(seen), 0, np.maximum(seen - [2.5, 2.0, 3.0], 0))
        a = np.exp(log_a) / np.exp(log_a).sum()
        assert np.allclose(row, 0.99 * a + 0.01 / 3, atol=1e-6)
    assert got == [[0.620769, 0.243763, 0.135467], [0.605392, 0.262432, 0.132176],
                   [0.601401, 0.260714, 0.137885]]  # fmt: skip


def test_exp3_golden_values_follow_online_data_mixing():
    got = run(EXP3(NAMES), WINDOWS * 2)
    e1 = min(1 / 3, math.sqrt(math.log(3) / 3))
    assert np.allclose(got[0], 1 / 3)  # first: softmax of nothing learned yet, rate 1/3
    rewards = np.array([3.0 / 0.6, 2.0 / 0.3, 4.0 / 0.1])
    e2 = min(1 / 3, math.sqrt(math.log(3) / 6))
    seen2 = np.array([2.5, 2.2, np.nan])
    rewards = rewards + np.where(np.isnan(seen2), 0, np.nan_to_num(seen2) / np.array(got[0]))
    soft = np.exp(e1 * rewards - (e1 * rewards).max())
    assert np.allclose(got[1], (1 - 3 * e2) * soft / soft.sum() + e2, atol=1e-6)
    assert got[1] == got[2] == [0.333333] * 3  # exploration is whole while sqrt(ln3/3t) >= 1/3
    assert got[3:] == [[0.302576, 0.302575, 0.39485], [0.27075, 0.270659, 0.458592],
                       [0.24768, 0.247157, 0.505163]]  # fmt: skip


@pytest.mark.parametrize("make", [
    lambda: LossProportional(NAMES, temperature=0.7),
    lambda: DoReMi(NAMES, reference={"web": 2.0, "code": 2.0, "math": 2.0}),
    lambda: EXP3(NAMES),
])  # fmt: skip
def test_an_update_is_a_pure_function_of_its_inputs_and_state(make):
    a = make()
    run(a, WINDOWS[:2])
    saved = json.loads(json.dumps(a.state_dict()))
    b = make()
    b.load_state_dict(saved)
    c = copy.deepcopy(a)
    w = dict(START)
    assert a.update(WINDOWS[2], w) == b.update(WINDOWS[2], w) == c.update(WINDOWS[2], w)


def test_guard_rails():
    c = LossProportional(NAMES, floor=0.05, max_change=0.1, max_epochs={"math": 2.0})
    w = c.update({"web": 1.0, "code": 1.0, "math": 100.0}, START)
    moved = 0.5 * sum(abs(w[n] - START[n]) for n in NAMES)
    assert moved <= 0.1 + 1e-9 and min(w.values()) >= 0.05 - 1e-12
    capped = c.update({"web": 1.0, "code": 1.0, "math": 100.0}, w, epochs={"math": 2.5})
    assert capped["math"] == 0.0 and math.isclose(sum(capped.values()), 1.0)
    with pytest.raises(ValueError, match="every source has reached its max_epochs"):
        LossProportional(("math",), max_epochs={"math": 1}).update({"math": 1}, [1.0],
                                                                    epochs={"math": 1})  # fmt: skip


class Broken(Controller):
    def _propose(self, seen, current):
        return np.array([np.nan, 1.0, 1.0])


def test_a_bad_proposal_or_input_is_refused_and_the_state_kept():
    c = DoReMi(NAMES, reference=START)
    run(c, WINDOWS[:1])
    before = c.state_dict()
    with pytest.raises(ValueError, match="losses must be >= 0"):
        c.update({"web": -1.0}, START)
    with pytest.raises(ValueError, match="'paper'"):
        c.update({"paper": 1.0}, START)
    with pytest.raises(ValueError, match="weights must be on the simplex"):
        c.update(WINDOWS[0], {"web": 0.5, "code": 0.5, "math": 0.5})
    with pytest.raises(ValueError, match="weights has no weight for"):
        c.update(WINDOWS[0], {"web": 1.0})
    assert c.state_dict() == before
    broken = Broken(NAMES)
    with pytest.raises(ValueError, match="proposed .*the previous weights stay in force"):
        broken.update(WINDOWS[0], START)
    assert broken.updates == 0 and np.isnan(broken.last_loss).all()


def test_bad_settings():
    with pytest.raises(ValueError, match="floor must be in"):
        LossProportional(NAMES, floor=0.5)
    with pytest.raises(ValueError, match="max_change must be in"):
        LossProportional(NAMES, max_change=0)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        LossProportional(NAMES, temperature=0)
    with pytest.raises(ValueError, match="distinct names"):
        EXP3(("a", "a"))
    with pytest.raises(ValueError, match="reference has no loss for"):
        DoReMi(NAMES, reference={"web": 1.0})


def test_source_losses_are_exact_in_any_order_and_resume_mid_window():
    torch = pytest.importorskip("torch")
    from annealmix.torch import SourceLosses

    rng = np.random.default_rng(0)
    loss = torch.tensor(rng.random((64, 5)) * 7)
    sources = torch.tensor(rng.integers(0, 2, 64))
    whole = SourceLosses(("x", "y", "z"), ema=0.5)
    whole.add(loss, sources)
    parts = SourceLosses(("x", "y", "z"), ema=0.5)
    for chunk in reversed(range(0, 64, 8)):  # other micro-batches, another order
        parts.add(loss[chunk : chunk + 8], sources[chunk : chunk + 8])
    saved = parts.state_dict()
    assert whole.reduce() == parts.reduce()  # bit for bit; "z" drew nothing: absent
    assert set(whole.last) == {"x", "y"}
    assert whole.last["x"] == pytest.approx(loss[sources == 0].mean(dim=1).mean().item())
    again = SourceLosses(("x", "y", "z"), ema=0.5)
    again.load_state_dict(json.loads(json.dumps(saved)))
    assert again.reduce() == whole.last
    whole.add(loss[:4] * 0 + 1.0, torch.zeros(4, dtype=torch.long))
    whole.reduce()
    assert whole.metrics()["mix/loss_ema/x"] == pytest.approx(0.5 * 1.0 + 0.5 * parts.last["x"])
    with pytest.raises(ValueError, match="not finite"):
        whole.add(torch.tensor([float("nan")]), torch.tensor([0]))


def test_inputs_that_would_mislead_a_controller_are_refused_by_name():
    doremi = DoReMi(NAMES, reference=dict.fromkeys(NAMES, 2.0))
    doremi.update(WINDOWS[0], START)
    before = json.dumps(doremi.state_dict())
    with pytest.raises(ValueError, match=r"losses of \['code'\] are NaN: the model diverged"):
        doremi.update({"web": 2.0, "code": math.nan}, START)
    with pytest.raises(ValueError, match=r"losses of \['web'\] are NaN"):
        doremi.update([math.nan, 2.0, 2.0], START)
    with pytest.raises(ValueError, match="the loss for source 'code' must be a number, got 'x'"):
        doremi.update({"web": 2.0, "code": "x"}, START)
    with pytest.raises(ValueError, match="the weight for source 'web' must be a number, got '0.6'"):
        doremi.update(WINDOWS[1], {**START, "web": "0.6"})
    assert json.dumps(doremi.state_dict()) == before  # refused: nothing moved
    doremi.update(WINDOWS[1], START)  # a source left out of a mapping drew no sample: fine
    with pytest.raises(ValueError, match="step_size must be > 0, got -1"):
        DoReMi(NAMES, reference=dict.fromkeys(NAMES, 2.0), step_size=-1)
    with pytest.raises(ValueError, match=r"reference losses must be >= 0 .*'math': -0.5"):
        DoReMi(NAMES, reference={"web": 1.0, "code": 1.0, "math": -0.5})
    with pytest.raises(ValueError, match=r"controller state lacks \['last_loss'\]"):
        LossProportional(NAMES).load_state_dict({"updates": 3})
    with pytest.raises(TypeError, match="controller state must be the dict"):
        LossProportional(NAMES).load_state_dict([1, 2])
