"""Plan throughput against named baselines, side by side in one process.

    python benchmarks/bench_plan.py [--steps 2000] [--out benchmarks/results/FILE.md]

Measures, at global batch size 1024 with a cosine anneal over the measured steps:
- (source, draw) pairs per second of the exact and random plans, for 2, 8, 64 sources;
- (source, sample index) pairs per second with the without-replacement shuffle;
- a per-sample Python loop like the post's ``MixtureSampler`` (``random.Random``);
- Megatron-core's C++ ``build_blending_indices`` on the same fixed weights, when the
  ``bench`` extra is installed (skipped with a note otherwise);
- the time to look up step 10^6 from a fresh plan, the anneal spanning all 10^6 steps
  (the worst case: every step's weights differ);
- serving: a ``Stream`` with shuffled indices asked for 1, 8 or 64 steps at a time
  (what loaders ask), samples per second for 2, 8 and 64 sources at fixed weights
  proportional to 1..N, and 2 sources against 64 (goal: within 2x);
- cold lookups: ``Plan(...).consumed(10**6)`` from a fresh plan, with constant
  weights (1..N, and 16..N+15 where every source gets a sample per step), an
  anneal over the last 20% of 10^6 steps, and an anneal over every step; the last
  also on one thread and without the compiled kernels (numpy only, no ``fast``
  extra); beside them, for the same fixed weights, a Fast-LLM-style on-the-fly
  lookup of the counts before sample 10^6 x B, and Megatron's C++ index built
  over 10^4 steps (10^6 steps would need a 10 GB index);
- the kernels' first-call compile time in a fresh process with an empty cache,
  and with the cache filled.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager

import numpy as np
from _machine import describe

from annealmix import Mixture, Phase, Plan, Stream, indexed
from annealmix import _compiled as _kernels

B = 1024


def mixture(n: int, steps: int) -> Mixture:
    start = {f"s{i}": 1.0 + i for i in range(n)}
    end = {f"s{i}": float(n - i) for i in range(n)}
    return Mixture(
        weights=start, phases=[Phase(start_step=0, end_step=steps, weights=end, schedule="cosine")]
    )


def best_of(fn, repeat: int = 3, warm: bool = True) -> float:
    """The best of ``repeat`` timed calls, after one untimed call when ``warm``.

    The warm-up matters: the first calls of any system that allocates its output
    pay the page faults of fresh memory (up to 2x here) until the allocator keeps
    its large blocks; Megatron's output arrays are allocated once, outside its
    timing, so every system is timed in the same steady state.
    """
    if warm:
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def post_loop(n: int, samples: int) -> float:
    """One Python iteration per sample, as the post's sampler does (two sources or N)."""
    rng = random.Random(0)
    weights = [1.0 + i for i in range(n)]
    cum = np.cumsum(weights / np.sum(weights)).tolist()
    size = 1_000_000

    def run():
        for _ in range(samples):
            u = rng.random()
            k = next(i for i, c in enumerate(cum) if u < c)
            rng.randrange(size)
            del k

    return samples / best_of(run, 1, warm=False)


def megatron(n: int, samples: int) -> float | str:
    try:
        from megatron.core.datasets import helpers  # type: ignore[import-not-found]
    except Exception as err:  # noqa: BLE001 - any import failure means "not available"
        return f"skipped: megatron-core not importable ({type(err).__name__})"
    weights = np.array([1.0 + i for i in range(n)])
    weights /= weights.sum()
    idx = np.zeros(samples, dtype=np.int16)
    sample_idx = np.zeros(samples, dtype=np.int64)
    return samples / best_of(
        lambda: helpers.build_blending_indices(idx, sample_idx, weights, n, samples, False)
    )


def serving(n: int, steps: int, budget: float = 1.0) -> float:
    """Samples per second from ``Stream.take(steps)`` over a plan with sizes (best of 3)."""
    names = [f"s{i}" for i in range(n)]
    plan = Plan(
        Mixture(weights={x: 1.0 + i for i, x in enumerate(names)}),
        global_batch_size=B,
        sizes=dict.fromkeys(names, 10**9),
    )
    best = 0.0
    for _ in range(3):
        stream = Stream(plan)
        stream.take(steps)  # warm
        start, served = time.perf_counter(), 0
        while time.perf_counter() - start < budget / 3:
            served += stream.take(steps).sources.size
        best = max(best, served / (time.perf_counter() - start))
    return best


@contextmanager
def environment(name: str, value: str):
    saved = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if saved is None:
            del os.environ[name]
        else:
            os.environ[name] = saved


