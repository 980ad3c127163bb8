"""Online mixing: what an update, the weight log and a lookup cost.

    python benchmarks/bench_online.py [--out benchmarks/results/FILE.md]

Measures, at global batch size 1024:
- an update: each controller's ``update`` and the commit of its weights into a
  stream's log that already holds 0, 100 or 999 entries;
- the log: bytes per update as a state carries it (JSON), for 2, 8 and 64 sources;
- a cold lookup of step 10^6 of an online run with 1000 updates (one every 1000
  steps), 8 sources, from a fresh plan (a walk over every step before it), from a
  plan's mark (every 4096 steps), and a resume from a saved state;
- planning throughput of an online plan (samples per second through a ``Stream``)
  next to the scheduled ``Plan`` over the same sources;
- the bound as measured: over random online mixtures of 2 to 8 sources, batch 1
  to 63, up to 20 updates each, the largest amount any source ran ahead of or
  behind its realized target at any step, in samples.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from _machine import describe, report
from bench_plan import best_of

from annealmix import Mixture, Plan, Position, Stream
from annealmix.controllers import EXP3, DoReMi, LossProportional
from annealmix.online import OnlinePlan

B = 1024


def names(n: int) -> list[str]:
    return [f"s{k}" for k in range(n)]


def online(n: int, sizes=1_000_000) -> Plan:
    mix = Mixture(weights=dict(zip(names(n), np.arange(1.0, n + 1))))
    return OnlinePlan(mix, global_batch_size=B, sizes=dict.fromkeys(names(n), sizes))


def random_log(n: int, updates: int, every: int, rng) -> list:
    return [(every * (i + 1), rng.dirichlet(np.ones(n)).tolist()) for i in range(updates)]


def update_costs(rng) -> list[str]:
    rows = ["| what (8 sources) | microseconds |", "|---|---|"]
    sources = names(8)
    losses = dict(zip(sources, rng.random(8) * 3 + 1))
    weights = dict(zip(sources, np.full(8, 1 / 8)))
    for label, make in (
        ("LossProportional.update", lambda: LossProportional(sources, floor=0.01)),
        ("DoReMi.update", lambda: DoReMi(sources, reference=dict.fromkeys(sources, 2.0))),
        ("EXP3.update", lambda: EXP3(sources)),
    ):
        controller = make()
        t = best_of(lambda c=controller: [c.update(losses, weights) for _ in range(100)]) / 100
        rows.append(f"| {label} | {t * 1e6:,.0f} |")
    for size in (0, 100, 999):
        log = online(8).weight_log(random_log(8, size, 10, rng))
        step = 10 * (size + 1) + 5
        t = best_of(lambda g=log, s=step: g.copy().append(s, weights))
        rows.append(f"| commit into a log of {size} entries | {t * 1e6:,.0f} |")
    return rows


def log_bytes(rng) -> list[str]:
    rows = ["| sources | bytes per update (JSON) |", "|---|---|"]
    for n in (2, 8, 64):
        log = online(n).weight_log(random_log(n, 100, 1000, rng))
        rows.append(f"| {n} | {len(json.dumps(log.to_list())) / 100:,.0f} |")
    return rows


def lookups(rng) -> list[str]:
    target = 10**6
    plan = online(8)
    log = plan.weight_log(random_log(8, 1000, 1000, rng))  # checked once, as a stream holds it
    cold = best_of(lambda: plan.batches(target, 1, log=log), repeat=1, warm=False)
    plan.consumed(target + 1, log=log)  # a walk that leaves marks every 4096 steps
    warm = best_of(lambda: plan.batches(target, 1, log=log))  # from the mark before target
    mark = plan.point(target // 4096 * 4096, log=log)  # a walk from the last mark ...
    walker = Stream(plan, log=log)
    walker.seek(Position(mark.step, 0, mark.counts, mark.deficits))
    walker.take(target - mark.step)
    state = walker.state_dict()  # ... to a state at the step, as a checkpoint holds it

    def resume() -> None:
        fresh = Stream(online(8))
        fresh.load_state_dict(state)
        fresh.take(1)

    resumed = best_of(resume)
    return [
        f"| step {target:,} of a run with 1000 updates (8 sources, B = {B}) | seconds |",
        "|---|---|",
        f"| cold: walk every step before it | {cold:.2f} |",
        f"| from the plan's mark at step {target // 4096 * 4096:,} | {warm:.4f} |",
        f"| resume from a saved state (log of 1000 entries), plan the step | {resumed:.4f} |",
    ]


def throughput(rng) -> list[str]:
    rows = ["| sources | OnlinePlan samples/s | Plan samples/s | ratio |", "|---|---|---|---|"]
    steps = 2000
    for n in (2, 8, 64):
        mix = Mixture(weights=dict(zip(names(n), np.arange(1.0, n + 1))))
        sizes = dict.fromkeys(names(n), 1_000_000)
        on, log = OnlinePlan(mix, global_batch_size=B, sizes=sizes), random_log(n, 10, 150, rng)
        plain = Plan(mix, global_batch_size=B, sizes=sizes)
        t_on = best_of(lambda p=on, g=log: Stream(p, chunk_steps=64, log=g).take(steps))
        t_plain = best_of(lambda p=plain: Stream(p, chunk_steps=64).take(steps))
        a, b = steps * B / t_on, steps * B / t_plain
        rows.append(f"| {n} | {a / 1e6:.1f} M | {b / 1e6:.1f} M | {b / a:.1f}x slower |")
    return rows


def simplex(n: int, rng) -> np.ndarray:
    """Random weights, some of them zero (sparse or spread)."""
    v = rng.dirichlet(np.ones(n) * rng.choice([0.1, 1.0]))
    v[rng.random(n) < 0.2] = 0
    return v / v.sum() if v.sum() else np.eye(n)[0]


def masked(weights: np.ndarray, scheduled: np.ndarray) -> np.ndarray:
    """``weights`` where the schedule gives weight (uniform there if that is nothing)."""
    out = np.where(scheduled, weights, 0.0)
    return out / out.sum() if out.sum() else scheduled / scheduled.sum()


def bound(trials: int, rng) -> list[str]:
    ahead = behind = two = 0.0
    for _ in range(trials):
        n, batch = int(rng.integers(2, 9)), int(rng.integers(1, 64))
        steps = int(rng.integers(5, 200))
        at = sorted(set(rng.integers(1, steps, rng.integers(0, 20)).tolist()))
        mix = Mixture(weights=dict(zip(names(n), simplex(n, rng))))
        scheduled = np.array(list(mix.weights.values())) > 0  # an update weights only these
        log = [(s, masked(simplex(n, rng), scheduled)) for s in at]
        plan = OnlinePlan(mix, global_batch_size=batch, sizes=dict.fromkeys(names(n), 10))
        realized = batch * np.cumsum(plan.weights_at(np.arange(steps), log=log), axis=0)
        gap = np.cumsum(plan.counts(0, steps, log=log), axis=0) - realized
        ahead, behind = max(ahead, gap.max()), max(behind, (-gap).max())
        if n == 2:
            two = max(two, np.abs(gap).max())
    return [
        f"| {trials} random online mixtures | largest ahead | largest behind |",
        "|---|---|---|",
        f"| 2 to 8 sources | {ahead:.9f} | {behind:.9f} |",
        f"| of them, 2 sources | {two:.9f} | {two:.9f} |",
        "",
        "(samples; proven: ahead < 1, behind < 1 for two sources and < N - 1 for N)",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=400)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    lines = [f"# Online mixing\n\n{describe()}\n"]
    lines += ["## An update\n"] + update_costs(rng) + [""]
    lines += ["## The weight log\n"] + log_bytes(rng) + [""]
    lines += ["## Looking a step up\n"] + lookups(rng) + [""]
    lines += ["## Planning throughput (a Stream, 64 steps per chunk)\n"] + throughput(rng) + [""]
    lines += ["## The bound, measured\n"] + bound(args.trials, rng) + [""]
    report(lines, args.out)


if __name__ == "__main__":
    main()
