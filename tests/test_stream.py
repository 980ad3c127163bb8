"""The stream and its one state: iteration, sharding, resume, validation of loaded states."""

import json
import pickle

import numpy as np
import pytest
from helpers import assert_resume_equivalent
from hypothesis import given, settings
from hypothesis import strategies as st

from annealmix import Mixture, Phase, Plan, Shard, Stream, indexed

MIX = Mixture(
    weights={"web": 3.0, "code": 1.0, "math": 1.0},
    phases=[
        Phase(
            start_step=4, end_step=30, weights={"web": 1, "code": 1, "math": 3}, schedule="cosine"
        )
    ],
)
SIZES = {"web": 500, "code": 90, "math": 70}


def plan(**kw) -> Plan:
    return Plan(MIX, global_batch_size=kw.pop("batch", 48), seed=3, sizes=SIZES, **kw)


def stream(p: Plan, rank=0, world=1, micro=1, **kw) -> Stream:
    shard = Shard(
        global_batch_size=p.global_batch_size, rank=rank, world_size=world, micro_batches=micro
    )
    return Stream(p, shard, **kw)


def gather(p: Plan, world: int, micro: int, steps: int) -> np.ndarray:
    """The global batches rebuilt from every rank's micro-batches, -1 where none landed."""
    out = np.full((steps, p.global_batch_size), -1)
    for rank in range(world):
        s = stream(p, rank, world, micro, num_steps=steps, chunk_steps=5)
        for mb in s:
            cols = s.shard.positions(mb.micro, mb.step)
            assert (out[mb.step, cols] == -1).all(), "two micro-batches share a position"
            out[mb.step, cols] = mb.indices
    return out


@settings(max_examples=25, deadline=None)
@given(st.sampled_from([1, 2, 4, 8]), st.sampled_from([1, 2, 3]))
def test_ranks_and_micro_batches_partition_every_global_batch(world, micro):
    p = plan()
    assert np.array_equal(gather(p, world, micro, 40), indexed(p, p.batches(0, 40)).indices)


def test_the_global_walk_is_the_plan():
    p = plan()
    s = Stream(p, num_steps=12)
    got = [mb.indices for mb in s]
    assert np.array_equal(np.stack(got), indexed(p, p.batches(0, 12)).indices)
    assert s.state_dict()["step"] == 12 and len(s) == 0


def test_take_gives_whole_steps_of_the_shards_columns():
    p = plan()
    s = stream(p, 1, 2, 3)
    batch = s.take(7)
    cols = s.shard.columns(np.arange(7))
    want = np.take_along_axis(indexed(p, p.batches(0, 7)).indices, cols, axis=1)
    assert np.array_equal(batch.indices, want) and cols.shape == (7, 24)
    assert s.step == 7 and np.array_equal(s.consumed, p.consumed(7))
    next(s)
    with pytest.raises(ValueError, match="take\\(\\) needs a step boundary"):
        s.take(1)


@pytest.mark.parametrize("mode", ["exact", "random"])
@pytest.mark.parametrize(("world", "micro"), [(1, 1), (2, 3)])
def test_stream_resumes_exactly_from_any_midpoint(mode, world, micro):
    def advance(s):
        mb = next(s)
        return (mb.step, mb.micro, mb.sources.tolist(), mb.indices.tolist())

    for seed in range(3):
        assert_resume_equivalent(
            lambda: stream(plan(mode=mode), world - 1, world, micro), advance, total=60, seed=seed
        )


def test_each_micro_batch_carries_the_state_after_it():
    s = stream(plan(), 0, 2, 2)
    for _ in range(9):
        mb = next(s)
        assert s.state(mb.after) == s.state()
    fresh = stream(plan(), 0, 2, 2)
    fresh.seek(mb.after)
    assert fresh.state_dict() == s.state_dict()


def test_state_is_small_versioned_json():
    s = stream(plan(), 0, 2, 2)
    for _ in range(5):
        next(s)
    state = s.state_dict()
    assert json.loads(json.dumps(state)) == state
    assert state["version"] == 3 and (state["step"], state["micro"]) == (2, 1)
    assert sum(state["counts"]) == 2 * 48 and state["offset"] is None
    assert set(state["plan"]) == {
        "sources", "weights", "phases", "global_batch_size", "seed", "mode", "sizes", "orders",
        "algorithm", "corpora",
    }  # fmt: skip