COLD_ROWS = (
    "constant weights (1..N), no phase",
    "constant weights (16..N+15: a sample per step each)",
    "anneal over the last 20%",
    "anneal over every step",
    "anneal over every step, one thread",
    "anneal over every step, numpy only (no fast extra)",
    "constant weights (1..N), a built plan's lookup of a step it has not seen",
)


def cold_lookups(n: int) -> list[float]:
    """Seconds for a fresh plan's ``consumed(10**6)``, one per row of ``COLD_ROWS``."""
    names = [f"s{i}" for i in range(n)]
    start = {x: 1.0 + i for i, x in enumerate(names)}
    end = {x: float(n - i) for i, x in enumerate(names)}
    anneal = Mixture(weights=start, phases=[Phase(start_step=0, end_step=10**6, weights=end)])
    mixtures = [
        Mixture(weights=start),
        Mixture(weights={x: 16.0 + i for i, x in enumerate(names)}),
        Mixture(weights=start, phases=[Phase(start_step=800_000, end_step=10**6, weights=end)]),
        anneal,
    ]

    def lookup(mix: Mixture) -> float:
        return best_of(lambda: Plan(mix, global_batch_size=B).consumed(10**6), 3, warm=False)

    out = [lookup(mix) for mix in mixtures]
    with environment("ANNEALMIX_THREADS", "1"):
        out.append(lookup(anneal))
    with _kernels.numpy_only():
        out.append(lookup(anneal))
    built = Plan(mixtures[0], global_batch_size=B)
    steps = iter(range(10**6, 0, -997))  # each call a step before the last: no cached count
    out.append(best_of(lambda: built.consumed(next(steps))))
    return out


def on_the_fly(weights: np.ndarray, position: int) -> np.ndarray:
    """Fast-LLM's lookup of its blend: each source's samples before ``position``,
    without an index. Its rule gives position i to the source with the largest error
    ``w * (i + 1) - count`` (Megatron's builder uses ``w * max(i, 1)``, a slightly
    different stream for three sources or more); the counts before any position are
    at least ``floor(w * position)``, and the rule, run on from there, reaches them."""
    counts = np.floor(weights * position).astype(np.int64)
    for i in range(int(counts.sum()), position):
        counts[np.argmax(weights * (i + 1) - counts)] += 1
    return counts


def fixed_weight_peers(n: int) -> tuple[float, float | str, int | str]:
    """Seconds for a Fast-LLM-style lookup of sample 10^6 x B (best of 3), checked
    first against its rule run position by position; for Megatron's C++ index over
    10^4 steps of B; and how many of the first 3,000 positions the lookup's counts
    differ from Megatron's index at (or why Megatron was skipped)."""
    weights = np.array([1.0 + i for i in range(n)])
    weights /= weights.sum()
    counts = np.zeros(n, dtype=np.int64)
    for i in range(3000):
        assert np.array_equal(on_the_fly(weights, i), counts), i
        counts[np.argmax(weights * (i + 1) - counts)] += 1
    lookup = best_of(lambda: on_the_fly(weights, B * 10**6))
    try:
        from megatron.core.datasets import helpers  # type: ignore[import-not-found]
    except Exception as err:  # noqa: BLE001 - any import failure means "not available"
        skipped = f"skipped ({type(err).__name__})"
        return lookup, skipped, skipped
    size = B * 10**4
    index = np.zeros(size, dtype=np.int16)
    sample = np.zeros(size, dtype=np.int64)
    build = best_of(
        lambda: helpers.build_blending_indices(index, sample, weights, n, size, False), 1
    )
    megatron_counts = np.cumsum(np.eye(n, dtype=np.int64)[index[:3000]], axis=0)
    differ = sum(
        not np.array_equal(on_the_fly(weights, i + 1), megatron_counts[i]) for i in range(3000)
    )
    return lookup, build, differ


