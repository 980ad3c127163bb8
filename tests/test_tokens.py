"""Token weights over samples of varying length: the bound, resume, random access, errors."""

import importlib.util
import json
import pickle

import numpy as np
import pytest
from helpers import assert_resume_equivalent, resumed_indices
from hypothesis import given, settings
from hypothesis import strategies as st

from annealmix import Mixture, Phase, Plan, Shard, Stream, TokenPlan
from annealmix.packing import Padded


def walk(plan: TokenPlan, steps: int):
    """Per step: tokens drawn from each source, and the scheduled token target,
    computed here from the samples' lengths and the float weights alone."""
    per_step = plan.step_tokens(Stream(plan, num_steps=steps).take(steps))
    w = plan.mixture.weights_at(np.arange(steps))
    target = np.cumsum(w * per_step.sum(axis=1, keepdims=True), axis=0)
    return np.cumsum(per_step, axis=0), target


def mixture_of(names, start, end, schedule, steps):
    return Mixture(
        weights=dict(zip(names, start)),
        phases=[
            Phase(
                start_step=0, end_step=steps - 1, weights=dict(zip(names, end)), schedule=schedule
            )
        ],  # fmt: skip
    )


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    n=st.integers(2, 5),
    batch=st.integers(1, 24),
    steps=st.integers(2, 40),
    schedule=st.sampled_from(["linear", "cosine", "step"]),
)
def test_tokens_stay_within_the_bound_at_every_step(data, n, batch, steps, schedule):
    names = [f"s{k}" for k in range(n)]
    lengths = {
        name: np.array(data.draw(st.lists(st.integers(1, 3000), min_size=1, max_size=40)))
        for name in names
    }
    simplex = st.lists(st.integers(0, 9), min_size=n, max_size=n).filter(any)
    start, end = data.draw(simplex), data.draw(simplex)
    start, end = [x / sum(start) for x in start], [x / sum(end) for x in end]
    plan = TokenPlan(
        mixture_of(names, start, end, schedule, steps), global_batch_size=batch,
        lengths=lengths, seed=data.draw(st.integers(0, 3)),
    )  # fmt: skip
    drawn, target = walk(plan, steps)
    longest = np.array(plan.longest)
    slack = 1e-6 * target.sum(axis=1, keepdims=True) + 1e-6  # float weights vs quanta
    # ahead of its target by less than its own longest sample
    assert (drawn - target < longest + slack).all()
    # behind by less than the other sources' longest samples together
    assert (target - drawn < longest.sum() - longest + slack).all()


def test_a_linear_token_anneal_tracks_its_curve_over_very_different_documents():
    rng = np.random.default_rng(0)
    lengths = {"short": rng.integers(80, 130, 4000), "long": rng.integers(800, 1200, 800)}
    steps = 400
    mix = mixture_of(["short", "long"], [0.9, 0.1], [0.1, 0.9], "linear", steps)
    drawn, target = walk(TokenPlan(mix, global_batch_size=32, lengths=lengths), steps)
    # two sources: each ahead by less than its own longest document and behind by
    # less than the other's, so within one longest document, at every step
    error = drawn - target
    assert error[:, 0].max() < lengths["short"].max() and -error[:, 0].min() < 1200
    assert np.abs(error).max() < 1200
    # so each step's cumulative token share is on the curve; in samples it is not
    share = drawn[:, 0] / drawn.sum(axis=1)
    # the README's figures: within 0.8 points of the curve from step 20 on ...
    assert np.abs(share - target[:, 0] / target.sum(axis=1))[20:].max() < 0.0085
    by_samples = Plan(mix, global_batch_size=32, sizes={"short": 4000, "long": 800})
    taken = Stream(by_samples).take(steps)
    tokens = np.zeros(taken.sources.shape)
    for k, name in enumerate(("short", "long")):
        at = taken.sources == k
        tokens[at] = lengths[name][taken.indices[at]]
    per_step = np.stack([np.where(taken.sources == k, tokens, 0).sum(1) for k in range(2)], 1)
    got = np.cumsum(per_step, axis=0)
    want = np.cumsum(mix.weights_at(np.arange(steps)) * per_step.sum(1, keepdims=True), axis=0)
    # ... where a plan in samples misses it by up to 49 points
    assert np.abs(got[:, 0] / got.sum(axis=1) - want[:, 0] / want.sum(axis=1)).max() > 0.49


