"""``annealmix plot``: a config's scheduled weights and realized mix as a PNG (matplotlib)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._progress import Progress
from .opened import Opened, budget_is_exact, by_corpus
from .stream import Stream

__all__ = ["plot_config"]

_CHUNK = 1 << 16


def plot_config(opened: Opened, output: str | Path, points: int = 1000) -> Path:
    """Stacked scheduled weights with the phases marked, over the realized share per
    step (of the tokens, for a plan with lengths: what its weights count), for an
    opened config (``MixConfig.open()``); by corpus where the plan has corpora."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError(
            "annealmix plot needs matplotlib: pip install -c constraints.txt 'annealmix[plot]'"
        ) from None
    plan, run = opened.plan, opened.config.num_steps
    steps, ramp = opened.plan_steps, plan.batch_sizes  # under a ramp, more plan steps
    names = plan.mixture.sources
    xs = np.unique(np.linspace(0, run - 1, min(points, run)).round().astype(np.int64))
    weights = opened.config.mixture.weights_at(xs)
    # Realized: the plan's counts of every step, summed into as many bins of optimizer
    # steps as points, a chunk of steps at a time (memory stays flat however long the run).
    bins = min(points, run)
    shown = np.linspace(0, run, bins + 1).round().astype(np.int64)
    edges = shown if ramp is None else ramp.plan_steps(shown)
    counted = budget_is_exact(opened)  # else replaying every step would take hours or days
    sums = np.zeros((bins, len(names)))
    consumed = np.zeros(len(names), dtype=np.int64)
    tokens = plan.lengths is not None
    stream = Stream(plan, num_steps=steps) if tokens else None
    bar = Progress(steps, "steps counted")
    for a in range(0, steps if counted else 0, _CHUNK):
        n = min(_CHUNK, steps - a)
        if tokens:
            counts = plan.step_tokens(stream.take(n))
        else:
            counts = plan.counts(a, n, consumed)
            consumed = consumed + counts.sum(axis=0)
        which = np.searchsorted(edges, np.arange(a, a + n), side="right") - 1
        np.add.at(sums, which, counts)
        bar.update(a + n)
    bar.close()
    if plan.corpora:  # thousands of files: one band per corpus
        names, matrix = by_corpus(plan)
        weights, sums = weights @ matrix, sums @ matrix
    share = sums / np.maximum(sums.sum(axis=1, keepdims=True), 1)
    centres = (shown[:-1] + shown[1:] - 1) / 2
    batch = (f"{plan.global_batch_size}" if ramp is None
             else f"{int(ramp.sizes[0])} to {int(ramp.sizes[-1])} (a ramp)")  # fmt: skip
    span = run / len(share)

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10 + 1.2 * (len(names) > 16), 6), sharex=True)
    top.stackplot(xs, weights.T, labels=names, alpha=0.85)
    bottom.stackplot(centres, share.T, labels=names, alpha=0.85)
    for ax in (top, bottom):
        for phase in opened.config.mixture.phases:
            ax.axvspan(phase.start_step, phase.end_step, color="k", alpha=0.08, lw=0)
            ax.axvline(phase.start_step, color="k", lw=0.6, ls="--")
        ax.set_ylim(0, 1)
        ax.margins(x=0)
    top.set_title(f"scheduled weights ({len(opened.config.mixture.phases)} phase(s) shaded)",
                  fontsize=10)  # fmt: skip
    top.set_ylabel("weight")
    columns = -(-len(names) // 16)  # at most 16 names a column
    top.legend(
        loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8 if columns == 1 else 6, ncol=columns
    )
    bottom.set_title(
        f"realized share of the {'tokens' if tokens else 'samples'} of each global batch of "
        f"{batch} (mean per {span:.3g} steps), {plan.mode} mode"
        if counted
        else f"realized share not counted: {steps:,} (plan) steps x {plan.num_sources} sources "
        "are too many to replay (see preview's budget)",
        fontsize=10,
    )
    bottom.set_ylabel("share")
    bottom.set_xlabel("optimizer step")
    fig.tight_layout()
    output = Path(output)
    fig.savefig(output, dpi=110)
    plt.close(fig)
    return output
