"""Writing Megatron's blend cache from a plan: time and bytes at 10^8 samples.

    python benchmarks/bench_export.py [--samples 100000000] [--sources 16] [--out FILE.md]

``annealmix.torch.megatron_cache.write_blend_cache`` builds the run's datasets through
megatron-core (their own caches, which the run would build anyway) and writes the blend's
two arrays from the plan. This times the part that is annealmix's, planning and writing
both arrays (``_write``), for a cosine anneal over ``--sources`` sources, global batch
1024, against Megatron's own C++ ``build_blending_indices`` building the same number of
samples from static weights (what its builder runs when nothing is cached), and reports
the bytes written per sample.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from _anneal import second_half_anneal
from _machine import describe, report

from annealmix import Plan
from annealmix.torch.megatron_cache import _write

B = 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=10**8)
    parser.add_argument("--sources", type=int, default=16)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    steps = -(-args.samples // B)
    mix = second_half_anneal(args.sources, steps)
    names = mix.sources
    plan = Plan(mix, global_batch_size=B)
    samples = steps * B
    with tempfile.TemporaryDirectory() as tmp:
        files = [Path(tmp) / x for x in ("d.txt", "index.npy", "sample.npy")]
        begin = time.perf_counter()
        _write(plan, steps, samples, np.arange(len(names)), files, "bench")
        ours = time.perf_counter() - begin
        written = sum(f.stat().st_size for f in files)
    lines = [f"# Megatron's blend cache from a plan\n\n{describe()}\n",
             f"{samples:,} samples ({steps:,} steps of {B}), {len(names)} sources, a cosine "
             "anneal over the second half\n",
             "| what | seconds | samples/s | bytes written | bytes per sample |",
             "|---|---|---|---|---|",
             f"| annealmix: plan and write both arrays | {ours:.1f} | "
             f"{samples / ours / 1e6:.1f} M | {written:,} | {written / samples:.2f} |"]  # fmt: skip
    try:
        from megatron.core.datasets import helpers  # type: ignore[import-not-found]

        index, sample = np.zeros(samples, np.int16), np.zeros(samples, np.int64)
        start = np.array(list(mix.weights.values()))  # the anneal's first mix, static
        begin = time.perf_counter()
        helpers.build_blending_indices(index, sample, start, len(names), samples, False)
        theirs = time.perf_counter() - begin
        lines.append(f"| Megatron's build_blending_indices, static weights (in memory) | "
                     f"{theirs:.1f} | {samples / theirs / 1e6:.1f} M | "
                     f"{index.nbytes + sample.nbytes:,} (when saved) | 10.00 |")  # fmt: skip
    except Exception as err:  # noqa: BLE001 - any import failure means "not available"
        lines.append(f"\nMegatron's builder skipped: {type(err).__name__}: {err}")
    report(lines, args.out)


if __name__ == "__main__":
    main()
