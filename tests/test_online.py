"""Online plans: weights committed during a run, replayed exactly from the log."""

import json
import pickle

import numpy as np
import pytest
from helpers import assert_resume_equivalent, resumed_indices
from hypothesis import given, settings
from hypothesis import strategies as st

from annealmix import Mixture, Phase, Plan, Shard, Stream
from annealmix.online import OnlinePlan

SIZES = {"a": 97, "b": 41, "c": 13}


def plan(batch=12, mixture=None):
    mix = mixture or Mixture(weights={"a": 0.5, "b": 0.3, "c": 0.2})
    return OnlinePlan(mix, global_batch_size=batch, sizes=SIZES, seed=7)


def walked(p, steps, commits=()):
    """The stream of ``p`` over ``steps``, committing ``(at_step, step, weights)`` as it goes."""
    s = Stream(p, num_steps=steps)
    rows, pending = [], list(commits)
    for mb in s:
        rows.append((mb.sources.copy(), mb.indices.copy()))
        while pending and pending[0][0] == s.step:
            _, step, weights = pending.pop(0)
            s.commit(step, weights)
    return rows, s


def test_a_committed_update_changes_no_earlier_step_and_the_log_replays_the_run():
    commits = [(10, 12, {"a": 0.1, "b": 0.1, "c": 0.8}), (30, 33, [0.6, 0.4, 0.0])]
    rows, s = walked(plan(), 50, commits)
    before, _ = walked(plan(), 50)
    assert all(np.array_equal(x[0], y[0]) for x, y in zip(rows[:12], before[:12]))
    assert not np.array_equal(rows[12][0], before[12][0])
    assert s.log.to_list() == [[12, [0.1, 0.1, 0.8]], [33, [0.6, 0.4, 0.0]]]
    replay = Stream(plan(), num_steps=50, log=s.log.to_list()).take(50)
    assert np.array_equal(replay.sources, np.stack([r[0] for r in rows]))
    assert np.array_equal(replay.indices, np.stack([r[1] for r in rows]))
    # from the commit on, the realized weights are the committed ones
    assert s.plan.weights_at(np.array([11, 12, 40]), log=s.log).round(6).tolist() == [
        [0.5, 0.3, 0.2], [0.1, 0.1, 0.8], [0.6, 0.4, 0.0]]  # fmt: skip
    assert np.bincount(replay.sources[40], minlength=3).tolist() in ([7, 5, 0], [8, 4, 0])


@settings(max_examples=50, deadline=None)
@given(
    data=st.data(),
    n=st.integers(2, 5),
    batch=st.integers(1, 20),
    steps=st.integers(2, 60),
)
def test_counts_stay_within_the_bound_of_the_realized_weights(data, n, batch, steps):
    names = [f"s{k}" for k in range(n)]
    simplex = st.lists(st.integers(0, 9), min_size=n, max_size=n).filter(any)
    start = data.draw(simplex)
    at = (
        sorted(set(data.draw(st.lists(st.integers(1, steps - 1), max_size=5)))) if steps > 1 else []
    )
    # an update gives weight only where the schedule does (others are refused)
    held = np.array(start) == 0
    entries = (np.where(held, 0, data.draw(simplex)) for _ in at)
    log = [(s, w.tolist() if w.any() else start) for s, w in zip(at, entries)]
    p = OnlinePlan(Mixture(weights=dict(zip(names, start))), global_batch_size=batch,
                   sizes=dict.fromkeys(names, 50))  # fmt: skip
    counts = np.cumsum(p.counts(0, steps, log=log), axis=0)
    target = batch * np.cumsum(p.weights_at(np.arange(steps), log=log), axis=0)
    gap = counts - target
    assert gap.max() < 1 + 1e-6  # ahead by less than one sample
    assert (-gap).max() < (1 if n == 2 else n - 1) + 1e-6  # behind: the proven bound


def test_a_schedule_carries_the_learned_tilt():
    anneal = Phase(start_step=0, end_step=99, weights={"a": 0.2, "b": 0.4, "c": 0.4})
    mix = Mixture(weights={"a": 0.8, "b": 0.1, "c": 0.1}, phases=[anneal])
    p = plan(mixture=mix)
    w = p.weights_at(np.array([49, 50, 99]), log=[(50, {"a": 0.25, "b": 0.25, "c": 0.5})])
    assert w[1].round(9).tolist() == [0.25, 0.25, 0.5]
    base = mix.weights_at(99)
    tilted = base * (w[1] / mix.weights_at(50))
    assert np.allclose(w[2], tilted / tilted.sum())  # c keeps twice b's share along the anneal
    assert w[0].tolist() == mix.weights_at(49).tolist()


