import json

import numpy as np
import pytest
from helpers import assert_resume_equivalent

torch = pytest.importorskip("torch")

from annealmix import Mixture, Phase, Plan  # noqa: E402
from annealmix.torch import (  # noqa: E402
    MixtureBatchSampler,
    MixtureDataLoader,
    loss_by_source,
    mix_losses,
    resolve_rank,
)

MIX = Mixture(
    weights={"web": 2.0, "code": 1.0, "math": 1.0},
    phases=[
        Phase(
            start_step=3, end_step=20, weights={"web": 0, "code": 1, "math": 2}, schedule="linear"
        )
    ],
)
SOURCES = {
    "web": np.arange(300) * 10,
    "code": np.arange(70) * 10 + 1,
    "math": np.arange(50) * 10 + 2,
}
STEPS, BATCH = 16, 24


def plan() -> Plan:
    return Plan(MIX, global_batch_size=BATCH, seed=5, sizes={k: len(v) for k, v in SOURCES.items()})


def loader(sources=SOURCES, **kw) -> MixtureDataLoader:
    kw.setdefault("num_steps", STEPS)
    return MixtureDataLoader(sources, plan(), **kw)


def expected_samples(p: Plan) -> np.ndarray:
    """What every position of every global batch should hold (the sample values)."""
    ref = p.batches(0, STEPS)
    return ref.indices * 10 + ref.sources


class Stream:
    """A generator source: sample n of source k is k * 1000 + n."""

    def __init__(self, k: int) -> None:
        self.k = k

    def __iter__(self):
        n = 0
        while True:
            yield self.k * 1000 + n
            n += 1


def gather(world: int, micro: int, workers: int, sources=SOURCES) -> np.ndarray:
    out = np.full((STEPS, BATCH), -1)
    for rank in range(world):
        dl = loader(sources, rank=rank, world_size=world, micro_batches=micro, num_workers=workers)
        for i, batch in enumerate(dl):
            step, m = divmod(i, micro)
            cols = dl.stream.shard.positions(m)
            assert (out[step, cols] == -1).all(), "two batches share a position"
            assert (batch["source"].numpy() == plan().batch(step).sources[0, cols]).all()
            out[step, cols] = batch["sample"].numpy()
    return out


@pytest.mark.parametrize("workers", [0, 1, 3])
@pytest.mark.parametrize("world", [1, 2, 4, 8])
def test_ranks_and_workers_cover_each_global_batch_once(world, workers):
    assert np.array_equal(gather(world, 1, workers), expected_samples(plan()))


def test_micro_batches_cover_the_rank_share():
    assert np.array_equal(gather(2, 3, 2), expected_samples(plan()))


@pytest.mark.parametrize("workers", [0, 3])
@pytest.mark.parametrize("world", [1, 2])
def test_stream_sources_are_read_in_plan_order(world, workers):
    sources = {"web": Stream(0), "code": Stream(1), "math": SOURCES["math"]}
    p = Plan(MIX, global_batch_size=BATCH, seed=5, sizes={k: len(v) for k, v in SOURCES.items()})
    ref = p.batches(0, STEPS)
    want = np.where(ref.sources == 2, ref.indices * 10 + 2, ref.sources * 1000 + ref.draws)
    with pytest.warns(UserWarning, match="source 'web' is a stream, read in order"):
        got = gather(world, 1, workers, sources)
    assert np.array_equal(got, want)


class LoaderRun:
    """Adapts a loader to the resume helper: advance = next batch, state = the loader's."""

    def __init__(self, workers: int, sources=SOURCES) -> None:
        self.loader = loader(sources, rank=1, world_size=2, micro_batches=2, num_workers=workers)
        self._it = None

    def advance(self):
        if self._it is None:
            self._it = iter(self.loader)
        batch = next(self._it)
        return (batch["source"].tolist(), batch["sample"].tolist())

    def state_dict(self):
        return json.loads(json.dumps(self.loader.state_dict()))

    def load_state_dict(self, state):
        self.loader.load_state_dict(state)


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_resumes_what_the_loop_consumed_despite_prefetch(workers):
    assert_resume_equivalent(lambda: LoaderRun(workers), LoaderRun.advance, total=20, seed=1)


