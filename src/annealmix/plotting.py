"""``annealmix plot``: a config's scheduled weights and realized mix as a PNG (matplotlib)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .config import MixConfig

__all__ = ["plot_config"]


def plot_config(config: MixConfig, output: str | Path, points: int = 1000) -> Path:
    """Stacked scheduled weights with the phases marked, over the realized share per step."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError(
            "annealmix plot needs matplotlib: pip install -c constraints.txt 'annealmix[plot]'"
        ) from None
    plan, steps = config.plan, config.num_steps
    names = plan.mixture.sources
    xs = np.unique(np.linspace(0, steps - 1, min(points, steps)).round().astype(np.int64))
    weights = plan.mixture.weights_at(xs)
    # Realized: the plan's counts of every step, averaged over as many bins as points.
    counts = plan.counts(0, steps).astype(np.float64) / plan.global_batch_size
    edges = np.linspace(0, steps, min(points, steps) + 1).round().astype(np.int64)
    sums = np.add.reduceat(counts, edges[:-1], axis=0)
    share = sums / np.diff(edges)[:, None]
    centres = (edges[:-1] + edges[1:] - 1) / 2

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    top.stackplot(xs, weights.T, labels=names, alpha=0.85)
    bottom.stackplot(centres, share.T, labels=names, alpha=0.85)
    for ax in (top, bottom):
        for phase in plan.mixture.phases:
            ax.axvspan(phase.start_step, phase.end_step, color="k", alpha=0.08, lw=0)
            ax.axvline(phase.start_step, color="k", lw=0.6, ls="--")
        ax.set_ylim(0, 1)
        ax.margins(x=0)
    top.set_title(f"scheduled weights ({len(plan.mixture.phases)} phase(s) shaded)", fontsize=10)
    top.set_ylabel("weight")
    top.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    bottom.set_title(
        f"realized share of each global batch of {plan.global_batch_size} "
        f"(mean per {steps / len(share):.3g} steps), {plan.mode} mode",
        fontsize=10,
    )
    bottom.set_ylabel("share")
    bottom.set_xlabel("optimizer step")
    fig.tight_layout()
    output = Path(output)
    fig.savefig(output, dpi=110)
    plt.close(fig)
    return output
