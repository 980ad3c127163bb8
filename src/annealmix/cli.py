"""The ``annealmix`` command line."""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from . import __version__
from .config import load_config


def _preview(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    plan, steps = config.plan, config.num_steps
    names = plan.mixture.sources
    milestones = sorted({round(steps * f / 10) for f in range(10)} | {steps - 1})
    weights = plan.mixture.weights_at(np.array(milestones))
    consumed = plan.consumed(steps)
    report = {
        "sources": list(names),
        "milestones": [{"step": s, "weights": w.tolist()} for s, w in zip(milestones, weights)],
        "smoothness": plan.mixture.smoothness(),
        "samples": dict(zip(names, consumed.tolist())),
        "epochs": None
        if plan.sizes is None
        else dict(zip(names, (consumed / np.array(plan.sizes)).tolist())),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    width = max(10, *map(len, names))
    print(f"{steps} steps x {plan.global_batch_size} samples, mode {plan.mode}, seed {plan.seed}\n")
    print("weights at milestones")
    print(f"{'step':>10} " + " ".join(f"{n:>{width}}" for n in names))
    for s, w in zip(milestones, weights):
        print(f"{s:>10} " + " ".join(f"{x:>{width}.4f}" for x in w))
    print(
        f"\nsmoothness (largest total-variation change between consecutive steps): "
        f"{report['smoothness']:.3g}\n"
    )
    print("budget by the end of training")
    print(f"{'source':>{width}} {'samples':>14} {'epochs':>10}")
    for i, n in enumerate(names):
        epochs = "-" if plan.sizes is None else f"{consumed[i] / plan.sizes[i]:.3f}"
        print(f"{n:>{width}} {consumed[i]:>14,} {epochs:>10}")
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
        "the whole run; epochs are passes over a source (needs sizes).",
    )
    preview.add_argument("config", help="path to a TOML mixture config")
    preview.add_argument("--json", action="store_true", help="print JSON instead of tables")
    preview.set_defaults(run=_preview)
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
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"annealmix: error: {err}", file=sys.stderr)
        return 2
