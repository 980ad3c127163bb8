"""Batch-size ramps (``annealmix.ramp``): Megatron's ``--rampup-batch-size`` step by
step as megatron-core's own calculator gives it, the plan exact at every optimizer
step, resumes and re-plans across the ramp, Megatron's global sample index, configs."""

import json
import pickle
import subprocess
import sys

import numpy as np
import pytest

from annealmix import BatchSizes, Mixture, Phase, Plan, Shard, Stream
from annealmix.config import config_from_dict, dump_config, load_config

MEGATRON_RAMPS = [  # start, increment, samples, global batch size
    (32, 32, 20_000, 256),
    (16, 8, 1_000, 64),  # a stage every 125 samples: steps of 16 to 64 cross several
    (2, 2, 7, 12),  # more increments than samples: the size jumps stages
    (100, 50, 12_345, 1000),  # samples not a multiple of anything
    (1, 1, 3, 2),
]


def megatron_sizes(start, increment, samples, final, steps):
    """The global batch of each step under megatron-core's own calculator, as
    Megatron's training loop drives it (update from the samples consumed, then step)."""
    calculators = pytest.importorskip("megatron.core.num_microbatches_calculator")
    calc = calculators.RampupBatchsizeNumMicroBatchesCalculator(
        final, 1, 1, False, 0, start, increment, samples
    )
    out, consumed = [], 0
    for _ in range(steps):
        calc.update(consumed, True)
        size = calc.get_current_global_batch_size()
        out.append(size)
        consumed += size
    return out


@pytest.mark.parametrize("ramp", MEGATRON_RAMPS)
def test_megatron_ramp_gives_megatron_cores_batch_size_at_every_step(ramp):
    steps = 2_000
    want = megatron_sizes(*ramp, steps)
    sizes = BatchSizes.megatron(*ramp)
    assert sizes.size_at(np.arange(steps)).tolist() == want
    assert sizes.samples_before(steps) == sum(want)