# As annealmix 0.1 (stream algorithm 1) wrote it: Stream(Plan(Mixture(weights={"web": 3.0,
# "code": 1.0, "math": 1.0}), global_batch_size=8, sizes={"web": 100, "code": 50,
# "math": 20})) after three steps.
ALGORITHM_1_STATE = {
    "version": 3, "step": 3, "micro": 0, "world_size": 1, "micro_batches": 1,
    "counts": [15, 5, 4], "offset": None,
    "plan": {"sources": "40b45bf7c59c0501", "weights": "3b3c9ffca31df99f",
             "phases": "4f53cda18c2baa0c", "global_batch_size": "2c624232cdd22177",
             "seed": "5feceb66ffc86f38", "mode": "9316fd5c0370b011",
             "sizes": "ae445d1e11154349", "orders": "92c9980936b756ac",
             "algorithm": "6b86b273ff34fce1"},
    "check": "4bc640c8595696ef",
}  # fmt: skip


@pytest.mark.parametrize("replan", [False, True])
def test_a_state_of_another_stream_algorithm_is_refused_naming_both(replan):
    p = Plan(Mixture(weights={"web": 3.0, "code": 1.0, "math": 1.0}), global_batch_size=8,
             sizes={"web": 100, "code": 50, "math": 20})  # fmt: skip
    s = Stream(p)
    with pytest.raises(ValueError, match=r"stream algorithm 1 \(annealmix 0\.1\).*algorithm 2 "
                       r"\(annealmix 0\.2\).*pip install 'annealmix==0\.1\.\*'"):  # fmt: skip
        s.load_state_dict(ALGORITHM_1_STATE, replan=replan)
    assert s.step == 0
    unknown = dict(ALGORITHM_1_STATE, plan=dict(ALGORITHM_1_STATE["plan"], algorithm="0" * 16))
    with pytest.raises(ValueError, match="algorithm this annealmix does not know"):
        s.load_state_dict(unknown)
    s.take(3)  # the same plan, drawn by algorithm 2
    mine, saved = s.state_dict()["plan"], ALGORITHM_1_STATE["plan"]
    assert [k for k in mine if mine[k] != saved.get(k)] == ["algorithm", "corpora"]


def test_state_stays_under_a_kilobyte_for_64_sources_and_8_phases():
    names = [f"source_{i:02d}" for i in range(64)]
    rng = np.random.default_rng(0)
    phases = [
        Phase(
            start_step=1000 * i, end_step=1000 * i + 900, weights=dict(zip(names, rng.random(64)))
        )
        for i in range(8)
    ]
    p = Plan(Mixture(weights=dict(zip(names, rng.random(64))), phases=phases),
             global_batch_size=1024, sizes=dict.fromkeys(names, 10**9))  # fmt: skip
    s = Stream(p)
    s.take(9000)  # counts of seven digits
    assert len(json.dumps(s.state_dict())) < 1024


@pytest.mark.parametrize(("before", "after"), [(2, 1), (1, 4), (4, 2)])
def test_resuming_on_another_world_size_continues_the_global_stream(before, after):
    p = plan()
    ref = indexed(p, p.batches(0, 30)).indices
    s = stream(p, 0, before, 1)
    for _ in range(11):
        next(s)
    state = s.state_dict()
    out = np.full((30 - 11, p.global_batch_size), -1)
    for rank in range(after):
        r = stream(p, rank, after, 1, num_steps=30)
        r.load_state_dict(state)
        for mb in r:
            out[mb.step - 11, r.shard.positions(mb.micro, mb.step)] = mb.indices
    assert np.array_equal(out, ref[11:])


def test_mid_step_state_refuses_another_world_size():
    s = stream(plan(), 0, 2, 2)
    next(s)
    with pytest.raises(ValueError, match="inside step 0 .*same world size"):
        stream(plan(), 0, 4, 2).load_state_dict(s.state_dict())


def test_changed_plan_is_refused_naming_what_changed():
    s = stream(plan())
    next(s)
    other = Plan(MIX, global_batch_size=48, seed=4, sizes=SIZES)
    with pytest.raises(ValueError, match="different plan: seed changed.*replan=True"):
        stream(other).load_state_dict(s.state_dict())
    moved = Mixture(weights={"web": 1.0, "code": 1.0, "math": 1.0}, phases=MIX.phases)
    with pytest.raises(ValueError, match="different plan: weights changed"):
        stream(Plan(moved, global_batch_size=48, seed=3, sizes=SIZES)).load_state_dict(
            s.state_dict()
        )


@pytest.mark.parametrize("mode", ["exact", "random"])
def test_counts_that_are_not_the_plans_are_refused(mode):
    s = stream(plan(mode=mode))
    s.take(6)
    state = s.state_dict()
    shifted = dict(state, counts=[state["counts"][0] + 7, *state["counts"][1:]])
    message = "source 'web': .* in the state" if mode == "exact" else "they add up to 295, not"
    with pytest.raises(ValueError, match=f"are not the plan's counts there \\({message}"):
        stream(plan(mode=mode)).load_state_dict(shifted)
    wrong_step = dict(state, step=9)
    with pytest.raises(ValueError, match="state counts at step 9 are not the plan's counts"):
        stream(plan(mode=mode)).load_state_dict(wrong_step)
    if mode == "exact":  # a swap keeps the sum: only the replay sees it
        swapped = dict(state, counts=[state["counts"][0] + 1, state["counts"][1] - 1,
                                      state["counts"][2]])  # fmt: skip
        with pytest.raises(ValueError, match="not the plan's counts"):
            stream(plan(mode=mode)).load_state_dict(swapped)