def test_random_access_and_a_walk_agree():
    rng = np.random.default_rng(1)
    lengths = {k: rng.integers(1, 500, 300) for k in "abc"}
    plan = TokenPlan(
        mixture_of("abc", [0.6, 0.3, 0.1], [0.1, 0.3, 0.6], "cosine", 600),
        global_batch_size=8, lengths=lengths, seed=5,
    )  # fmt: skip
    walked = Stream(plan).take(600)
    for step in (0, 1, 255, 256, 257, 599):  # cold, and across the cursor's marks
        one = plan.batch(step)
        assert np.array_equal(one.sources[0], walked.sources[step])
        assert np.array_equal(one.draws[0], walked.draws[step])
    plan.consumed(600)
    assert sorted(plan._memo.marks) == [256, 512]  # the walk's marks, kept by the plan
    fresh = TokenPlan(plan.mixture, global_batch_size=8, lengths=lengths, seed=5)
    assert np.array_equal(plan.consumed(300), fresh.consumed(300))


@pytest.mark.parametrize("micro", [1, 2])
def test_resume_inside_a_run_gives_the_same_stream(micro):
    rng = np.random.default_rng(2)
    lengths = {"a": rng.integers(1, 50, 97), "b": rng.integers(100, 900, 31)}
    plan = TokenPlan(mixture_of("ab", [0.2, 0.8], [0.7, 0.3], "linear", 50),
                     global_batch_size=12, lengths=lengths, seed=3)  # fmt: skip
    shard = Shard(global_batch_size=12, world_size=2, rank=1, micro_batches=micro)
    for seed in range(3):
        assert_resume_equivalent(lambda: Stream(plan, shard), next, 80, seed=seed)


def test_resume_at_a_step_on_another_world_size_covers_the_same_global_batches():
    rng = np.random.default_rng(3)
    lengths = {"a": rng.integers(1, 300, 200), "b": rng.integers(1, 3000, 50), "c": [7] * 9}
    plan = TokenPlan(mixture_of("abc", [0.5, 0.4, 0.1], [0.1, 0.4, 0.5], "linear", 60),
                     global_batch_size=12, lengths=lengths, seed=9)  # fmt: skip
    whole = Stream(plan).take(60)
    first = Stream(plan, Shard(global_batch_size=12, world_size=2, rank=0))
    for _ in range(25):
        next(first)
    state = json.loads(json.dumps(first.state_dict()))
    assert len(state["deficits"]) == 3 and sum(state["deficits"]) == 0
    for world in (1, 3, 4):
        assert np.array_equal(resumed_indices(plan, state, world, 25, 60), whole.indices[25:])


def test_a_state_is_checked_not_trusted():
    plan = TokenPlan(Mixture(weights={"a": 0.5, "b": 0.5}), global_batch_size=4,
                     lengths={"a": [3, 5, 8], "b": [100, 1]})  # fmt: skip
    s = Stream(plan)
    for _ in range(5):
        next(s)
    good = s.state_dict()
    cases = [
        ({"deficits": [good["deficits"][0] + 1, good["deficits"][1]]}, "do not sum to zero"),
        ({"deficits": [2**40 * 500, -(2**40) * 500]}, "deficit is out of bounds"),
        ({"counts": [good["counts"][0] + 1, good["counts"][1]]}, "add up to 21, not 5 steps"),
    ]
    for change, message in cases:
        with pytest.raises(ValueError, match=message):
            Stream(plan).load_state_dict({**good, **change})
    bare = {k: v for k, v in good.items() if k != "deficits"}
    with pytest.raises(ValueError, match="it has no deficits"):
        Stream(plan).load_state_dict(bare)
    with pytest.raises(ValueError, match="state deficits"):
        Stream(plan).load_state_dict({**good, "deficits": "none"})
    # a sample plan over the same sources refuses it by name
    other = Plan(plan.mixture, global_batch_size=4, sizes={"a": 3, "b": 2})
    with pytest.raises(ValueError, match="mode, sizes changed"):
        Stream(other).load_state_dict(good)