def test_conversions_agree_with_each_other():
    sizes = BatchSizes([(0, 6), (5, 12), (9, 3), (20, 30)])
    assert sizes.unit == 3 and sizes.to_list() == [[0, 6], [5, 12], [9, 3], [20, 30]]
    steps = np.arange(60)
    per = sizes.size_at(steps)
    first = sizes.plan_steps(steps)
    assert (np.diff(first) == per[:-1] // 3).all() and first[0] == 0
    assert (sizes.steps_in(steps) == per // 3).all()
    assert (sizes.samples_before(steps) == np.concatenate([[0], np.cumsum(per)[:-1]])).all()
    for t in range(59):  # every plan step and every sample of step t maps back to t
        units = np.arange(first[t], first[t + 1])
        assert (sizes.step_of(units) == t).all()
        samples = np.arange(sizes.samples_before(t), sizes.samples_before(t + 1))
        assert (sizes.step_of_sample(samples) == t).all()
    assert sizes.step_of(int(first[7])) == 7 and isinstance(sizes.step_of(3), int)
    assert pickle.loads(pickle.dumps(sizes)) == sizes
    assert "unit=3" in repr(sizes)


def _mixture(n):
    start = {f"s{k}": 1.0 + k for k in range(n)}
    end = {f"s{k}": float(n - k) ** 2 for k in range(n)}
    return Mixture(weights=start, phases=[Phase(start_step=20, end_step=150, weights=end,
                                                schedule="cosine")])  # fmt: skip


@pytest.mark.parametrize(
    ("n", "sizes", "bound"),
    [
        (2, [(0, 8), (30, 24), (60, 64), (100, 16)], 0.5),  # the closed form; up, then down
        (5, [(0, 32), (40, 96), (90, 256)], 1.0),  # earliest deadline
        (5, "megatron", 1.0),
    ],
)
def test_counts_are_exact_at_every_optimizer_step(n, sizes, bound):
    ramp = BatchSizes.megatron(32, 32, 20_000, 256) if sizes == "megatron" else BatchSizes(sizes)
    mix = _mixture(n)
    plan = Plan(mix, global_batch_size=ramp)
    steps = 250
    after = ramp.plan_steps(np.arange(1, steps + 1))
    counts = np.stack([plan.consumed(int(u)) for u in after])
    target = np.cumsum(ramp.size_at(np.arange(steps))[:, None] * mix.weights_at(np.arange(steps)),
                       axis=0)  # fmt: skip
    assert np.abs(counts - target).max() <= bound
    assert (counts.sum(axis=1) == ramp.samples_before(np.arange(1, steps + 1))).all()
    # the weights a plan step follows are its optimizer step's
    assert np.allclose(plan.weights_at(after[:-1]), mix.weights_at(np.arange(1, steps)))


def test_corpora_and_random_mode_follow_the_ramp():
    ramp = BatchSizes([(0, 16), (50, 48)])
    inside = [1.0, 2.0, 3.0, 1.0, 1.0, 2.0]  # each corpus keeps its files' ratios

    def mix_of(a: float) -> dict:
        return {f"s{k}": w * (a if k < 3 else 1 - a) for k, w in enumerate(inside)}

    mix = Mixture(weights=mix_of(0.9), phases=[Phase(start_step=20, end_step=150,
                                                     weights=mix_of(0.2))])  # fmt: skip
    corpora = {"a": ["s0", "s1", "s2"], "b": ["s3", "s4", "s5"]}
    grouped = Plan(mix, global_batch_size=ramp, corpora=corpora)
    steps = np.arange(1, 200)
    at = ramp.plan_steps(steps)
    counts = np.stack([grouped.consumed(int(u)) for u in at])
    target = np.cumsum(ramp.size_at(steps - 1)[:, None] * mix.weights_at(steps - 1), axis=0)
    by_corpus = np.stack([counts[:, :3].sum(1), counts[:, 3:].sum(1)], 1)
    want = np.stack([target[:, :3].sum(1), target[:, 3:].sum(1)], 1)
    assert np.abs(by_corpus - want).max() < 1 and np.abs(counts - target).max() < 1.68
    random = Plan(mix, global_batch_size=ramp, mode="random").batches(0, int(at[-1]))
    assert random.sources.shape == (int(at[-1]), 16)


def test_one_size_is_the_plan_without_a_ramp():
    mix = _mixture(3)
    flat = Plan(mix, global_batch_size=64, sizes={f"s{k}": 1000 for k in range(3)})
    ramped = Plan(mix, global_batch_size=BatchSizes([(0, 64)]),
                  sizes={f"s{k}": 1000 for k in range(3)})  # fmt: skip
    a, b = flat.batches(0, 200), ramped.batches(0, 200)
    assert (a.sources == b.sources).all() and (a.draws == b.draws).all()
    assert ramped.batch_sizes is not None and ramped.fingerprint != flat.fingerprint
    assert ramped.changes(flat.fingerprints) == ["global_batch_size"]
    assert pickle.loads(pickle.dumps(ramped)) == ramped


def test_a_stretched_mixture_with_another_batch_is_refused():
    ramp = BatchSizes([(0, 8), (10, 12)])
    with pytest.raises(ValueError, match="plan steps of its unit, 4 samples, not global_batch"):
        Plan(ramp.stretch(_mixture(2)), global_batch_size=8)
    plan = Plan(ramp.stretch(_mixture(2)), global_batch_size=4)
    assert plan == Plan(_mixture(2), global_batch_size=ramp)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: BatchSizes([]), "at least one"),
        (lambda: BatchSizes([(1, 8)]), "must start at step 0"),
        (lambda: BatchSizes([(0, 8), (5, 16), (5, 32)]), r"batch sizes\[2\] starts at step 5"),
        (lambda: BatchSizes([(0, 0)]), r"batch sizes\[0\] size"),
        (lambda: BatchSizes([(0, 8, 1)]), "must be \\(first step, size\\)"),
        (lambda: BatchSizes.megatron(32, 48, 1000, 256), "never lands on global_batch_size 256"),
        (lambda: BatchSizes.megatron(256, 32, 1000, 256), "positive multiple"),
        (lambda: BatchSizes.megatron(32, 32, 0, 256), "rampup samples"),
    ],
)
def test_bad_batch_sizes_are_refused_naming_the_field(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_a_stream_resumes_inside_the_ramp_on_another_world_size():
    ramp = BatchSizes.megatron(8, 8, 2_000, 64)
    plan = Plan(_mixture(4), global_batch_size=ramp, sizes={f"s{k}": 500 for k in range(4)})
    whole = Stream(plan).take(300)
    two = [Stream(plan, Shard(global_batch_size=8, world_size=2, rank=r)) for r in (0, 1)]
    for s in two:
        s.take(77)  # inside the ramp: optimizer step 33 of sizes 8..56
    assert ramp.step_of(77) < ramp.starts[-1]
    state = json.loads(json.dumps(two[0].state_dict()))
    one = Stream(plan)
    one.load_state_dict(state)
    rest = one.take(223)
    assert (rest.sources == whole.sources[77:]).all() and (rest.draws == whole.draws[77:]).all()


def test_a_replan_across_the_ramp_keeps_the_counts_and_a_changed_ramp_is_refused():
    ramp = BatchSizes.megatron(8, 8, 2_000, 64)
    sizes = {f"s{k}": 10_000 for k in range(4)}
    plan = Plan(_mixture(4), global_batch_size=ramp, sizes=sizes)
    stream = Stream(plan)
    taken = stream.take(100)
    state = stream.state_dict()
    anneal = Mixture(weights={f"s{k}": 1.0 for k in range(4)})
    again = Stream(Plan(anneal, global_batch_size=ramp, sizes=sizes))
    again.load_state_dict(state, replan=True)
    more = again.take(50)
    for k in range(4):  # each source continues from its draws: nothing repeated
        before = taken.draws[taken.sources == k]
        after = more.draws[more.sources == k]
        assert after.min() == before.max() + 1
    other = Stream(Plan(anneal, global_batch_size=BatchSizes.megatron(16, 16, 2_000, 64),
                        sizes=sizes))  # fmt: skip
    with pytest.raises(ValueError, match="saved under other batch sizes"):
        other.load_state_dict(state, replan=True)
    flat = Stream(Plan(anneal, global_batch_size=64, sizes=sizes))
    with pytest.raises(ValueError, match="saved under other batch sizes"):
        flat.load_state_dict(state, replan=True)
    from_flat = Stream(Plan(_mixture(4), global_batch_size=32, sizes=sizes))
    from_flat.take(10)
    with pytest.raises(ValueError, match="saved under other batch sizes"):
        Stream(plan).load_state_dict(from_flat.state_dict(), replan=True)


def test_megatron_reads_each_step_what_the_plan_gives_it():
    torch = pytest.importorskip("torch")
    from annealmix.torch.megatron import MegatronDataset

    ramp_args = (16, 8, 1_000, 64)
    ramp = BatchSizes.megatron(*ramp_args)
    n, size = 3, 400
    plan = Plan(_mixture(n), global_batch_size=ramp, sizes={f"s{k}": size for k in range(n)})
    sources = {f"s{k}": np.stack([np.full(5, 1000 * k + i) for i in range(size)])
               for k in range(n)}  # fmt: skip
    steps = 60
    data = MegatronDataset(sources, plan, num_steps=steps)
    assert len(data) == ramp.samples_before(steps)
    consumed = 0
    for t, b in enumerate(megatron_sizes(*ramp_args, steps)):  # as Megatron's loop reads
        got = data.__getitems__(list(range(consumed, consumed + b)))
        source_of = torch.stack([g["tokens"][0] for g in got]) // 1000
        a, z = ramp.plan_steps(t), ramp.plan_steps(t + 1)
        want = plan.counts(a, z - a).sum(axis=0)
        assert np.bincount(source_of.numpy(), minlength=n).tolist() == want.tolist()
        assert {data.step_of(i) for i in range(consumed, consumed + b)} == {t}
        consumed += b


RAMPED = {
    "global_batch_size": 64,
    "num_steps": 300,
    "rampup_batch_size": [16, 16, 3000],
    "sources": {"web": {"weight": 0.9, "size": 100_000}, "code": {"weight": 0.1, "size": 50_000}},
    "phases": [{"start_step": 100, "end_step": 250, "weights": {"web": 0.2, "code": 0.8}}],
}


def test_a_config_ramps_and_writes_it_back(tmp_path):
    config = config_from_dict(RAMPED)
    assert config.ramp == BatchSizes.megatron(16, 16, 3000, 64)
    opened = config.open()
    assert opened.plan.batch_sizes == config.ramp
    assert opened.plan_steps == config.ramp.plan_steps(300)
    path = tmp_path / "mix.toml"
    path.write_text(dump_config(config))
    assert load_config(path).open().plan == opened.plan
    listed = config_from_dict({**RAMPED, "rampup_batch_size": None,
                               "batch_sizes": [[0, 16], [40, 64]]})  # fmt: skip
    assert listed.ramp.to_list() == [[0, 16], [40, 64]]


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"batch_sizes": [[0, 16], [9, 64]]}, "rampup_batch_size or batch_sizes, not both"),
        ({"rampup_batch_size": [16, 16]}, r"must be \[start, increment, samples\]"),
        ({"rampup_batch_size": [16, 20, 3000]},
         r"rampup_batch_size = \[16, 20, 3000\]: a ramp from 16 by 20 never lands on "),
        ({"rampup_batch_size": None, "batch_sizes": [[0, 16], [0, 64]]},
         r"batch_sizes = \[\[0, 16\], \[0, 64\]\]: batch sizes\[1\] starts at step 0"),
        ({"rampup_batch_size": None, "batch_sizes": [[0, 16], [9, 32]]},
         "ends at 32 samples a step, global_batch_size is 64"),  # fmt: skip
        ({"rampup_batch_size": None, "batch_sizes": 64}, "list of \\[first step, size\\]"),
    ],
)
def test_bad_ramps_in_a_config_are_refused(changes, match):
    with pytest.raises(ValueError, match=match):
        config_from_dict({**RAMPED, **changes})