def compile_times() -> tuple[float, float]:
    """Seconds of a fresh process's first exact-plan lookup (3 sources, over a phase),
    with an empty kernel cache and then with the cache it filled."""
    code = (
        "import time; t = time.perf_counter(); "
        "from annealmix import Mixture, Phase, Plan; "
        "mix = Mixture(weights={'a': 1, 'b': 2, 'c': 3}, "
        "phases=[Phase(start_step=0, end_step=100, weights={'a': 3, 'b': 2, 'c': 1})]); "
        "Plan(mix, global_batch_size=64).consumed(50); print(time.perf_counter() - t)"
    )
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        return tuple(
            float(
                subprocess.run(
                    [sys.executable, "-c", code],
                    env=env,
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
            )
            for _ in range(2)
        )


def _numba_version() -> str:
    import numba

    return numba.__version__


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=2000, help="steps per measurement")
    parser.add_argument("--out", help="also write the table to this Markdown file")
    args = parser.parse_args()
    steps = args.steps
    rows = []
    for n in (2, 8, 64):
        mix = mixture(n, steps)
        sizes = {name: 10**9 for name in mix.sources}
        exact = Plan(mix, global_batch_size=B)
        rand = Plan(mix, global_batch_size=B, mode="random")
        shuffled = Plan(mix, global_batch_size=B, sizes=sizes)
        zeros = np.zeros(n, dtype=np.int64)
        pairs = steps * B
        # A fresh plan per call (plan.replace()): a plan keeps its replays, so timing one
        # plan again would time its caches.
        r_exact = pairs / best_of(lambda p=exact, z=zeros: p.replace().batches(0, steps, z))
        r_random = pairs / best_of(lambda p=rand, z=zeros: p.replace().batches(0, steps, z))
        r_shuffle = pairs / best_of(
            lambda p=shuffled, z=zeros: indexed(p, p.replace().batches(0, steps, z))
        )
        r_loop = post_loop(n, min(pairs, 300_000))
        r_mega = megatron(n, pairs)
        long_anneal = mixture(n, 10**6)
        lookup = best_of(
            lambda x=long_anneal: Plan(x, global_batch_size=B).consumed(10**6), 1, warm=False
        )
        rows.append((n, r_exact, r_random, r_shuffle, r_loop, r_mega, lookup))

    def m(x):
        return x if isinstance(x, str) else f"{x / 1e6:.1f} M/s"

    lines = [
        describe(),
        f"global batch {B}, {steps} steps per measurement, cosine anneal over them; "
        "best of 3 after a warm-up call",
        "",
        "| sources | exact (src, draw) | random (src, draw) | exact + shuffle (src, index) "
        "| post-style loop | exact / loop | Megatron C++ | lookup step 10^6 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n, e, r, s, loop, mega, lookup in rows:
        mega_txt = (
            m(mega) if isinstance(mega, str) else f"{m(mega)} (exact/megatron {e / mega:.2f}x)"
        )
        cells = [n, m(e), m(r), m(s), m(loop), f"{e / loop:.0f}x", mega_txt, f"{lookup:.2f} s"]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    lines += [
        "",
        "| stream with shuffled indices | 2 sources | 8 sources | 64 sources | 2 / 64 |",
        "|---|---|---|---|---|",
    ]
    for k in (1, 8, 64):
        r = [serving(n, k) for n in (2, 8, 64)]
        cells = [f"take({k})", *(m(x) for x in r), f"{r[0] / r[2]:.1f}x"]
        lines.append("| " + " | ".join(cells) + " |")
    kernels = "numba " + _numba_version() if _kernels.kernels() else "numpy only"
    lines += [
        "",
        f"cold lookups: compiled kernels {kernels}, {_kernels.threads()} thread(s)",
        "",
        "| cold consumed(10^6), fresh plan | 2 sources | 8 sources | 64 sources |",
        "|---|---|---|---|",
    ]
    cold = [cold_lookups(n) for n in (2, 8, 64)]
    peers = [fixed_weight_peers(n) for n in (2, 8, 64)]

    def row(label, cells):
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    def secs(x):
        if isinstance(x, str):
            return x
        return f"{x * 1e6:.0f} µs" if x < 1e-3 else f"{x:.3f} s"

    for i, label in enumerate(COLD_ROWS):
        row(label, [secs(c[i]) for c in cold])
    row("Fast-LLM-style on-the-fly lookup, fixed weights 1..N, sample 10^6 x B",
        [secs(f) for f, _, _ in peers])  # fmt: skip
    row("ratio: annealmix built plan's lookup / Fast-LLM-style",
        [f"{c[-1] / f:.2f}x" for (f, _, _), c in zip(peers, cold)])  # fmt: skip
    row("Megatron C++ index over 10^4 steps (10^7 samples)", [secs(m) for _, m, _ in peers])
    row("of the first 3,000 positions, where Fast-LLM-style counts differ from Megatron's",
        [str(d) for _, _, d in peers])  # fmt: skip
    if _kernels.kernels():
        cold_cache, warm_cache = compile_times()
        lines += [
            "",
            f"kernels' first call in a fresh process (3 sources): {cold_cache:.2f} s with an "
            f"empty cache (compiling), {warm_cache:.2f} s with the cache filled",
        ]
    table = "\n".join(lines)
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