def test_states_carry_the_log_and_resume_on_another_world_size():
    p = plan()
    first = Stream(p, Shard(global_batch_size=12, world_size=2, rank=0))
    for _ in range(8):
        next(first)
    first.commit(9, {"a": 0.2, "b": 0.2, "c": 0.6})
    for _ in range(6):
        next(first)
    state = json.loads(json.dumps(first.state_dict()))
    assert state["log"] == [[9, [0.2, 0.2, 0.6]]] and sum(state["deficits"]) == 0
    whole = Stream(first.plan, num_steps=40, log=first.log).take(40)
    for world in (1, 3):
        assert np.array_equal(resumed_indices(plan(), state, world, 14, 40), whole.indices[14:])


def test_resume_inside_a_step_after_updates():
    def make():
        s = Stream(plan(), Shard(global_batch_size=12, world_size=2, rank=1, micro_batches=2))
        s.commit(3, {"a": 0.0, "b": 0.5, "c": 0.5})
        return s

    assert_resume_equivalent(make, next, 60, seed=1)


def test_a_state_with_an_edited_log_or_the_wrong_plan_is_refused():
    s = Stream(plan())
    s.take(5)
    s.commit(6, [0.3, 0.3, 0.4])
    s.take(3)
    state = s.state_dict()
    edited = {**state, "log": [[6, [0.3, 0.4, 0.3]]]}
    with pytest.raises(ValueError, match="phases changed"):
        Stream(plan()).load_state_dict(edited)
    with pytest.raises(ValueError, match="resume it with an annealmix.online.OnlinePlan"):
        Stream(Plan(plan().mixture, global_batch_size=12, sizes=SIZES)).load_state_dict(state)
    with pytest.raises(ValueError, match="state log must be a list"):
        Stream(plan()).load_state_dict({**state, "log": "none"})
    updated = Stream(plan(), log=[(2, [1, 1, 1])])
    with pytest.raises(ValueError, match="has updates"):
        updated.load_state_dict({k: v for k, v in state.items() if k != "log"})


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ({"a": float("nan"), "b": 1, "c": 1}, "must be finite and >= 0"),
        ({"a": -0.1, "b": 1, "c": 1}, "must be finite and >= 0"),
        ({"a": 0, "b": 0, "c": 0}, "all zero"),
        ({"a": 1, "b": 1, "c": 1, "d": 1}, "'d'"),
        ({"a": 1, "b": 1}, r"no weight for \['c'\]"),
        ([1, 2], "must map each of"),
        ({"a": "x", "b": 1, "c": 1}, "the weight for source 'a' must be a number, got 'x'"),
    ],
)
def test_bad_weights_are_refused_and_the_previous_ones_kept(weights, message):
    s = Stream(plan())
    s.take(2)
    before = s.plan
    with pytest.raises(ValueError, match=message):
        s.commit(4, weights)
    assert s.plan is before and len(s.log) == 0


def test_a_source_the_schedule_holds_at_0_is_refused_weight_and_enters_as_scheduled():
    ramp = Phase(start_step=100, end_step=200, weights={"a": 0.5, "b": 0.3, "c": 0.2})
    p = plan(mixture=Mixture(weights={"a": 0.7, "b": 0.3, "c": 0.0}, phases=[ramp]))
    s = Stream(p)
    # Before algorithm 2, c = 0.6 became 0 without a word, and any commit before the
    # ramp kept c at 0 for the rest of the run.
    with pytest.raises(ValueError, match=r"\{'c': 0\.6\} at step 10: the schedule holds "
                       r"\['c'\] at 0 there.*give them weight 0"):  # fmt: skip
        s.commit(10, {"a": 0.2, "b": 0.2, "c": 0.6})
    assert len(s.log) == 0
    with pytest.raises(ValueError, match="holds"):  # a log handed in is checked as well
        p.counts(150, log=[(10, {"a": 0.2, "b": 0.2, "c": 0.6})])
    s.commit(10, {"a": 0.5, "b": 0.5, "c": 0.0})
    w = p.weights_at(np.array([10, 99, 200]), log=s.log)
    assert w[0].round(12).tolist() == w[1].round(12).tolist() == [0.5, 0.5, 0.0]
    tilt = np.array([0.5 / 0.7, 0.5 / 0.3, 1.0])  # c untilted: as the schedule raises it
    expected = np.array([0.5, 0.3, 0.2]) * tilt
    assert np.allclose(w[2], expected / expected.sum()) and w[2][2] > 0.15
    counts = p.counts(300, log=s.log)[0]
    assert counts[2] > 0