def test_a_replan_continues_from_the_saved_counts():
    lengths = {"a": np.arange(1, 40), "b": np.arange(100, 140)}
    before = TokenPlan(Mixture(weights={"a": 0.5, "b": 0.5}), global_batch_size=6,
                       lengths=lengths)  # fmt: skip
    s = Stream(before)
    s.take(10)
    after = TokenPlan(Mixture(weights={"a": 0.9, "b": 0.1}), global_batch_size=6,
                      lengths=lengths)  # fmt: skip
    t = Stream(after)
    t.load_state_dict(s.state_dict(), replan=True)
    assert np.array_equal(t.consumed, s.consumed)
    batch = t.take(20)
    assert batch.draws[batch.sources == 0].min() == s.consumed[0]  # nothing repeated
    tokens = [after.lengths[k][batch.indices[batch.sources == k]].sum() for k in range(2)]
    assert abs(tokens[0] - 0.9 * sum(tokens)) < 139  # the bound, from the re-plan on


def test_a_token_plan_is_a_value():
    lengths = {"a": [1, 2, 3], "b": [4]}
    mix = Mixture(weights={"a": 0.3, "b": 0.7})
    plan = TokenPlan(mix, global_batch_size=2, lengths=lengths)
    again = pickle.loads(pickle.dumps(plan))
    assert again == plan and again.mode == "tokens"
    assert TokenPlan(mix, global_batch_size=2, lengths={"a": [1, 2, 4], "b": [4]}) != plan
    assert plan != Plan(mix, global_batch_size=2, sizes={"a": 3, "b": 1})
    assert "mode='tokens'" in repr(plan) and plan.mode == "tokens"
    with pytest.raises(AttributeError, match="immutable"):
        plan.seed = 3
    with pytest.raises(ValueError, match="takes no draw_offset"):
        plan.batches(0, 1, draw_offset=np.zeros(2, dtype=np.int64))
    assert plan.targets(0).sum() == pytest.approx(plan.tokens(1).sum())


@pytest.mark.parametrize(
    ("lengths", "message"),
    [
        ({"a": [1, 0, 3], "b": [2]}, "sample 1 holds 0 tokens"),
        ({"a": [[1, 2]], "b": [2]}, "must be a non-empty 1-D integer array"),
        ({"a": [], "b": [2]}, "must be a non-empty 1-D integer array"),
        ({"a": [1.5], "b": [2]}, "must be a non-empty 1-D integer array"),
        ({"a": [1]}, "no entry for source 'b'"),
        ({"a": [1], "b": [1], "c": [1]}, "'c'"),
    ],
)
def test_bad_lengths_are_refused_by_name(lengths, message):
    with pytest.raises(ValueError, match=message):
        TokenPlan(Mixture(weights={"a": 0.5, "b": 0.5}), global_batch_size=2, lengths=lengths)


def test_padded_documents_count_their_targets():
    docs = [np.arange(1, 6), np.arange(1, 2), np.arange(1, 30)]
    p = Padded(docs, 9, truncate=True)
    assert p.sample_tokens().tolist() == [4, 1, 9]
    assert [int(p[i]["loss_mask"].sum()) for i in (0, 2)] == [4, 9]


