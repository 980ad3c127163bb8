import json
import warnings

import numpy as np
import pytest
from helpers import assert_resume_equivalent

torch = pytest.importorskip("torch")

from annealmix import Mixture, Phase, Plan, Position, Shard, indexed  # noqa: E402
from annealmix import Stream as PlanStream  # noqa: E402
from annealmix._counting import AHEAD, LOOKAHEAD, Targets  # noqa: E402
from annealmix.metrics import step_metrics  # noqa: E402
from annealmix.torch import (  # noqa: E402
    MixtureBatchSampler,
    MixtureDataLoader,
    loss_by_source,
    mix_losses,
    resolve_local_rank,
    resolve_rank,
    resolve_shard,
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


def shard(rank=0, world=1, micro=1) -> Shard:
    return Shard(global_batch_size=BATCH, rank=rank, world_size=world, micro_batches=micro)


def loader(sources=SOURCES, rank=0, world=1, micro=1, p=None, **kw) -> MixtureDataLoader:
    kw.setdefault("num_steps", STEPS)
    return MixtureDataLoader(sources, p or plan(), shard(rank, world, micro), **kw)


def expected_samples(p: Plan) -> np.ndarray:
    """What every position of every global batch should hold (the sample values)."""
    ref = indexed(p, p.batches(0, STEPS))
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
        dl = loader(sources, rank, world, micro, num_workers=workers)
        for i, batch in enumerate(dl):
            step, m = divmod(i, micro)
            cols = dl.shard.positions(m, step)
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
    ref = indexed(p, p.batches(0, STEPS))
    want = np.where(ref.sources == 2, ref.indices * 10 + 2, ref.sources * 1000 + ref.draws)
    with pytest.warns(UserWarning, match="source 'web' is a stream, read in order"):
        got = gather(world, 1, workers, sources)
    assert np.array_equal(got, want)


class LoaderRun:
    """Adapts a loader to the resume helper: advance = next batch, state = the loader's."""

    def __init__(self, workers: int, sources=SOURCES) -> None:
        self.loader = loader(sources, 1, 2, 2, num_workers=workers)
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
        sampler = MixtureBatchSampler(plan(), shard(0, 2), num_steps=STEPS)
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
    with pytest.raises(ValueError, match="num_steps must be >= 0, got -1"):
        loader(num_steps=-1)  # was: a loader that silently yields nothing
    no_sizes = Plan(MIX, global_batch_size=BATCH)
    with pytest.raises(ValueError, match="'web' is random-access but the plan has no sizes"):
        MixtureDataLoader(SOURCES, no_sizes)


LAUNCHER_VARS = (
    "RANK", "WORLD_SIZE", "LOCAL_RANK", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID",
    "PALS_RANKID", "PALS_LOCAL_RANKID", "PMI_LOCAL_RANK", "OMPI_COMM_WORLD_RANK",
    "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS",
    "SLURM_LOCALID",
)  # fmt: skip


@pytest.mark.parametrize(
    ("env", "rank", "local"),
    [
        ({}, (0, 1), 0),
        ({"SLURM_PROCID": 3, "SLURM_NTASKS": 8, "SLURM_LOCALID": 1}, (3, 8), 1),
        ({"OMPI_COMM_WORLD_RANK": 5, "OMPI_COMM_WORLD_SIZE": 6,
          "OMPI_COMM_WORLD_LOCAL_RANK": 2}, (5, 6), 2),
        ({"PALS_RANKID": 4, "PMI_SIZE": 12, "PALS_LOCAL_RANKID": 0}, (4, 12), 0),
        ({"PMI_RANK": 7, "PMI_SIZE": 12, "MPI_LOCALRANKID": 3}, (7, 12), 3),
        # Cray PALS (Aurora, Polaris): PMI_RANK without MPI_LOCALRANKID; the local rank
        # was 0 on every rank, so every rank took device 0
        ({"PMI_RANK": 7, "PMI_SIZE": 12, "PALS_RANKID": 7, "PALS_LOCAL_RANKID": 3}, (7, 12), 3),
        ({"PMI_RANK": 5, "PMI_SIZE": 12, "PMI_LOCAL_RANK": 1}, (5, 12), 1),
        ({"RANK": 1, "WORLD_SIZE": 2, "LOCAL_RANK": 1, "PMI_RANK": 1, "PMI_SIZE": 2,
          "MPI_LOCALRANKID": 1}, (1, 2), 1),  # agreeing launchers: torchrun's first
        ({"RANK": 5, "WORLD_SIZE": 8, "LOCAL_RANK": 1, "SLURM_PROCID": 1, "SLURM_NTASKS": 2,
          "SLURM_LOCALID": 0}, (5, 8), 1),  # torchrun started by srun: a wider world, no warning
        ({"RANK": 0, "WORLD_SIZE": 1}, (0, 1), 0),  # a single process needs no local rank
    ],
)  # fmt: skip
def test_resolve_rank_reads_each_launcher(monkeypatch, env, rank, local):
    for var in LAUNCHER_VARS:
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, str(value))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # agreeing variables: no warning
        assert resolve_rank() == rank and resolve_local_rank() == local