def test_the_loader_drops_with_a_warning_what_the_schedule_holds_at_0():
    from annealmix.controllers import LossProportional

    controller = LossProportional(["a", "b", "c"], floor=0.05)  # proposes for every source
    w = controller.update({"a": 2.0, "b": 3.0}, {"a": 0.7, "b": 0.3, "c": 0.0})
    assert w["c"] >= 0.05
    s = Stream(plan(mixture=Mixture(weights={"a": 0.7, "b": 0.3, "c": 0.0})))
    with pytest.warns(UserWarning, match=r"dropped the committed weight of \['c'\]: the "
                      "schedule holds them at 0"):  # fmt: skip
        s.commit(3, w, drop_unscheduled=True)  # what MixtureDataLoader.commit does
    logged = s.log.entries[0][1]
    assert logged[2] == 0 and np.isclose(logged.sum(), 1)
    assert np.allclose(logged[:2], np.array([w["a"], w["b"]]) / (w["a"] + w["b"]))
    with pytest.raises(ValueError, match="holds"):  # nothing left once dropped
        s.commit(5, {"a": 0, "b": 0, "c": 1}, drop_unscheduled=True)


def test_steps_handed_out_or_out_of_order_are_refused():
    s = Stream(plan(), Shard(global_batch_size=12, micro_batches=2))
    for _ in range(5):  # inside step 2
        next(s)
    with pytest.raises(ValueError, match="commit at step 3 or later"):
        s.commit(2, [1, 1, 1])
    s.commit(5, [1, 1, 1])
    with pytest.raises(ValueError, match="not after the previous entry's step 5"):
        s.commit(5, [1, 2, 1])
    with pytest.raises(TypeError, match="needs an online plan"):
        Stream(Plan(plan().mixture, global_batch_size=12)).commit(3, [1, 1, 1])
    with pytest.raises(ValueError, match="needs sizes"):
        OnlinePlan(plan().mixture, global_batch_size=4)


def test_an_online_plan_is_a_value_and_its_log_the_streams():
    p = plan()
    again = pickle.loads(pickle.dumps(p))
    assert again == p and "mode='online'" in repr(p)
    log = [(3, [1, 2, 3])]
    assert p.fingerprints_for(log)["phases"] != p.fingerprints["phases"]
    assert p.fingerprints_for(log)["phases"] != p.fingerprints_for([(3, [1, 2, 4])])["phases"]
    assert p.fingerprints_for(log) == again.fingerprints_for(p.weight_log(log))
    s = Stream(p, log=log)
    s.commit(5, [1, 1, 1])  # appended to the stream's log; the plan is the same value
    assert s.plan is p and s.log.to_list()[1] == [5, [1 / 3] * 3] and len(s.log) == 2
    assert p.weight_log(log) == p.weight_log([(3, np.array([1, 2, 3]) / 6)])


def test_the_loader_commits_past_what_its_workers_prefetched():
    torch = pytest.importorskip("torch")
    from annealmix.torch import MixtureDataLoader

    sources = {n: torch.arange(size) + 1000 * k for k, (n, size) in enumerate(SIZES.items())}
    loader = MixtureDataLoader(sources, plan(), Shard(global_batch_size=12), num_steps=30,
                               num_workers=2, prefetch_factor=2)  # fmt: skip
    assert loader.commit_delay == 1 + 4
    got, at = [], None
    for i, batch in enumerate(loader):
        got.append(batch["source"].numpy())
        if i == 6:
            at = loader.commit({"a": 0.0, "b": 0.0, "c": 1.0})
            with pytest.raises(ValueError, match="already"):
                loader.commit([1, 1, 1], delay=1)
    assert at == 12
    replay = Stream(plan(), num_steps=30, log=loader.log).take(30)
    assert np.array_equal(np.stack(got), replay.sources)
    before = Stream(plan(), num_steps=12).take(12)
    assert np.array_equal(np.stack(got[:12]), before.sources)  # nothing before the commit moved
    assert (np.stack(got[13:]) == 2).all()
    assert loader.metrics(20)["mix/weight/c"] == 1.0


def test_a_log_of_any_weights_reloads_bit_for_bit():
    rng = np.random.default_rng(3)
    log = [(5 * (i + 1), rng.dirichlet(np.ones(3)) * rng.choice([1, 7.3])) for i in range(30)]
    s = Stream(plan(), log=log)
    s.take(20)
    state = json.loads(json.dumps(s.state_dict()))
    again = Stream(plan())
    again.load_state_dict(state)  # the same fingerprint: the log came back exactly
    assert again.log == s.log and again.log.to_list() == s.log.to_list()
