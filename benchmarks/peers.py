"""annealmix against the data-mixing layers users would pick instead, on the same work.

Every system mixes the same in-memory integer sources (source ``k`` holds the values
``k * 10**9 + i``, so a sample names its source) at the same weights (``w_k``
proportional to ``k + 1``), and is asked for the same stream of samples. Each runs
in a fresh process, so that its peak memory is its own. Measured per system:

- samples per second served, and the ratio of annealmix exact mode to it;
- setup time (building the mixer; writing MosaicML's shards is data preparation and
  not counted);
- peak memory: the largest resident set during setup and serving, above the
  process's size after its imports;
- mix error: the standard deviation over consecutive batches of B samples of the
  realized share of a source minus its weight (the largest over sources), over the
  first 10^6 samples (before any source can run out);
- resume: what the system must redo to continue at sample 10^7, measured where it
  is a lookup, and from the measured serving rate where it is a replay.

The harness behind ``bench_peers.py``; it lives beside the benchmarks, not in the
library. A peer that is not installed is skipped with a note. Peers come with the ``bench``
extra. Schedules: only annealmix and the post's loop can change weights during a
run; every peer here takes fixed weights, so the schedule rows list only those two.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import itertools
import multiprocessing as mp
import resource
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["SYSTEMS", "Result", "headline", "report", "run", "table", "versions"]

RESUME_AT = 10**7
_MDS_SIZE = 200_000
_HF_SIZE = 200_000
_STUB_NOTE = "torchvision stubbed: no CPU build here, and only streaming's vision datasets use it"


@dataclass(frozen=True, kw_only=True, slots=True)
class Result:
    system: str
    samples_per_s: float | None = None
    setup_s: float | None = None
    peak_mb: float | None = None
    mix_error: float | None = None
    resume: str = ""
    note: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class Work:
    num_sources: int
    samples: int
    batch: int = 1024
    size: int = 10**6  # samples per source
    schedule: bool = False

    @property
    def weights(self) -> np.ndarray:
        w = np.arange(1, self.num_sources + 1, dtype=np.float64)
        return w / w.sum()

    def table(self) -> np.ndarray:
        k = np.arange(self.num_sources, dtype=np.int64)[:, None] * 10**9
        return k + np.arange(self.size, dtype=np.int64)[None, :]

    def weights_at(self, batches: int) -> np.ndarray:
        """Each batch's target weights, shape (batches, N): fixed, or the cosine move
        from ``weights`` to its reverse over ``samples // batch`` steps."""
        if not self.schedule:
            return np.broadcast_to(self.weights, (batches, self.num_sources))
        steps = max(1, self.samples // self.batch)
        t = np.minimum(np.arange(batches) / steps, 1.0)[:, None]
        g = 0.5 * (1 - np.cos(np.pi * t))
        return (1 - g) * self.weights + g * self.weights[::-1]


def _mix_error(values: np.ndarray, work: Work) -> float:
    """Largest over sources of the std over batches of (share in batch - its weight)."""
    sources = np.asarray(values, dtype=np.int64)[: work.size] // 10**9  # none has run dry yet
    n = len(sources) // work.batch * work.batch
    per_batch = sources[:n].reshape(-1, work.batch)
    target = work.weights_at(per_batch.shape[0])
    return max(
        float(np.std((per_batch == k).mean(axis=1) - target[:, k])) for k in range(work.num_sources)
    )


# -- systems: each returns (setup seconds, an iterator of value arrays, resume text) --------


def _chunks(items: Any, size: int, field: str | None = None) -> Iterator[np.ndarray]:
    """A per-sample iterable served as arrays of ``size`` values, until it runs out."""
    it = iter(items)
    if field is not None:
        it = (x[field] for x in it)
    while True:
        chunk = np.fromiter(itertools.islice(it, size), dtype=np.int64)
        if not chunk.size:  # the peer's sources ran out
            return
        yield chunk


def _annealmix(mode: str, order: str) -> Callable[[Work], Any]:
    def make(work: Work):
        from annealmix import Mixture, Phase, Plan, Position, Stream

        names = [f"s{k}" for k in range(work.num_sources)]
        weights = dict(zip(names, work.weights.tolist()))
        phases = []
        if work.schedule:
            end = dict(zip(names, work.weights[::-1].tolist()))
            steps = work.samples // work.batch
            phases = [Phase(start_step=0, end_step=steps, weights=end, schedule="cosine")]
        start = time.perf_counter()
        table = work.table()
        plan = Plan(
            Mixture(weights=weights, phases=phases),
            global_batch_size=work.batch,
            mode=mode,
            sizes=dict.fromkeys(names, work.size),
            order=order,
        )
        setup = time.perf_counter() - start

        flat = table.ravel()

        def serve() -> Iterator[np.ndarray]:
            it = Stream(plan)
            while True:
                b = it.take(64)
                yield flat.take(b.sources.astype(np.int64) * work.size + b.indices).ravel()

        # What a checkpoint at sample 10^7 holds: the step and the per-source counts.
        step = RESUME_AT // work.batch
        saved = Stream(plan)
        saved.seek(Position(step, 0, plan.consumed(step)))
        state = saved.state_dict()
        t0 = time.perf_counter()
        fresh = Plan(
            plan.mixture,
            global_batch_size=work.batch,
            mode=mode,
            sizes=dict.fromkeys(names, work.size),
            order=order,
        )
        it = Stream(fresh)
        it.load_state_dict(state)  # checks the counts against the plan, then serves
        b = it.take(1)
        flat.take(b.sources.astype(np.int64) * work.size + b.indices)
        spent = time.perf_counter() - t0
        return setup, serve(), f"nothing: next batch from the saved state in {spent:.3f} s"

    return make


def _post_loop(work: Work):
    import bisect
    import math
    import random

    table = work.table()
    start = time.perf_counter()
    rng = random.Random(0)
    cum = np.cumsum(work.weights).tolist()
    setup = time.perf_counter() - start
    steps = max(1, work.samples // work.batch)

    def serve() -> Iterator[np.ndarray]:
        rows = table.tolist()
        t = 0
        while True:
            cum_t = cum
            if work.schedule:  # the post's gamma_t (cosine), once per step
                g = 0.5 * (1 - math.cos(math.pi * min(1.0, t / steps)))
                w = (1 - g) * work.weights + g * work.weights[::-1]
                cum_t = np.cumsum(w).tolist()
            out = []
            for _ in range(work.batch):
                k = min(bisect.bisect(cum_t, rng.random()), work.num_sources - 1)
                out.append(rows[k][rng.randrange(work.size)])
            t += 1
            yield np.array(out)

    return setup, serve(), "replay: every earlier draw of the RNG"


def _hf(streaming: bool):
    def make(work: Work):
        import datasets

        datasets.disable_progress_bars()
        table = work.table()[:, :_HF_SIZE]  # interleave's index is built in Python: keep it small
        start = time.perf_counter()
        parts = [datasets.Dataset.from_dict({"x": row}) for row in table]
        if streaming:
            parts = [p.to_iterable_dataset() for p in parts]
        mixed = datasets.interleave_datasets(parts, probabilities=work.weights.tolist(), seed=0)
        setup = time.perf_counter() - start

        def serve() -> Iterator[np.ndarray]:
            for batch in mixed.iter(batch_size=work.batch):
                yield np.asarray(batch["x"])

        how = (
            "replay: the stream is re-read to the position"
            if streaming
            else "stored index: interleave builds the whole epoch's index at setup "
            f"({_HF_SIZE:,} samples per source; setup grows with them)"
        )
        return setup, serve(), how

    return make


def _torchdata(work: Work):
    from torchdata.nodes import IterableWrapper, Loader, MultiNodeWeightedSampler

    table = work.table()
    start = time.perf_counter()
    nodes = {f"s{k}": IterableWrapper(table[k].tolist()) for k in range(work.num_sources)}
    weights = {f"s{k}": float(w) for k, w in enumerate(work.weights)}
    loader = Loader(MultiNodeWeightedSampler(nodes, weights, seed=0))
    setup = time.perf_counter() - start

    how = "replay: its state restores each source node by fast-forwarding"
    return setup, _chunks(loader, work.batch), how


def _stub_torchvision() -> str:
    """streaming imports two torchvision names for its vision datasets; where torchvision
    cannot load (no CPU build here), stand-ins let its text path import."""
    try:
        import torchvision  # noqa: F401

        return "" if not getattr(torchvision, "_annealmix_stub", False) else _STUB_NOTE
    except Exception:  # noqa: BLE001 - any failure: the compiled ops did not load
        for name in [m for m in sys.modules if m.startswith("torchvision")]:
            del sys.modules[name]
    root = types.ModuleType("torchvision")
    datasets_ = types.ModuleType("torchvision.datasets")
    transforms = types.ModuleType("torchvision.transforms")
    functional = types.ModuleType("torchvision.transforms.functional")
    for module in (root, datasets_, transforms, functional):
        module.__spec__ = importlib.machinery.ModuleSpec(module.__name__, None)
    datasets_.VisionDataset = type("VisionDataset", (), {})
    datasets_.CIFAR10 = type("CIFAR10", (), {})
    functional.to_tensor = lambda x: x
    root.datasets, root.transforms, transforms.functional = datasets_, transforms, functional
    sys.modules.update(
        {
            "torchvision": root,
            "torchvision.datasets": datasets_,
            "torchvision.transforms": transforms,
            "torchvision.transforms.functional": functional,
        }
    )
    root._annealmix_stub = True
    return _STUB_NOTE


def _mosaic(work: Work):
    note = _stub_torchvision()  # already done before the import; returns the note again
    from streaming import MDSWriter, Stream, StreamingDataset

    folder = tempfile.mkdtemp(prefix="annealmix-mds-")
    table = work.table()[:, :_MDS_SIZE]  # shards are written sample by sample: keep them small
    for k in range(work.num_sources):
        with MDSWriter(out=f"{folder}/s{k}", columns={"x": "int64"}, size_limit=1 << 24) as out:
            for value in table[k].tolist():
                out.write({"x": value})
    start = time.perf_counter()
    streams = [
        Stream(local=f"{folder}/s{k}", proportion=float(w)) for k, w in enumerate(work.weights)
    ]
    ds = StreamingDataset(streams=streams, batch_size=work.batch, shuffle=True, shuffle_seed=0)
    setup = time.perf_counter() - start

    how = "a rebuilt epoch: resuming re-derives the epoch's sample order (cost grows with data)"
    note = f"{_MDS_SIZE:,} samples per source" + ("; " + note if note else "")
    return setup, _chunks(ds, work.batch, "x"), f"{how} ({note})"


def _lhotse(work: Work):
    from lhotse.lazy import LazyIteratorMultiplexer

    table = work.table()
    start = time.perf_counter()
    mux = LazyIteratorMultiplexer(
        *[table[k].tolist() for k in range(work.num_sources)], weights=work.weights.tolist(), seed=0
    )
    setup = time.perf_counter() - start

    return setup, _chunks(mux, work.batch), "replay: the multiplexer re-draws from the start"


def _megatron(work: Work):
    from megatron.core.datasets import helpers  # type: ignore[import-not-found]

    table = work.table()
    n = work.samples
    dataset_index = np.zeros(n, dtype=np.int16)
    sample_index = np.zeros(n, dtype=np.int64)
    setup = float("inf")
    for _ in range(3):  # best of 3, like the annealmix figure below
        start = time.perf_counter()
        helpers.build_blending_indices(
            dataset_index, sample_index, work.weights, work.num_sources, n, False
        )
        setup = min(setup, time.perf_counter() - start)

    def serve() -> Iterator[np.ndarray]:
        for a in range(0, n, work.batch * 64):
            s = dataset_index[a : a + work.batch * 64].astype(np.intp)
            yield table[s, sample_index[a : a + work.batch * 64] % work.size]

    from annealmix import Mixture, Plan

    plan = Plan(
        Mixture(weights={f"s{k}": float(w) for k, w in enumerate(work.weights)}),
        global_batch_size=work.batch,
    )
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        plan.replace().batches(0, n // work.batch)  # fresh: a plan keeps its replays
        best = min(best, time.perf_counter() - t0)
    pairs = (n // work.batch) * work.batch / best
    how = (
        "stored index: 10 bytes per sample, built for all samples before the first one. "
        f"Rate = index entries built per second; annealmix exact makes (source, draw) pairs "
        f"at {pairs / 1e6:.1f} M/s here ({pairs * setup / n:.2f}x)"
    )
    return setup, serve(), how


SYSTEMS: dict[str, tuple[Callable[[Work], Any], str]] = {
    "annealmix exact, shuffle": (_annealmix("exact", "shuffle"), ""),
    "annealmix exact, replacement": (_annealmix("exact", "replacement"), ""),
    "annealmix random, shuffle": (_annealmix("random", "shuffle"), ""),
    "annealmix random, replacement": (_annealmix("random", "replacement"), ""),
    "post-style Python loop": (_post_loop, ""),
    "HF interleave_datasets (map-style)": (_hf(False), "datasets"),
    "HF interleave_datasets (streaming)": (_hf(True), "datasets"),
    "torchdata MultiNodeWeightedSampler": (_torchdata, "torchdata"),
    "MosaicML StreamingDataset (Stream proportion)": (_mosaic, "streaming"),
    "lhotse mux (LazyIteratorMultiplexer)": (_lhotse, "lhotse"),
    "Megatron-core build_blending_indices": (_megatron, "megatron.core"),
}
SCHEDULE_SYSTEMS = (
    "annealmix exact, shuffle",
    "annealmix random, shuffle",
    "post-style Python loop",
)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _measure(name: str, work: Work, budget_s: float) -> dict[str, Any]:
    make, module = SYSTEMS[name]
    if module:  # imported before the baseline: memory counts the work, not the imports
        if importlib.util.find_spec(module.split(".")[0]) is None:
            return asdict(Result(system=name, note=f"skipped: {module} is not installed"))
        if module == "streaming":
            _stub_torchvision()
        try:
            importlib.import_module(module)
        except Exception as err:  # noqa: BLE001 - any import failure means "not available"
            return asdict(Result(system=name, note=f"skipped: {module} does not import ({err})"))
    base = _rss_mb()
    try:
        setup, stream, resume = make(work)
    except Exception as err:  # noqa: BLE001 - a peer that fails is reported, not fatal
        return asdict(Result(system=name, note=f"failed: {type(err).__name__}: {err}"[:200]))
    got, chunks = 0, []
    start = time.perf_counter()
    for chunk in stream:
        chunks.append(chunk)
        got += len(chunk)
        if got >= work.samples or time.perf_counter() - start > budget_s:
            break
    spent = time.perf_counter() - start
    values = np.concatenate(chunks)[: work.samples]
    rate = got / spent
    if name.startswith("Megatron"):  # an index builder: its rate is the index it builds
        rate = work.samples / setup
    if resume.startswith("replay"):
        resume += f" (about {RESUME_AT / rate:,.0f} s at its measured rate)"
    return asdict(
        Result(
            system=name,
            samples_per_s=rate,
            setup_s=setup,
            peak_mb=max(0.0, _rss_mb() - base),
            mix_error=_mix_error(values, work),
            resume=resume,
        )
    )


def _child(name: str, work: Work, budget_s: float, queue: Any) -> None:
    try:
        queue.put(_measure(name, work, budget_s))
    except BaseException as err:  # noqa: BLE001 - report, never leave the parent waiting
        queue.put(asdict(Result(system=name, note=f"failed: {type(err).__name__}: {err}"[:200])))


def run(
    num_sources: int,
    samples: int,
    *,
    schedule: bool = False,
    budget_s: float = 20.0,
    systems: list[str] | None = None,
) -> list[Result]:
    """Measure every system (each in a fresh process) on one work setting."""
    work = Work(num_sources=num_sources, samples=samples, schedule=schedule)
    names = systems or (list(SCHEDULE_SYSTEMS) if schedule else list(SYSTEMS))
    ctx = mp.get_context("spawn")
    out = []
    for name in names:
        queue = ctx.Queue()
        proc = ctx.Process(target=_child, args=(name, work, budget_s, queue))
        proc.start()
        result, deadline = None, time.perf_counter() + budget_s * 4 + 300
        while result is None and time.perf_counter() < deadline:
            try:
                result = queue.get(timeout=1.0)
            except Exception:  # noqa: BLE001 - queue.Empty: look again, unless it died
                if not proc.is_alive() and queue.empty():
                    break
        if result is None:
            result = asdict(Result(system=name, note="failed: the process gave no result"))
        proc.join(timeout=30)
        if proc.is_alive():
            proc.kill()
        out.append(Result(**result))
        print(f"  {name}: {_rate(out[-1])}", file=sys.stderr, flush=True)
    return out


def _rate(r: Result) -> str:
    return r.note if r.samples_per_s is None else f"{r.samples_per_s / 1e6:.3g} M/s"


def table(results: list[Result], title: str) -> str:
    """A Markdown table with each system's ratio to annealmix exact mode."""
    ref = next((r.samples_per_s for r in results if r.system.startswith("annealmix exact")), None)
    lines = [
        f"**{title}**",
        "",
        "| system | samples/s | annealmix exact / it | setup | peak memory | mix error "
        "(std of per-batch share) | resume at sample 10^7 |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if r.samples_per_s is None:
            lines.append(f"| {r.system} | {r.note} | | | | | |")
            continue
        ratio = f"{ref / r.samples_per_s:.1f}x" if ref else "-"
        error = "-" if r.mix_error is None else f"{r.mix_error:.4f}"
        lines.append(
            f"| {r.system} | {r.samples_per_s / 1e6:.3g} M | {ratio} | {r.setup_s:.2f} s "
            f"| {r.peak_mb:.0f} MB | {error} | {r.resume}{'; ' + r.note if r.note else ''} |"
        )
    return "\n".join(lines)


def versions() -> str:
    """The installed versions of annealmix's peers, for the results file."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for dist in ("torch", "datasets", "torchdata", "mosaicml-streaming", "lhotse", "megatron-core"):
        try:
            out.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            out.append(f"{dist} not installed")
    return ", ".join(out)


def headline(small: list[Result], large: list[Result], sizes: tuple[int, int]) -> str:
    """One row per system over two source counts: the README's summary table."""
    a, b = sizes
    lines = [
        f"| system | {a} sources | {b} sources | annealmix exact / it ({a} / {b}) "
        f"| mix error ({b}) | peak memory ({b}) | resume at sample 10^7 |",
        "|---|---|---|---|---|---|---|",
    ]
    ref = [
        next(r.samples_per_s for r in rs if r.system.startswith("annealmix exact"))
        for rs in (small, large)
    ]
    for x, y in zip(small, large):
        if x.samples_per_s is None or y.samples_per_s is None:
            lines.append(f"| {x.system} | {x.note or y.note} | | | | | |")
            continue
        resume = y.resume.split(". Rate")[0].split(" (")[0]
        lines.append(
            f"| {x.system} | {x.samples_per_s / 1e6:.3g} M/s | {y.samples_per_s / 1e6:.3g} M/s "
            f"| {ref[0] / x.samples_per_s:.1f}x / {ref[1] / y.samples_per_s:.1f}x "
            f"| {y.mix_error:.4f} | {y.peak_mb:.0f} MB | {resume} |"
        )
    return "\n".join(lines)


def report(
    sources: list[int], samples: int, budget_s: float, systems: list[str] | None = None
) -> str:
    """Every table: fixed weights for each source count, then the cosine schedule;
    with two source counts, a summary table first."""
    parts, runs = [], []
    for n in sources:
        print(f"{n} sources, fixed weights:", file=sys.stderr)
        results = run(n, samples, budget_s=budget_s, systems=systems)
        runs.append(results)
        parts.append(table(results, f"{n} sources, fixed weights"))
    scheduled = [s for s in SCHEDULE_SYSTEMS if systems is None or s in systems]
    if scheduled:
        n = sources[0]
        print(f"{n} sources, cosine schedule:", file=sys.stderr)
        title = f"{n} sources, cosine schedule (only these can follow one)"
        parts.append(
            table(run(n, samples, schedule=True, budget_s=budget_s, systems=scheduled), title)
        )
    if len(runs) == 2:
        summary = headline(runs[0], runs[1], (sources[0], sources[1]))
        parts.insert(0, "**Summary**\n\n" + summary)
    return "\n\n".join(parts)