def test_resolve_rank_prefers_arguments_and_refuses_what_the_environment_gets_wrong(monkeypatch):
    for var in LAUNCHER_VARS:
        monkeypatch.delenv(var, raising=False)
    for var, value in {"PMI_RANK": 1, "PMI_SIZE": 2, "MPI_LOCALRANKID": 1}.items():
        monkeypatch.setenv(var, str(value))
    monkeypatch.setenv("RANK", "0")  # a leftover of a one-process job script
    monkeypatch.setenv("WORLD_SIZE", "1")
    with pytest.warns(UserWarning, match="disagree: RANK=0 WORLD_SIZE=1 but PMI_RANK=1 PMI_SIZE=2"):
        assert resolve_rank() == (0, 1)
    assert resolve_rank(0, 4) == (0, 4)
    with pytest.raises(ValueError, match="give both rank and world_size"):
        resolve_rank(rank=1)
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.delenv("MPI_LOCALRANKID")
    with pytest.raises(ValueError, match="PMI_RANK=1 PMI_SIZE=2 but no local rank.*device 0.*"
                       "export LOCAL_RANK"):  # fmt: skip
        resolve_local_rank()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "one")
    with pytest.raises(ValueError, match="RANK='one' is not an integer.*shard=annealmix.Shard"):
        resolve_rank()
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match="RANK=2 is not a rank of WORLD_SIZE=2.*pass shard="):
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
        "SourceLosses",
        "all_reduce_metrics",
        "collated",
        "loss_by_source",
        "mix_losses",
        "resolve_local_rank",
        "resolve_rank",
        "resolve_shard",
    ]


class SamplerRun:
    """The batch sampler under the resume helper: advance = the next keys it yields."""

    def __init__(self) -> None:
        self.sampler = MixtureBatchSampler(plan(), shard(0, 2, 3))
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


def _hf_sources(num_shards: int):
    datasets = pytest.importorskip("datasets")
    web = datasets.Dataset.from_dict({"x": list(range(300))})  # map-style: len and []
    math = datasets.Dataset.from_dict({"x": [2000 + i for i in range(50)]})

    def gen(shards):
        for shard in shards:  # items numbered across shards, in shard order
            yield from ({"x": 10_000 + shard * 1000 + i} for i in range(1000))

    # Streamed, read in order; a dataset with several shards is what HF splits
    # between DataLoader workers when left to itself.
    code = datasets.IterableDataset.from_generator(
        gen, gen_kwargs={"shards": list(range(num_shards))}
    )
    assert code.num_shards == num_shards
    return {"web": web, "code": code, "math": math}


@pytest.mark.parametrize("workers", [0, 1, 2, 3])
@pytest.mark.parametrize("num_shards", [1, 4])
def test_hugging_face_map_style_and_streaming_sources_are_exact_with_workers(workers, num_shards):
    sources = _hf_sources(num_shards)
    orders = {"web": "shuffle", "code": "sequential", "math": "shuffle"}
    p = Plan(MIX, global_batch_size=BATCH, seed=5, sizes={"web": 300, "code": 70, "math": 50},
             order=orders)  # fmt: skip
    ref = indexed(p, p.batches(0, STEPS))
    want = np.select(
        [ref.sources == 0, ref.sources == 1], [ref.indices, 10_000 + ref.draws], 2000 + ref.indices
    )

    def run(dl):
        return [batch["sample"]["x"].tolist() for batch in dl]

    def make():
        return MixtureDataLoader(sources, p, shard(), num_steps=STEPS, num_workers=workers)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # read in full by every worker: said once, tested below
        got = run(make())
        assert got == want.tolist()
        first = make()
        it = iter(first)
        for _ in range(6):
            next(it)
        resumed = make()
        resumed.load_state_dict(first.state_dict())  # the stream skips through its own skip()
        assert run(resumed) == got[6:]


def test_a_stream_read_by_many_workers_says_what_it_costs():
    sources = {"web": Stream(0), "code": SOURCES["code"], "math": SOURCES["math"]}
    with pytest.warns(UserWarning, match="read in full by each of the 2 rank\\(s\\) x 3 worker"):
        loader(sources, 0, 2, num_workers=3)
    with pytest.raises(ValueError, match="persistent_workers=True cannot be used with stream"):
        loader(sources, num_workers=1, persistent_workers=True)