def test_stream_loader_resumes():
    def make():
        return LoaderRun(2, {"web": Stream(0), "code": SOURCES["code"], "math": Stream(2)})

    with pytest.warns(UserWarning):
        assert_resume_equivalent(make, LoaderRun.advance, total=20, seed=2)


def test_a_new_iteration_continues_where_the_loop_stopped():
    dl = loader(num_workers=2)
    first = []
    for i, batch in enumerate(dl):
        first.append(batch["sample"].tolist())
        if i == 4:
            break
    rest = [batch["sample"].tolist() for batch in dl]
    assert len(first) + len(rest) == STEPS
    assert first + rest == expected_samples(plan()).tolist()


def test_stateful_dataloader_resumes_the_sampler():
    sdl = pytest.importorskip("torchdata.stateful_dataloader")
    from annealmix.torch import MixedDataset

    def make():
        sampler = MixtureBatchSampler(plan(), rank=0, world_size=2, num_steps=STEPS)
        dataset = MixedDataset([SOURCES[n] for n in MIX.sources])
        return sdl.StatefulDataLoader(dataset, batch_sampler=sampler, num_workers=2)

    full = [b["sample"].tolist() for b in make()]
    first = make()
    it = iter(first)
    for _ in range(5):
        next(it)
    state = first.state_dict()
    resumed = make()
    resumed.load_state_dict(state)
    assert [b["sample"].tolist() for b in resumed] == full[5:]


def test_mismatched_sources_are_refused():
    with pytest.raises(ValueError, match="do not match the plan's sources"):
        loader({"web": SOURCES["web"], "code": SOURCES["code"]})
    short = dict(SOURCES, code=SOURCES["code"][:60])
    with pytest.raises(
        ValueError, match="'code' holds 60 samples but the plan's size for it is 70"
    ):
        loader(short)
    with pytest.raises(TypeError, match="sets batch_size from the plan"):
        loader(batch_size=4)
    no_sizes = Plan(MIX, global_batch_size=BATCH)
    with pytest.raises(ValueError, match="'web' is random-access but the plan has no sizes"):
        MixtureDataLoader(SOURCES, no_sizes)


