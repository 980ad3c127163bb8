"""The resume state: its size, and what the first ``state_dict()``/``metrics()`` after a
deep resume cost.

    python benchmarks/bench_state.py [--out benchmarks/results/FILE.md]

Size: a ``Stream``'s state at step 10^6 of a plan with 2, 8 and 64 sources and 8
phases (global batch 1024: counts of eight digits), as compact JSON, before and
after a re-plan (which adds the per-source offset). Time (8 sources, step 10^6,
a ``MixtureDataLoader``): the first ``state_dict()`` and ``metrics(step)`` after
``load_state_dict`` against the named baseline, a cold replay of the counts to
that step (``plan.consumed(10**6)``, what a state that does not travel with its
batches must recompute), and ``load_state_dict`` itself (which replays once to
check the counts). Best of 5.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from _machine import describe
from bench_plan import best_of

from annealmix import Mixture, Phase, Plan, Position, Stream

STEP = 10**6
B = 1024


def plan(n: int, seed: int = 0) -> Plan:
    rng = np.random.default_rng(seed)
    names = [f"source_{i:02d}" for i in range(n)]
    phases = [
        Phase(
            start_step=150_000 * i,
            end_step=150_000 * i + 100_000,
            weights=dict(zip(names, rng.random(n) + 0.01)),
            schedule="cosine",
        )
        for i in range(8)
    ]
    return Plan(
        Mixture(weights=dict(zip(names, rng.random(n) + 0.01)), phases=phases),
        global_batch_size=B,
        sizes=dict.fromkeys(names, 10**9),
    )


class Ids:
    """A random-access source of 10^9 samples whose sample i is i (no memory)."""

    def __len__(self) -> int:
        return 10**9

    def __getitem__(self, i: int) -> int:
        return i


def sizes() -> list[str]:
    rows = ["| sources | state at step 10^6 | after a re-plan |", "|---|---|---|"]
    for n in (2, 8, 64):
        p = plan(n)
        stream = Stream(p)
        stream.seek(Position(STEP, 0, p.consumed(STEP)))
        state = stream.state_dict()
        moved = Stream(plan(n, seed=1))
        moved.load_state_dict(state, replan=True)
        size = len(json.dumps(state, separators=(",", ":")))
        replanned = len(json.dumps(moved.state_dict(), separators=(",", ":")))
        rows.append(f"| {n} | {size} bytes | {replanned} bytes |")
    return rows


def resume() -> list[str]:
    from annealmix.torch import MixtureDataLoader

    p = plan(8)
    sources = {name: Ids() for name in p.mixture.sources}
    stream = Stream(p)
    stream.seek(Position(STEP, 0, p.consumed(STEP)))
    state = stream.state_dict()
    replay = best_of(lambda: p.replace().consumed(STEP), 5, warm=False)  # a plan not yet used

    def fresh():
        dl = MixtureDataLoader(sources, p.replace(), num_steps=STEP + 10)
        dl.load_state_dict(state)
        return dl

    load = best_of(fresh, 5, warm=False)
    first_state, first_metrics = float("inf"), float("inf")
    for _ in range(5):
        dl = fresh()
        t0 = time.perf_counter()
        dl.state_dict()
        first_state = min(first_state, time.perf_counter() - t0)
        dl = fresh()
        t0 = time.perf_counter()
        dl.metrics(STEP)
        first_metrics = min(first_metrics, time.perf_counter() - t0)
    return [
        "| 8 sources, step 10^6 | time | cold replay / it |",
        "|---|---|---|",
        f"| baseline: cold replay of the counts | {replay:.3f} s | 1x |",
        f"| load_state_dict (checks the counts) | {load:.3f} s | {replay / load:.1f}x |",
        f"| first state_dict() after it | {first_state * 1e6:.0f} us | "
        f"{replay / first_state:,.0f}x |",
        f"| first metrics(step) after it | {first_metrics * 1e6:.0f} us | "
        f"{replay / first_metrics:,.0f}x |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="also write the tables to this Markdown file")
    args = parser.parse_args()
    text = "\n".join([describe(), "", *sizes(), "", *resume()])
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