def test_a_generator_source_iterated_again_after_a_break_loses_nothing():
    def numbers(k):
        n = 0
        while True:
            yield k * 1000 + n
            n += 1

    sources = {"web": numbers(0), "code": SOURCES["code"], "math": numbers(2)}
    p = plan()
    ref = indexed(p, p.batches(0, STEPS))
    want = np.where(ref.sources == 1, ref.indices * 10 + 1, ref.sources * 1000 + ref.draws)
    with pytest.warns(UserWarning, match="is a stream, read in order"):
        dl = loader(sources, 0, 1, 2, p=p)  # two micro-batches: a break can fall inside a step
    got = []
    for i, batch in enumerate(dl):
        got.append(batch)
        if i in (2, 9):
            break
    for i, batch in enumerate(dl):
        got.append(batch)
        if i == 3:
            break
    got += list(dl)
    assert len(got) == 2 * STEPS
    samples = np.concatenate([b["sample"].numpy() for b in got]).reshape(STEPS, BATCH)
    assert np.array_equal(samples, want)


def test_state_dict_and_metrics_after_a_deep_resume_do_not_replay(monkeypatch):
    names = [f"s{i}" for i in range(8)]
    mix = Mixture(weights=dict.fromkeys(names, 1.0),
                  phases=[Phase(start_step=0, end_step=10**6, weights={"s0": 1})])  # fmt: skip
    p = Plan(mix, global_batch_size=64, sizes=dict.fromkeys(names, 10**6))
    sources = {n: np.arange(10**6) for n in names}
    step = 200_000
    at = PlanStream(p)
    at.seek(Position(step, 0, p.consumed(step)))
    state = at.state_dict()
    p = p.replace()  # a plan that has not replayed yet
    dl = MixtureDataLoader(sources, p, Shard(global_batch_size=64), num_steps=step + 10)
    dl.load_state_dict(state)  # checks the counts: the one replay

    rows = []  # steps whose weights are computed: a replay computes every one before `step`
    compute = Targets._compute
    monkeypatch.setattr(
        Targets, "_compute", lambda t, a, b, out=None: rows.append(b - a) or compute(t, a, b, out)
    )
    assert dl.state_dict() == state
    assert dl.metrics(step)["mix/samples/s0"] > 0
    batches = iter(dl)
    next(batches)
    assert dl.state_dict()["step"] == step + 1 and dl.metrics(step)["mix/count/s1"] >= 0
    assert sum(rows) < 3 * (AHEAD + LOOKAHEAD), sum(rows)  # a chunk and its look-ahead, not 2e5


def test_loader_metrics_are_the_plans():
    dl = loader(num_workers=2)
    for step, _ in enumerate(dl):
        assert dl.metrics(step) == step_metrics(plan(), step)


def test_the_shard_is_found_once_at_the_edge(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert resolve_shard(24, micro_batches=2) == Shard(global_batch_size=24, rank=1, world_size=4,
                                                        micro_batches=2)  # fmt: skip
    dl = MixtureDataLoader(SOURCES, plan(), num_steps=2)
    assert dl.shard.rank == 1 and dl.shard.world_size == 4


def test_resuming_with_another_worker_count_continues_the_stream():
    full = [b["sample"].tolist() for b in loader(world=2, num_workers=0)]
    first = loader(world=2, num_workers=3)
    it = iter(first)
    for _ in range(7):
        next(it)
    state = first.state_dict()
    for workers in (0, 1):
        resumed = loader(world=2, num_workers=workers)
        resumed.load_state_dict(state)
        assert [b["sample"].tolist() for b in resumed] == full[7:]


@pytest.mark.parametrize("workers", [0, 2])
def test_a_collate_function_of_the_users_gets_the_samples_and_resume_still_holds(workers):
    def collate(items):  # per-sample dicts in, whatever the loop wants out
        return [(item["source"], int(item["sample"])) for item in items]

    full = list(loader(num_workers=workers, collate_fn=collate))
    want = expected_samples(plan())
    assert [[v for _, v in b] for b in full] == want.tolist()
    first = loader(num_workers=workers, collate_fn=collate)
    it = iter(first)
    for _ in range(5):
        next(it)
    resumed = loader(num_workers=workers, collate_fn=collate)
    resumed.load_state_dict(first.state_dict())
    assert list(resumed) == full[5:]


def test_an_iterable_dataset_with_a_length_is_still_a_stream():
    from annealmix.sources import is_stream

    class Sized(torch.utils.data.IterableDataset):  # defined outside torch, with __len__
        def __len__(self):
            return 5

        def __iter__(self):
            return iter(range(5))

    assert is_stream(Sized()) and not is_stream(list(range(5)))


def test_seek_step_goes_on_as_a_run_that_handed_out_every_step_before():
    srcs = {n: list(range(k * 1000, k * 1000 + 300)) for k, n in enumerate(MIX.sources)}
    p = Plan(MIX, global_batch_size=8, sizes={n: 300 for n in MIX.sources})
    ran = MixtureDataLoader(srcs, p, num_steps=20)
    batches = [b["sample"].tolist() for b in ran]
    resumed = MixtureDataLoader(srcs, p, num_steps=20)
    resumed.seek_step(12)
    assert resumed.step == 12 and [b["sample"].tolist() for b in resumed] == batches[12:]
    with pytest.raises(ValueError, match="step 21 is past the loader's num_steps 20"):
        resumed.seek_step(21)
