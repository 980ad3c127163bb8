"""What a batch-size ramp costs the plan: the same run with and without one.

    python benchmarks/bench_ramp.py [--steps 1000000] [--sources 16] [--out FILE.md]

Under a ramp a plan counts in plan steps of the ramp's unit (the sizes' greatest
common divisor, ``annealmix.ramp``), so after the ramp every optimizer step of the
final batch is ``final / unit`` plan steps. This measures, for a cosine anneal over
``--sources`` sources across the second half of ``--steps`` optimizer steps of 1,536
samples, against the same plan without the ramp (the baseline):

- a fresh lookup: where a new process stands at the last step (``Plan.point``, what a
  resume replays);
- laying out steps: the global batches of 64 optimizer steps in the anneal, a chunk at
  a time (what a loader or ``MegatronDataset`` plans), in samples per second.

Ramps: Megatron's ``--rampup-batch-size 32 32 N`` (unit 32) and ``512 512 N`` (unit
512), over the first 1% of the samples.
"""

from __future__ import annotations

import argparse
import time

from _anneal import second_half_anneal
from _machine import describe, report

from annealmix import BatchSizes, Plan

FINAL = 1536


def _timed(f) -> float:
    begin = time.perf_counter()
    f()
    return time.perf_counter() - begin


def measure(plan: Plan, steps: int) -> tuple[float, float]:
    """(seconds to look up the last step afresh, samples/s laying out steps)."""
    lookup = _timed(lambda: plan.replace().point(plan.plan_steps(steps)))
    first = plan.plan_steps(steps * 3 // 4)
    chunk = plan.plan_steps(steps * 3 // 4 + 64) - first
    fresh = plan.replace()
    fresh.point(first)
    rounds = 20
    seconds = _timed(lambda: [fresh.batches(first + i * chunk, chunk) for i in range(rounds)])
    return lookup, rounds * chunk * plan.global_batch_size / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10**6)
    parser.add_argument("--sources", type=int, default=16)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    mix = second_half_anneal(args.sources, args.steps)
    ramp_samples = args.steps * FINAL // 100
    runs = [("no ramp (baseline)", FINAL)] + [
        (f"--rampup-batch-size {s} {s} {ramp_samples}",
         BatchSizes.megatron(s, s, ramp_samples, FINAL))
        for s in (32, 512)
    ]  # fmt: skip
    lines = [f"# A batch-size ramp's cost to the plan\n\n{describe()}\n",
             f"{args.steps:,} optimizer steps ending at {FINAL} samples, {mix.num_sources} "
             "sources, a cosine anneal over the second half\n",
             "| run | unit | plan steps | fresh lookup of the last step | x baseline | "
             "laying out steps | baseline / this |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    base = None
    for name, batch in runs:
        plan = Plan(mix, global_batch_size=batch)
        lookup, rate = measure(plan, args.steps)
        base = base or (lookup, rate)
        lines.append(f"| {name} | {plan.global_batch_size} | {plan.plan_steps(args.steps):,} | "
                     f"{lookup:.2f} s | {lookup / base[0]:.1f} | {rate / 1e6:.1f} M samples/s | "
                     f"{base[1] / rate:.1f} |")  # fmt: skip
        print(lines[-1], flush=True)
    report(lines, args.out)


if __name__ == "__main__":
    main()