@pytest.mark.parametrize(
    ("edit", "error", "message"),
    [
        (
            lambda st: None,
            TypeError,
            "must be the dict that state_dict\\(\\) returned, got NoneType",
        ),
        (
            lambda st: json.dumps(st),
            TypeError,
            "got a string; if you saved it as JSON, pass json.loads",
        ),
        (lambda st: {"step": 3}, ValueError, "state lacks \\['version', 'micro'"),
        (lambda st: st | {"version": 99}, ValueError, "state version 99 is not 3"),
        (
            lambda st: st | {"counts": [-1, 1, 0]},
            ValueError,
            "state counts\\[0\\] must be >= 0, got -1",
        ),
        (
            lambda st: st | {"counts": {"web": 1}},
            ValueError,
            "state counts must be a list of integers",
        ),
        (lambda st: st | {"counts": [1, 2]}, ValueError, "state counts 2 sources, the plan has 3"),
        (lambda st: st | {"step": -4}, ValueError, "state step must be >= 0, got -4"),
        (lambda st: st | {"micro": 3}, ValueError, "state micro 3 must be < its micro_batches 1"),
        (lambda st: st | {"offset": [1]}, ValueError, "state offset has 1 entries for 3 counts"),
        (lambda st: st | {"plan": {"seed": "x"}}, ValueError, "state plan must map each of"),
        (lambda st: st | {"extra": 1}, ValueError, "state has unknown keys \\['extra'\\]"),
    ],
)
def test_malformed_states_are_refused_with_the_fix(edit, error, message):
    s = stream(plan())
    s.take(3)
    fresh = stream(plan())
    with pytest.raises(error, match=message):
        fresh.load_state_dict(edit(s.state_dict()))
    assert fresh.step == 0  # nothing was half-loaded


def test_replan_keeps_counts_and_repeats_no_sample_within_an_epoch():
    old = plan()
    s = stream(old)
    seen = {k: {} for k in range(3)}  # draw -> index, per source

    def record(mb):
        for k in range(3):
            mine = mb.sources == k
            seen[k].update(zip(mb.draws[mine].tolist(), mb.indices[mine].tolist()))

    for _ in range(5):
        record(next(s))
    state = s.state_dict()
    new_mix = Mixture(weights={"web": 0.1, "code": 0.2, "math": 0.7})
    new = stream(Plan(new_mix, global_batch_size=48, seed=3, sizes=SIZES), num_steps=9)
    new.load_state_dict(state, replan=True)
    assert new.consumed.tolist() == state["counts"]
    for mb in new:
        record(mb)
    assert len(seen[2]) > SIZES["math"]  # the re-planned mix runs math past an epoch
    for k, name in enumerate(MIX.sources):
        draws = sorted(seen[k])
        assert draws == list(range(len(draws))), f"{name} skipped or repeated a draw"
        epoch = [seen[k][d] for d in draws[: SIZES[name]]]
        assert len(set(epoch)) == len(epoch), f"{name} repeats a sample inside an epoch"
    resumed = stream(Plan(new_mix, global_batch_size=48, seed=3, sizes=SIZES), num_steps=9)
    resumed.load_state_dict(new.state_dict())  # the re-planned state resumes as itself
    assert resumed.consumed.tolist() == new.consumed.tolist()


def test_replan_with_a_new_source_maps_counts_by_name():
    s = stream(plan())
    s.take(4)
    state = s.state_dict()
    names = ("math", "web", "books", "code")
    bigger = Plan(Mixture(weights=dict.fromkeys(names, 1.0)), global_batch_size=48, seed=3,
                  sizes=dict(SIZES, books=40))  # fmt: skip
    with pytest.raises(ValueError, match="pass previous_sources="):
        stream(bigger).load_state_dict(state, replan=True)
    with pytest.raises(ValueError, match="previous_sources names 2 sources for 3 saved counts"):
        stream(bigger).load_state_dict(state, replan=True, previous_sources=["web", "code"])
    new = stream(bigger)
    new.load_state_dict(state, replan=True, previous_sources=MIX.sources)
    by_name = dict(zip(MIX.sources, state["counts"]))
    assert new.consumed.tolist() == [by_name["math"], by_name["web"], 0, by_name["code"]]


def test_num_steps_must_not_be_negative():
    with pytest.raises(ValueError, match="num_steps must be >= 0, got -3"):
        Stream(plan(), num_steps=-3)


