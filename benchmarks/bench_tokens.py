"""Token-weighted plans over unpacked documents, against the sample plan.

    python benchmarks/bench_tokens.py [--steps 200] [--out benchmarks/results/FILE.md]

Measures, at global batch size 512 (documents per step) with a linear anneal:
- planning throughput (documents per second) of a ``TokenPlan`` walked by a
  ``Stream`` in chunks, for 2, 3 and 8 sources, next to the sample ``Plan`` over
  the same sources (the baseline: what weights in samples cost);
- a cold lookup of step t (a replay of every document before it), a warm one
  (from the plan's mark every 256 steps) and a resume from a saved state (O(1):
  the state carries the deficits);
- the token bound as measured: over random mixtures of 2 to 6 sources with
  document lengths drawn from 1 to 4096, linear, cosine and step anneals, the
  largest amount a source's tokens ran ahead of or behind its token target at any
  step, in units of the longest document (proven: ahead < 1 of its own; behind <
  the others' longest together, which is 1 for two sources);
- memory: what the plan keeps per document.
"""

from __future__ import annotations

import argparse

import numpy as np
from _machine import describe, report
from bench_plan import best_of

from annealmix import Mixture, Phase, Plan, Stream, TokenPlan

B = 512


def lengths_of(n: int, docs: int, rng) -> dict[str, np.ndarray]:
    """Source k's documents: lognormal lengths around 100 * 3^k tokens, capped at 32K."""
    out = {}
    for k in range(n):
        lengths = rng.lognormal(np.log(100 * 3 ** (k % 4)), 0.8, docs).astype(np.int64)
        out[f"s{k}"] = np.clip(lengths, 1, 1 << 15)
    return out


def anneal(names, steps, schedule="linear", rng=None) -> Mixture:
    n = len(names)
    if rng is None:
        start, end = np.arange(1.0, n + 1), np.arange(n, 0.0, -1)
    else:
        start, end = rng.dirichlet(np.ones(n)), rng.dirichlet(np.ones(n))
    return Mixture(
        weights=dict(zip(names, start / start.sum())),
        phases=[
            Phase(
                start_step=0,
                end_step=steps - 1,
                schedule=schedule,
                weights=dict(zip(names, end / end.sum())),
            )
        ],  # fmt: skip
    )


def walk(plan, steps: int) -> None:
    Stream(plan, chunk_steps=16).take(steps)


def throughput(steps: int, rng) -> list[str]:
    rows = ["| sources | TokenPlan docs/s | sample Plan docs/s | ratio |", "|---|---|---|---|"]
    for n in (2, 3, 8):
        lengths = lengths_of(n, 200_000, rng)
        mix = anneal(list(lengths), steps)
        tokens = TokenPlan(mix, global_batch_size=B, lengths=lengths)
        samples = Plan(mix, global_batch_size=B, sizes={k: a.size for k, a in lengths.items()})
        t_tok = best_of(lambda p=tokens: walk(p, steps))
        t_smp = best_of(lambda p=samples: walk(p, steps))
        rate_tok, rate_smp = steps * B / t_tok, steps * B / t_smp
        rows.append(
            f"| {n} | {rate_tok:,.0f} | {rate_smp:,.0f} | {rate_smp / rate_tok:.0f}x slower |"
        )
    return rows


def lookups(steps: int, rng) -> list[str]:
    lengths = lengths_of(3, 200_000, rng)
    plan = TokenPlan(anneal(list(lengths), steps), global_batch_size=B, lengths=lengths)
    t = steps - 1
    cold = best_of(lambda: plan.batch(t), repeat=1, warm=False)
    plan.consumed(steps)  # a walk that leaves marks every 256 steps
    warm = best_of(lambda: plan.batches(t, 1))  # from the mark before t, each time
    s = Stream(plan)
    s.take(t)
    state = s.state_dict()

    def resume() -> None:
        fresh = Stream(plan)
        fresh.load_state_dict(state)
        fresh.take(1)

    resumed = best_of(resume)
    return [
        f"| lookup of step {t:,} (3 sources, B = {B}) | seconds |",
        "|---|---|",
        f"| cold: replay {t * B:,} documents | {cold:.3f} |",
        f"| warm: from the plan's mark at step {t // 256 * 256:,} | {warm:.4f} |",
        f"| resume from a saved state, then plan the step | {resumed:.4f} |",
    ]


def bound(trials: int, rng) -> list[str]:
    worst = {"ahead": 0.0, "behind": 0.0}
    worst_two = {"ahead": 0.0, "behind": 0.0}
    for _ in range(trials):
        n = int(rng.integers(2, 7))
        lengths = {f"s{k}": rng.integers(1, rng.integers(2, 4097), 300) for k in range(n)}
        steps = int(rng.integers(20, 120))
        schedule = str(rng.choice(["linear", "cosine", "step"]))
        mix = anneal(list(lengths), steps, schedule, rng)
        batch = int(rng.integers(1, 64))
        plan = TokenPlan(mix, global_batch_size=batch, lengths=lengths, seed=int(rng.integers(9)))
        taken = Stream(plan).take(steps)
        tokens = np.zeros(taken.sources.shape)
        for k, a in enumerate(plan.lengths):
            tokens[taken.sources == k] = a[taken.indices[taken.sources == k]]
        per_step = np.stack([np.where(taken.sources == k, tokens, 0).sum(1) for k in range(n)], 1)
        drawn = np.cumsum(per_step, axis=0)
        target = np.cumsum(mix.weights_at(np.arange(steps)) * per_step.sum(1, keepdims=True), 0)
        longest = max(plan.longest)
        for side, gap in (("ahead", drawn - target), ("behind", target - drawn)):
            worst[side] = max(worst[side], gap.max() / longest)
            if n == 2:
                worst_two[side] = max(worst_two[side], gap.max() / longest)
    return [
        f"| {trials} random mixtures | largest ahead | largest behind |",
        "|---|---|---|",
        f"| 2 to 6 sources | {worst['ahead']:.9f} | {worst['behind']:.9f} |",
        f"| of them, 2 sources | {worst_two['ahead']:.9f} | {worst_two['behind']:.9f} |",
        "",
        "(in longest documents; proven: ahead < 1, behind < 1 for two sources and < N - 1",
        "for N)",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--trials", type=int, default=300)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    lines = [f"# Token plans over unpacked documents\n\n{describe()}\n"]
    lines += ["## Planning throughput (documents per second, a linear anneal)\n"]
    lines += throughput(args.steps, rng) + [""]
    lines += ["## Looking a step up\n"] + lookups(args.steps * 10, rng) + [""]
    lines += ["## The token bound, measured\n"] + bound(args.trials, rng) + [""]
    lines += [
        "## Memory\n",
        "A TokenPlan keeps each document's length as int32: 4 bytes per document, and",
        "nothing per epoch or per step of the run (a plan keeps a mark every 256",
        "steps it walks: two ints per source). Megatron's blended datasets store 10",
        "bytes per sample of the run (dataset index int16 + sample index int64).",
        "",
    ]
    report(lines, args.out)


if __name__ == "__main__":
    main()
