import json

import numpy as np
import pytest
from helpers import assert_resume_equivalent
from hypothesis import given, settings
from hypothesis import strategies as st

from annealmix import Mixture, Phase, Plan
from annealmix.metrics import rank_counts, step_metrics
from annealmix.shard import Shard, ShardStream

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


def stream(p: Plan, rank=0, world=1, micro=1, **kw) -> ShardStream:
    shard = Shard(
        global_batch_size=p.global_batch_size, rank=rank, world_size=world, micro_batches=micro
    )
    return ShardStream(p, shard, **kw)


def gather(p: Plan, world: int, micro: int, steps: int) -> np.ndarray:
    """The global batches rebuilt from every rank's micro-batches, -1 where none landed."""
    out = np.full((steps, p.global_batch_size), -1)
    for rank in range(world):
        s = stream(p, rank, world, micro, num_steps=steps, chunk_steps=5)
        for mb in s:
            cols = s.shard.positions(mb.micro)
            assert (out[mb.step, cols] == -1).all(), "two micro-batches share a position"
            out[mb.step, cols] = mb.indices
    return out


@settings(max_examples=25, deadline=None)
@given(st.sampled_from([1, 2, 4, 8]), st.sampled_from([1, 2, 3]))
def test_ranks_and_micro_batches_partition_every_global_batch(world, micro):
    p = plan()
    assert np.array_equal(gather(p, world, micro, 40), p.batches(0, 40).indices)


def test_each_rank_slice_follows_the_mixture():
    p = Plan(Mixture(weights={"a": 0.5, "b": 0.3, "c": 0.2}), global_batch_size=1024)
    batch = p.batch(0).sources[0]
    for rank in range(8):
        part = batch[Shard(global_batch_size=1024, rank=rank, world_size=8).positions(0)]
        share = np.bincount(part, minlength=3) / part.size
        assert np.abs(share - [0.5, 0.3, 0.2]).max() <= 2 / part.size


def test_stream_resumes_exactly_from_any_midpoint():
    def advance(s):
        mb = next(s)
        return (mb.step, mb.micro, mb.sources.tolist(), mb.indices.tolist())

    for seed in range(3):
        assert_resume_equivalent(lambda: stream(plan(), 1, 2, 3), advance, total=60, seed=seed)


def test_state_is_plain_json_and_state_at_matches_state_dict():
    s = stream(plan(), 0, 2, 2)
    s.mark()
    states = []
    for _ in range(9):
        next(s)
        states.append(s.state_dict())
    assert json.loads(json.dumps(states[-1])) == states[-1]
    for produced, state in enumerate(states, start=1):
        assert s.state_at(produced) == state
    fresh = stream(plan(), 0, 2, 2)
    fresh.mark()
    assert fresh.state_at(8) == states[7]  # replays the counts it never produced


@pytest.mark.parametrize(("before", "after"), [(2, 1), (1, 4), (4, 2)])
def test_resuming_on_another_world_size_continues_the_global_stream(before, after):
    p = plan()
    ref = p.batches(0, 30).indices
    s = stream(p, 0, before, 1)
    for _ in range(11):
        next(s)
    state = s.state_dict()
    out = np.full((30 - 11, p.global_batch_size), -1)
    for rank in range(after):
        r = stream(p, rank, after, 1, num_steps=30)
        r.load_state_dict(state)
        for mb in r:
            out[mb.step - 11, r.shard.positions(mb.micro)] = mb.indices
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
    with pytest.raises(ValueError, match="mixture weights changed"):
        stream(Plan(moved, global_batch_size=48, seed=3, sizes=SIZES)).load_state_dict(
            s.state_dict()
        )


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
    assert new.consumed.tolist() == list(state["consumed"].values())
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


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(global_batch_size=10, world_size=3), "does not divide into world_size 3"),
        (dict(global_batch_size=12, world_size=2, micro_batches=4), "multiple of 8"),
        (dict(global_batch_size=12, rank=2, world_size=2), r"rank must be in \[0, world_size=2\)"),
        (dict(global_batch_size=12, world_size=0), "world_size must be >= 1"),
    ],
)
def test_bad_shards_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Shard(**kwargs)


def test_step_metrics_follow_the_plan():
    p = plan()
    m = step_metrics(p, 10, tokens_per_sample={"web": 128})
    counts = p.counts(10)[0]
    consumed = p.consumed(11)
    for k, name in enumerate(MIX.sources):
        assert m[f"mix/count/{name}"] == counts[k]
        assert m[f"mix/share/{name}"] == counts[k] / 48
        assert m[f"mix/samples/{name}"] == consumed[k]
        assert m[f"mix/epochs/{name}"] == consumed[k] / SIZES[name]
        assert m[f"mix/weight/{name}"] == pytest.approx(MIX.weights_at(10)[k])
    assert m["mix/tokens/web"] == consumed[0] * 128
    assert "mix/tokens/code" not in m
    with pytest.raises(ValueError, match="unknown source in tokens_per_sample: 'wbe'"):
        step_metrics(p, 0, tokens_per_sample={"wbe": 1})
    assert rank_counts(np.array([0, 2, 2]), MIX.sources) == {
        "mix/rank_count/web": 1.0,
        "mix/rank_count/code": 0.0,
        "mix/rank_count/math": 2.0,
    }
    with_tokens = rank_counts(np.array([0, 2, 2]), MIX.sources, lengths=np.array([5, 7, 9]))
    assert with_tokens["mix/rank_tokens/math"] == 16.0 and with_tokens["mix/rank_tokens/code"] == 0
    with pytest.raises(ValueError, match="lengths has 2 entries for 3 samples"):
        rank_counts(np.array([0, 2, 2]), MIX.sources, lengths=np.array([1, 2]))
