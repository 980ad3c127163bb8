"""annealmix: mix training-data sources with weights that anneal smoothly over training."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np

from . import __version__
from .config import load_config
from .online import online
from .opened import budget, budget_is_exact, by_corpus, walk
from .order import indexed
from .shard import Shard


def _preview(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    opened = config.open(check_budget=False)  # the budget below reports and checks it
    plan, steps, ramp = opened.plan, config.num_steps, opened.plan.batch_sizes
    names = plan.mixture.sources
    milestones = sorted({round(steps * f / 10) for f in range(10)} | {steps - 1})
    if ramp is not None:  # where the batch changes size, among the first 30
        milestones = sorted(set(milestones) | {int(s) for s in ramp.starts[:30] if s < steps})
    at = np.array(milestones)
    weights = config.mixture.weights_at(at)
    sizes = np.full(len(at), plan.global_batch_size) if ramp is None else ramp.size_at(at)
    exact = budget_is_exact(opened)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        spent = budget(opened)
    report = {
        "sources": list(names),
        "unit": config.weight_unit,
        "milestones": [
            {"step": s, "global_batch_size": int(b), "weights": w.tolist()}
            for s, b, w in zip(milestones, sizes, weights)
        ],  # fmt: skip
        "batch_sizes": None if ramp is None else ramp.to_list(),
        "samples": int(plan.global_batch_size * opened.plan_steps),
        "corpora": None if plan.corpora is None else {c: list(m) for c, m in plan.corpora.items()},
        "smoothness": plan.mixture.smoothness(),
        "budget": spent,
        "warnings": [str(w.message) for w in caught],
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    width = max(10, *map(len, names))
    if ramp is None:
        print(f"{steps} steps x {plan.global_batch_size} samples, ", end="")
    else:
        ramped = int(ramp.starts[-1])
        print(
            f"{steps} steps, {report['samples']:,} samples: the global batch ramps from "
            f"{int(ramp.sizes[0])} to {int(ramp.sizes[-1])} in {len(ramp.sizes) - 1} changes over "
            f"steps 0-{ramped - 1} ({ramp.samples_before(ramped):,} samples); planned in steps of "
            f"{ramp.unit}\n", end=""
        )  # fmt: skip
    print(f"mode {plan.mode}, seed {plan.seed}, weights in {report['unit']}\n")
    shown, table = names, weights
    if plan.corpora:  # a list of thousands of files reads by corpus
        shown, matrix = by_corpus(plan)
        table = weights @ matrix
        width = max(10, *map(len, shown))
        print(f"{len(names):,} sources in {len(plan.corpora)} corpora; their weights summed")
    print("weights at milestones")
    batch = (lambda b: "") if ramp is None else (lambda b: f"{b:>7} ")  # the size, if it moves
    print(f"{'step':>10} {batch('batch')}" + " ".join(f"{n:>{width}}" for n in shown))
    for s, b, w in zip(milestones, sizes, table):
        print(f"{s:>10} {batch(b)}" + " ".join(f"{x:>{width}.4f}" for x in w))
    print(
        f"\nsmoothness (largest total-variation change between consecutive steps): "
        f"{report['smoothness']:.3g}\n"
    )
    print(
        "budget by the end of training"
        + ("" if exact else " (scheduled targets: the exact counts are within one sample)")
    )
    width = max(10, *map(len, names))
    print(f"{'source':>{width}} {'samples':>14} {'tokens':>16} {'documents':>14} {'epochs':>10}")
    for n in names:
        row = spent[n]
        tokens = "-" if row["tokens"] is None else f"{row['tokens']:,.0f}"
        documents = "-" if row["documents"] is None else f"{row['documents']:,.0f}"
        epochs = "-" if row["epochs"] is None else f"{row['epochs']:.3f}"
        print(f"{n:>{width}} {row['samples']:>14,.0f} {tokens:>16} {documents:>14} {epochs:>10}")
    for message in report["warnings"]:
        print(f"warning: {message}")
    return 0


def _step_range(args: argparse.Namespace, num_steps: int) -> range:
    if (args.step is None) == (args.steps is None):
        raise ValueError("give one of --step N or --steps A:B")
    if args.step is not None:
        if not 0 <= args.step < num_steps:
            raise ValueError(
                f"--step {args.step} is past the run's last step {num_steps - 1} "
                f"(num_steps = {num_steps})"
                if args.step >= 0
                else f"--step must be >= 0, got {args.step}"
            )
        return range(args.step, args.step + 1)
    try:
        a, b = (int(x) for x in args.steps.split(":"))
    except ValueError:
        raise ValueError(
            f"--steps must be A:B (first step, end step), got {args.steps!r}"
        ) from None
    if not 0 <= a < b:
        raise ValueError(f"--steps A:B needs 0 <= A < B, got {args.steps!r}")
    if b - a > 10_000:
        raise ValueError(f"--steps {args.steps} spans {b - a} steps; inspect at most 10000 at once")
    if b > num_steps:
        raise ValueError(
            f"--steps {args.steps} runs past the run's last step {num_steps - 1} "
            f"(num_steps = {num_steps})"
        )
    return range(a, b)


def _read_log(path: str) -> list:
    """The weight log in a JSON file: a saved state's ``"log"``, or the list itself."""
    try:
        value = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"--log {path!r} does not exist") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"--log {path}: not JSON ({err}); give the saved state as JSON") from None
    log = value.get("log") if isinstance(value, dict) else value
    if not isinstance(log, list):
        raise ValueError(
            f"--log {path}: no weight log in it; give a state an online run saved, or its "
            "'log' list"
        )
    return log


