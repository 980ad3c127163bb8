"""Every counting bound, proven and measured: how close random mixtures come to it.

    python benchmarks/bench_bounds.py [--trials 2000] [--out benchmarks/results/FILE.md]

For each kind of plan, random mixtures (random sources, batch sizes, anneals,
updates) are walked and the largest gap between what each source drew and its
target at any step is reported next to the proven bound, as a fraction of it:

- exact plans (``Plan``): counts against ``B x`` the cumulative weights, in samples;
  proven: under 1 sample (1/2 for two sources);
- token plans (``TokenPlan``): tokens against the token target, in longest
  documents; proven: ahead under 1, behind under the others' longest together
  (``bench_tokens.bound``);
- online plans (``OnlinePlan``): counts against the realized (tilted) weights, in
  samples; proven: ahead under 1, behind under 1 for two sources and N - 1 for N
  (``bench_online.bound``).

The proofs are in ``annealmix._counting`` (``deadline``, ``nearest``, ``tokens``,
``walk``); the tests check the bounds on other random mixtures.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _machine import describe, report
from bench_online import bound as online_bound
from bench_tokens import bound as token_bound

from annealmix import Mixture, Phase, Plan
from annealmix._counting import Q, Targets


def weights(names: list[str], rng) -> dict[str, float]:
    """Random weights, some of them zero (sparse or spread)."""
    n = len(names)
    w = rng.dirichlet(np.ones(n) * rng.choice([0.1, 1.0]))
    w[rng.random(n) < 0.2] = 0
    return dict(zip(names, (w if w.sum() else np.eye(n)[0]).tolist()))


def exact_bound(trials: int, rng) -> list[str]:
    worst = {"two": 0, "more": 0}
    for _ in range(trials):
        n = int(rng.integers(2, 9))
        names = [f"s{k}" for k in range(n)]
        steps = int(rng.integers(20, 400))
        cut = sorted(rng.choice(steps, 2, replace=False).tolist())
        schedule = str(rng.choice(["linear", "cosine", "step"]))
        phase = Phase(start_step=cut[0], end_step=cut[1], weights=weights(names, rng),
                      schedule=schedule)  # fmt: skip
        mix = Mixture(weights=weights(names, rng), phases=[phase])
        batch = int(rng.integers(1, 64))
        plan = Plan(mix, global_batch_size=batch, seed=int(rng.integers(9)))
        counts = np.cumsum(plan.counts(0, steps), axis=0)
        # against the exact target B U / Q in integers: (C Q - B U) / Q
        gap = counts * Q - batch * np.cumsum(Targets(mix).quanta(0, steps), axis=0)
        key = "two" if n == 2 else "more"
        worst[key] = max(worst[key], int(np.abs(gap).max()))
    two, more = worst["two"] / Q, worst["more"] / Q
    return [
        f"| {trials} random mixtures | largest gap (samples) | bound | of the bound |",
        "|---|---|---|---|",
        f"| 2 sources | {two:.12f} | 0.5 (at most) | {two / 0.5:.12f} |",
        f"| 3 to 8 sources | {more:.12f} | 1 (under) | {more:.12f} |",
        "",
        "(against the exact targets, integer sums of the weights quantised to 2^-40)",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=2000)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    lines = [f"# Counting bounds, measured\n\n{describe()}\n"]
    for title, measure in (
        ("Exact plans (samples)", exact_bound),
        ("Token plans (longest documents)", token_bound),
        ("Online plans (samples, against the realized weights)", online_bound),
    ):
        start = time.perf_counter()
        rows = measure(args.trials, rng)
        lines += [f"## {title}\n"] + rows + ["", f"({time.perf_counter() - start:.0f} s)", ""]
    report(lines, args.out)


if __name__ == "__main__":
    main()