def test_resolve_rank_prefers_arguments_then_environment(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "PMI_RANK", "PMI_SIZE", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(var, raising=False)
    assert resolve_rank() == (0, 1)
    monkeypatch.setenv("SLURM_PROCID", "3")
    monkeypatch.setenv("SLURM_NTASKS", "8")
    assert resolve_rank() == (3, 8)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert resolve_rank() == (1, 2)  # torchrun's variables come first
    assert resolve_rank(0, 4) == (0, 4)
    with pytest.raises(ValueError, match="give both rank and world_size"):
        resolve_rank(rank=1)
    monkeypatch.setenv("RANK", "one")
    with pytest.raises(ValueError, match="RANK='one'.* are not integers"):
        resolve_rank()


def test_mix_losses_is_the_posts_gamma_form_and_its_n_source_form():
    lx, ly = torch.tensor(2.0), torch.tensor(4.0)
    assert mix_losses({"X": lx, "Y": ly}, {"X": 0.25, "Y": 0.75}).item() == pytest.approx(3.5)
    w = dict(zip(MIX.sources, MIX.weights_at(10)))
    losses = {n: torch.tensor(float(i + 1)) for i, n in enumerate(MIX.sources)}
    want = sum(w[n] * (i + 1) for i, n in enumerate(MIX.sources)) / sum(w.values())
    assert mix_losses(losses, w).item() == pytest.approx(want)
    with pytest.raises(ValueError, match="no weight for source 'Z'"):
        mix_losses({"Z": lx}, {"X": 1.0})
    with pytest.raises(ValueError, match="sum to 0.0"):
        mix_losses({"X": lx}, {"X": 0.0})


def test_loss_by_source_splits_a_batch_loss_and_keeps_gradients():
    loss = torch.tensor([[1.0, 3.0], [5.0, 5.0], [2.0, 2.0]], requires_grad=True)
    by = loss_by_source(loss, torch.tensor([2, 0, 2]), MIX.sources)
    assert set(by) == {"web", "math"}
    assert by["web"].item() == 5.0 and by["math"].item() == 2.0
    by["math"].backward()
    assert loss.grad[1].abs().sum() == 0 and loss.grad[0].abs().sum() > 0
    with pytest.raises(ValueError, match="reduction='none'"):
        loss_by_source(loss.sum(), torch.tensor([0]), MIX.sources)


def test_torch_api_is_frozen_and_sorted():
    import annealmix.torch as at

    assert at.__all__ == sorted(at.__all__)
    assert at.__all__ == [
        "MixedDataset",
        "MixtureBatchSampler",
        "MixtureDataLoader",
        "MixtureIterableDataset",
        "all_reduce_metrics",
        "collated",
        "loss_by_source",
        "mix_losses",
        "resolve_rank",
    ]


class SamplerRun:
    """The batch sampler under the resume helper: advance = the next keys it yields."""

    def __init__(self) -> None:
        self.sampler = MixtureBatchSampler(plan(), rank=0, world_size=2, micro_batches=3)
        self._it = None

    def advance(self):
        if self._it is None:
            self._it = iter(self.sampler)
        return next(self._it).tolist()

    def state_dict(self):
        return self.sampler.state_dict()

    def load_state_dict(self, state):
        self.sampler.load_state_dict(state)


def test_batch_sampler_resumes():
    assert_resume_equivalent(SamplerRun, SamplerRun.advance, total=30, seed=4)


def test_hugging_face_datasets_map_style_and_streaming():
    datasets = pytest.importorskip("datasets")
    web = datasets.Dataset.from_dict({"x": list(range(300))})  # map-style: len and []
    math = datasets.Dataset.from_dict({"x": [2000 + i for i in range(50)]})

    def gen():
        yield from ({"x": 10_000 + i} for i in range(10**6))

    code = datasets.IterableDataset.from_generator(gen)  # streamed: read in order
    sources = {"web": web, "code": code, "math": math}
    orders = {"web": "shuffle", "code": "sequential", "math": "shuffle"}
    p = Plan(
        MIX,
        global_batch_size=BATCH,
        seed=5,
        sizes={"web": 300, "code": 70, "math": 50},
        order=orders,
    )
    ref = p.batches(0, STEPS)
    want = np.select(
        [ref.sources == 0, ref.sources == 1], [ref.indices, 10_000 + ref.draws], 2000 + ref.indices
    )

    def run(loader):
        return [batch["sample"]["x"].tolist() for batch in loader]

    got = run(MixtureDataLoader(sources, p, num_steps=STEPS))
    assert got == want.tolist()
    first = MixtureDataLoader(sources, p, num_steps=STEPS)
    it = iter(first)
    for _ in range(6):
        next(it)
    resumed = MixtureDataLoader(sources, p, num_steps=STEPS)
    resumed.load_state_dict(first.state_dict())  # the stream skips through its own skip()
    assert run(resumed) == got[6:]


def test_resuming_with_another_worker_count_continues_the_stream():
    full = [b["sample"].tolist() for b in loader(rank=0, world_size=2, num_workers=0)]
    first = loader(rank=0, world_size=2, num_workers=3)
    it = iter(first)
    for _ in range(7):
        next(it)
    state = first.state_dict()
    for workers in (0, 1):
        resumed = loader(rank=0, world_size=2, num_workers=workers)
        resumed.load_state_dict(state)
        assert [b["sample"].tolist() for b in resumed] == full[7:]