def test_the_loader_reads_padded_documents_by_tokens_and_resumes():
    torch = pytest.importorskip("torch")
    from annealmix.torch import MixtureDataLoader

    rng = np.random.default_rng(4)
    docs = {
        "chat": [np.arange(1, n + 1) for n in rng.integers(5, 40, 120)],
        "books": [np.arange(1, n + 1) for n in rng.integers(200, 500, 30)],
    }
    sources = {n: Padded(d, 511, name=n) for n, d in docs.items()}
    plan = TokenPlan(
        mixture_of(["chat", "books"], [0.8, 0.2], [0.2, 0.8], "linear", 30),
        global_batch_size=8, lengths={n: s.sample_tokens() for n, s in sources.items()},
    )  # fmt: skip
    shard = Shard(global_batch_size=8)

    def loader():
        return MixtureDataLoader(sources, plan, shard, num_steps=30, num_workers=2)

    batches = list(loader())
    got = np.stack([b["sample"]["loss_mask"].sum(dim=1).numpy() for b in batches])
    source = np.stack([b["source"].numpy() for b in batches])
    per_step = np.stack([np.where(source == k, got, 0).sum(axis=1) for k in range(2)], axis=1)
    drawn, target = walk(plan, 30)
    assert np.array_equal(np.cumsum(per_step, axis=0), drawn)  # the loss targets it planned
    assert np.abs(drawn - target).max() < 499
    first = loader()
    it = iter(first)
    for _ in range(11):
        next(it)
    state, m = first.state_dict(), first.metrics(10)
    assert [m[f"mix/tokens/{n}"] for n in ("chat", "books")] == drawn[10].tolist()
    assert m["mix/documents/chat"] == m["mix/samples/chat"]
    again = loader()
    again.load_state_dict(json.loads(json.dumps(state)))
    for a, b in zip(again, batches[11:], strict=True):
        assert torch.equal(a["sample"]["tokens"], b["sample"]["tokens"])


def test_a_config_weighs_unpacked_documents_by_tokens(tmp_path, capsys):
    from annealmix.cli import main
    from annealmix.config import load_config
    from annealmix.opened import budget

    rng = np.random.default_rng(5)
    for name, (low, high, n) in {"chat": (3, 30, 300), "books": (100, 400, 60)}.items():
        docs = [np.append(rng.integers(1, 99, m - 1), 0) for m in rng.integers(low, high, n)]
        np.concatenate(docs).astype(np.uint16).tofile(tmp_path / f"{name}.bin")
    table = 'path = "{0}.bin"\nformat = "nanogpt"\neos_id = 0\nseq_len = 400\npack = false\n'
    (tmp_path / "mix.toml").write_text(
        'global_batch_size = 8\nnum_steps = 40\nunit = "tokens"\noutput = "dict"\n'
        f"[sources.chat]\nweight = 0.5\n{table.format('chat')}"
        f"[sources.books]\nweight = 0.5\n{table.format('books')}"
    )
    opened = load_config(tmp_path / "mix.toml").open()
    assert opened.plan.mode == "tokens"
    spent = budget(opened)
    tokens = [spent[n]["tokens"] for n in ("chat", "books")]
    assert abs(tokens[0] - tokens[1]) < 2 * 400  # half each, within the bound
    assert spent["chat"]["samples"] > 5 * spent["books"]["samples"]
    assert main(["preview", str(tmp_path / "mix.toml")]) == 0
    out = capsys.readouterr().out
    assert "weights in tokens" in out and f"{tokens[0]:,}" in out
    if importlib.util.find_spec("matplotlib"):
        assert main(["plot", str(tmp_path / "mix.toml"), "-o", str(tmp_path / "mix.png")]) == 0
        assert (tmp_path / "mix.png").stat().st_size > 10_000
    (tmp_path / "mix.toml").write_text(
        (tmp_path / "mix.toml").read_text().replace("num_steps", 'mode = "random"\nnum_steps')
    )
    assert main(["preview", str(tmp_path / "mix.toml")]) == 2
    assert 'give mode = "exact" or unit = "samples"' in capsys.readouterr().err