def _inspect(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    opened = config.open(check_budget=False)
    plan = opened.plan
    log = None
    if args.log is not None:  # an online run: its weight log tilts the config's schedule
        plan, log = online(plan), _read_log(args.log)
    steps = _step_range(args, config.num_steps)
    ramp = plan.batch_sizes
    if ramp is not None:  # optimizer steps -> the plan steps they hold
        steps = range(ramp.plan_steps(steps.start), ramp.plan_steps(steps.stop))
    shard = Shard(
        global_batch_size=plan.global_batch_size, rank=args.rank, world_size=args.world_size
    )
    batch = plan.batches(steps.start, len(steps), walk(plan, steps.start, log), log=log)
    if plan.sizes is not None:
        batch = indexed(plan, batch)
    names = plan.mixture.sources
    seq_lens = {s.name: s.seq_len for s in config.sources if s.seq_len is not None}
    out = []
    everything = np.arange(plan.global_batch_size)
    for row, step in enumerate(steps):
        samples, first = [], 0
        if ramp is not None:  # a position within the optimizer step, not the plan step
            first = (step - ramp.plan_steps(ramp.step_of(step))) * plan.global_batch_size
        for pos in everything[shard.positions(0, step)].tolist():
            k = int(batch.sources[row, pos])
            index = None if batch.indices is None else int(batch.indices[row, pos])
            sample = {"position": first + pos, "source": names[k],
                      "draw": int(batch.draws[row, pos])}  # fmt: skip
            sample["index"] = index
            source = opened.sources.get(names[k])
            if index is not None and source is not None:  # what the sample reads
                sample |= source.where(sample["draw"] // plan.sizes[k], index)
            elif index is not None and names[k] in seq_lens:  # planned by size: its windows
                first = index * seq_lens[names[k]]
                sample["tokens"] = {"file": None, "start": first,
                                    "end": first + seq_lens[names[k]] + 1}  # fmt: skip
            samples.append(sample)
        out.append({"step": step if ramp is None else ramp.step_of(step), "rank": args.rank,
                    "samples": samples})  # fmt: skip
    if args.json:
        print(json.dumps({"world_size": args.world_size, "steps": out}, indent=1))
        return 0
    print(
        f"rank {args.rank} of {args.world_size}: {shard.micro_batch_size} positions of each global "
        f"batch of {plan.global_batch_size}"
        + (" (a window that turns from step to step)" if args.world_size > 1 else "")
    )
    print(f"{'step':>10} {'position':>8} {'source':>12} {'draw':>12} {'index':>12}  tokens")
    for entry in out:
        for s in entry["samples"]:
            where = _where(s)
            index = "-" if s["index"] is None else s["index"]
            print(
                f"{entry['step']:>10} {s['position']:>8} {s['source']:>12} {s['draw']:>12} "
                f"{index:>12}  {where}"
            )
    return 0


def _where(sample: dict) -> str:
    """What a sample reads: a token range of a file, or pieces of documents."""
    tokens, docs = sample.get("tokens"), sample.get("documents")
    if tokens is not None:
        return f"[{tokens['start']}, {tokens['end']})" + (
            f" in {tokens['file']}" if tokens["file"] else ""
        )
    if docs is None:
        return ""
    shown = [
        f"doc {d['document']}" + (f" [{d['start']}, {d['end']})" if "start" in d else "")
        for d in docs[:3]
    ]
    return " + ".join(shown) + (f" + {len(docs) - 3} more" if len(docs) > 3 else "")


def _plot(args: argparse.Namespace) -> int:
    from .plotting import plot_config

    plot_config(load_config(args.config).open(check_budget=False), args.output,
                points=args.points)  # fmt: skip
    print(f"wrote {args.output}")
    return 0


def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    from .demo.run import add_arguments  # numpy only: torch is imported by the runs

    add_arguments(parser)


def _demo(args: argparse.Namespace) -> int:
    from .demo.run import main as demo_main

    return demo_main(args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="annealmix", description=__doc__)
    parser.add_argument("--version", action="version", version=f"annealmix {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    preview = sub.add_parser(
        "preview",
        help="show a config's weights at milestones, its smoothness and each source's budget",
        description="Weights are fractions of each global batch; samples are counts over "
        "the whole run; tokens are training targets (seq_len per window); documents are "
        "whole-document equivalents of packed sources; epochs are passes over a source, in "
        "tokens where the files are known (needs sizes).",
    )
    preview.add_argument("config", help="path to a TOML mixture config")
    preview.add_argument("--json", action="store_true", help="print JSON instead of tables")
    preview.set_defaults(run=_preview)
    inspect = sub.add_parser(
        "inspect",
        help="list the exact samples of a step's global batch (or one rank's share of it)",
        description="Which source, draw number and sample index fills each position of the "
        "global batch at a step, computed directly from the plan (no data is read but the "
        "token files' sizes). Token ranges are [start, end) token offsets within the source "
        "file; a packed source's window lists the documents it reads, each with its [start, "
        "end) tokens. For debugging a loss spike at step N.",
    )
    inspect.add_argument("config", help="path to a TOML mixture config")
    inspect.add_argument("--step", type=int, help="one optimizer step (0-based)")
    inspect.add_argument("--steps", help="a range of steps A:B (A included, B not)")
    inspect.add_argument("--rank", type=int, default=0, help="data-parallel rank (default 0)")
    inspect.add_argument("--world-size", type=int, default=1, help="data-parallel ranks (1)")
    inspect.add_argument("--json", action="store_true", help="print JSON instead of a table")
    inspect.add_argument(
        "--log",
        help="an online run's weight log: a JSON file of its saved state (or of the log alone)",
    )
    inspect.set_defaults(run=_inspect)
    plot = sub.add_parser(
        "plot",
        help="draw a config's scheduled weights and realized counts as a PNG",
        description="Top: the scheduled weights (fractions of each global batch) over "
        "optimizer steps, stacked, with the phases marked. Bottom: the realized share of each "
        "source per step, averaged over bins of steps. Needs matplotlib (extra 'plot').",
    )
    plot.add_argument("config", help="path to a TOML mixture config")
    plot.add_argument("-o", "--output", required=True, help="the PNG file to write")
    plot.add_argument("--points", type=int, default=1000, help="steps sampled along the x axis")
    plot.set_defaults(run=_plot)
    demo = sub.add_parser(
        "demo",
        help="train a small byte-level model under several mixing schedules and compare them",
        description="Trains a small GPT on two domains every Python ships (the standard "
        "library's code, the reference manual's prose) once per arm (how the mix moves from "
        "code to prose) and seed, then ranks the arms. Steps are optimizer steps; losses are "
        "held-out cross-entropy in nats per byte. Needs torch (and matplotlib for plots).",
    )
    demo.set_defaults(run=_demo)
    _demo_arguments(demo)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, TypeError, FileNotFoundError, ImportError) as err:
        print(f"annealmix: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader (head, less) went away: not an error
        sys.stderr.close()
        return 0