def test_preview_shows_the_ramp(tmp_path):
    path = tmp_path / "mix.toml"
    path.write_text(dump_config(config_from_dict(RAMPED)))
    run = [sys.executable, "-m", "annealmix", "preview", str(path)]
    out = subprocess.run(run, capture_output=True, text=True, check=True).stdout
    assert "the global batch ramps from 16 to 64 in 3 changes" in out
    assert "planned in steps of 16" in out
    report = json.loads(subprocess.run([*run, "--json"], capture_output=True, text=True,
                                       check=True).stdout)  # fmt: skip
    ramp = BatchSizes.megatron(16, 16, 3000, 64)
    assert report["batch_sizes"] == ramp.to_list()
    assert report["samples"] == ramp.samples_before(300)
    sizes = {m["step"]: m["global_batch_size"] for m in report["milestones"]}
    assert all(sizes[s] == ramp.size_at(s) for s in sizes) and len(set(sizes.values())) == 4
    samples = sum(row["samples"] for row in report["budget"].values())
    assert samples == ramp.samples_before(300)


@pytest.mark.filterwarnings("ignore:No artists with labels")  # the stackplots are stubbed
def test_plot_bins_the_ramped_run_by_optimizer_step(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import matplotlib.axes

    from annealmix import plotting

    drawn = []
    monkeypatch.setattr(matplotlib.axes.Axes, "stackplot",
                        lambda self, x, y, **kw: drawn.append((np.asarray(x), np.asarray(y))))
    plotting.plot_config(config_from_dict(RAMPED).open(), tmp_path / "mix.png", points=300)
    (xs, weights), (centres, share) = drawn
    assert xs[-1] == 299 and centres.size == 300  # one bin per optimizer step of the 300
    assert np.allclose(share.T, weights.T, atol=1 / 16)  # two sources: a step within one sample
    assert (tmp_path / "mix.png").stat().st_size > 0