def test_a_stream_pickles_small_and_continues_the_same():
    names = [f"s{i}" for i in range(8)]
    p = Plan(Mixture(weights=dict.fromkeys(names, 1.0),
                     phases=[Phase(start_step=0, end_step=50_000, weights={"s0": 1})]),
             global_batch_size=256, sizes=dict.fromkeys(names, 10**6))  # fmt: skip
    s = Stream(p)
    s.take(3000)
    data = pickle.dumps(s)
    assert len(data) < 8192, len(data)
    back = pickle.loads(data)
    assert np.array_equal(back.take(5).indices, s.take(5).indices)


def test_edits_that_keep_the_totals_are_refused_by_the_check():
    """Random, token and online plans check counts by their totals (a replay would
    cost a hash or a walk per earlier sample): the state's check catches an edit
    that keeps them, counts moved between sources or deficits moved, before the
    stream moves."""
    from annealmix.online import OnlinePlan
    from annealmix.tokens import TokenPlan

    lengths = {"web": np.arange(1, 60) % 7 + 1, "code": np.arange(1, 40) % 5 + 1,
               "math": np.arange(1, 30) % 3 + 1}  # fmt: skip
    mix = Mixture(weights={"web": 0.5, "code": 0.3, "math": 0.2})
    plans = {
        "random": lambda: plan(mode="random"),
        "tokens": lambda: TokenPlan(mix, global_batch_size=48, lengths=lengths, seed=3),
        "online": lambda: OnlinePlan(mix, global_batch_size=48, sizes=SIZES, seed=3),
    }
    for name, make in plans.items():
        s = Stream(make())
        if name == "online":
            s.commit(2, [0.2, 0.2, 0.6])
        s.take(5)
        state = json.loads(json.dumps(s.state_dict()))
        Stream(make()).load_state_dict(state)  # as saved: loads
        counts = state["counts"]
        edits = [dict(state, counts=[counts[0] + 1, counts[1] - 1, counts[2]])]
        if "deficits" in state:
            d = state["deficits"]
            edits.append(dict(state, deficits=[d[0] + 2**39, d[1] - 2**39, d[2]]))
        if name == "online":
            edits.append(dict(state, log=[[2, [0.25, 0.15, 0.6]]], plan=state["plan"]))
        for edited in edits:
            fresh = Stream(make())
            with pytest.raises(ValueError, match="edited or corrupted|phases changed"):
                fresh.load_state_dict(edited)
            assert fresh.step == 0  # nothing moved
        unchecked = {k: v for k, v in state.items() if k != "check"} | {"version": 2}
        with pytest.warns(UserWarning, match="state version 2, without a check"):
            Stream(make()).load_state_dict(unchecked)
        with pytest.raises(ValueError, match="state check must be the string"):
            Stream(make()).load_state_dict({k: v for k, v in state.items() if k != "check"})


def test_a_state_past_the_streams_last_step_is_refused():
    s = Stream(plan(), num_steps=12)
    s.take(12)
    state = s.state_dict()
    Stream(plan(), num_steps=12).load_state_dict(state)  # at the end: nothing left, but true
    short = Stream(plan(), num_steps=8)
    with pytest.raises(ValueError, match="state step 12 is past this stream's num_steps 8"):
        short.load_state_dict(state)
    assert short.step == 0


@pytest.mark.parametrize(("world", "micro"), [(2, 1), (8, 2), (64, 1)])
def test_a_rank_maps_only_its_samples_and_they_are_the_global_streams(world, micro):
    # tiny sources (epochs wrap inside a step), a heavy one (mapped as a run), many others
    rng = np.random.default_rng(world)
    weights = {"heavy": 40.0, **{f"tiny{i}": 0.3 for i in range(5)},
               **{f"f{i}": float(rng.lognormal()) for i in range(60)}}  # fmt: skip
    sizes = {n: (3 if n.startswith("tiny") else int(rng.integers(50, 5000))) for n in weights}
    plan = Plan(Mixture(weights=weights), global_batch_size=512, sizes=sizes, seed=7)
    whole = Stream(plan).take(300)
    for rank in (0, world // 2, world - 1):
        shard = Shard(global_batch_size=512, rank=rank, world_size=world, micro_batches=micro)
        mine = Stream(plan, shard).take(300)
        cols = shard.columns(np.arange(300))
        assert (mine.indices >= 0).all()
        assert (mine.indices == np.take_along_axis(whole.indices, cols, axis=1)).all()
        stream = Stream(plan, shard)  # micro-batch by micro-batch, across planned chunks
        for step in range(0, 300, 37):
            stream.seek_step(step)
            for m in range(micro):
                mb = next(stream)
                at = shard.positions(m, step)
                assert (mb.indices == whole.indices[step, at]).all()
