"""The demo's PNG plots (matplotlib, extra ``plot``): losses, gradient norm, the mix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .report import domains_of, move

__all__ = ["plot_all", "pyplot", "save", "smooth"]

_FONT = 10


def smooth(values: Any, width: int = 5) -> np.ndarray:
    """Centred running mean over ``width`` points, averaging only the points that
    exist: at the edges the window is shorter, not padded with zeros (which would
    drag the first and last values toward zero)."""
    values = np.asarray(values, dtype=np.float64)
    kernel = np.ones(width)
    total = np.convolve(values, kernel, mode="same")
    count = np.convolve(np.ones_like(values), kernel, mode="same")
    return total / count


def _by_arm(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    arms: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        arms.setdefault(rec["arm"], []).append(rec)
    return arms


def _shade(ax, rec: dict[str, Any]) -> None:
    span = move(rec)
    if span is None:
        return
    if span[1] - span[0] < 2:  # an abrupt switch: a line, not a band
        ax.axvline(span[0], color="0.6", lw=1, ls="--", zorder=0)
    else:
        ax.axvspan(*span, color="0.9", zorder=0)


def plot_all(records: list[dict[str, Any]], out: Path) -> list[Path]:
    """Write losses.png, grad_norm.png and mix.png; return their paths ([] without matplotlib)."""
    plt = pyplot()
    if plt is None:
        return []
    arms = _by_arm(records)
    colors = dict(zip(arms, plt.rcParams["axes.prop_cycle"].by_key()["color"] * 3))
    paths = []

    fig, axes = plt.subplots(
        len(arms), 2, figsize=(11, 2.3 * len(arms)), sharex=True, squeeze=False
    )
    for row, (arm, recs) in enumerate(arms.items()):
        for col, domain in enumerate(domains_of(recs[0])):
            ax = axes[row, col]
            _shade(ax, recs[0])
            steps = recs[0]["eval_step"]
            curves = np.array([r[f"eval_{domain}"] for r in recs])
            for other, orecs in arms.items():  # the other arms, faint, for comparison
                if other != arm:
                    ax.plot(
                        steps,
                        np.mean([r[f"eval_{domain}"] for r in orecs], axis=0),
                        color="0.75",
                        lw=0.8,
                    )
            mean = curves.mean(axis=0)
            ax.plot(steps, mean, color=colors[arm], lw=1.8, label=f"{arm}: mean over seeds")
            ax.fill_between(
                steps,
                curves.min(axis=0),
                curves.max(axis=0),
                color=colors[arm],
                alpha=0.25,
                lw=0,
                label="lowest to highest seed",
            )
            ax.set_title(f"{arm}: held-out {domain} loss", fontsize=_FONT)
            # Zoom past the first steep drop, where the arms differ.
            settled = np.asarray(steps) >= 0.1 * recs[0]["config"]["steps"]
            every = [np.asarray(r[f"eval_{domain}"]) for rs in arms.values() for r in rs]
            top = max(c[settled].max() if settled.any() else c.max() for c in every)
            low = min(c.min() for c in every)
            ax.set_ylim(low - 0.05 * (top - low), top + 0.05 * (top - low))
            ax.set_ylabel("nats/byte", fontsize=_FONT)
            if row == 0 and col == 0:
                ax.plot([], [], color="0.75", lw=0.8, label="other arms (means)")
                ax.legend(fontsize=_FONT - 2, loc="upper right")
    for ax in axes[-1]:
        ax.set_xlabel("step (shaded: where the arm's mix moves; dashed: an abrupt switch)")
    n_seeds = min(len(r) for r in arms.values())
    fig.suptitle(
        f"held-out loss per domain: line = mean over {n_seeds} seed(s), band = lowest to "
        "highest seed, grey = the other arms' means",
        fontsize=_FONT + 1,
    )
    paths.append(save(fig, out / "losses.png"))

    fig, ax = plt.subplots(figsize=(10, 3.8))
    moves = [recs[0] for recs in arms.values() if move(recs[0]) is not None]
    for rec in sorted(moves, key=lambda r: move(r)[1] - move(r)[0] < 2):  # bands, then lines
        _shade(ax, rec)
    for arm, recs in arms.items():
        g = np.mean([r["grad_norm"] for r in recs], axis=0)
        ax.plot(smooth(g), color=colors[arm], lw=1.2, label=arm)
    ax.set_xlabel("step (shaded: where the mixes move; dashed: the abrupt switch)", fontsize=_FONT)
    ax.set_ylabel("gradient norm", fontsize=_FONT)
    ax.set_title(
        "gradient norm before clipping: mean over seeds, then a centred 5-step mean "
        "(shorter at the edges, no padding)",
        fontsize=_FONT,
    )
    ax.legend(fontsize=_FONT - 1)
    paths.append(save(fig, out / "grad_norm.png"))

    fig, ax = plt.subplots(figsize=(10, 3.6))
    for arm, recs in arms.items():
        r = recs[0]
        first = domains_of(r)[0]
        ax.plot(r[f"weight_{first}"], color=colors[arm], lw=1.5, label=f"{arm}: scheduled")
        ax.plot(r[f"share_{first}"], color=colors[arm], lw=0, marker=".", ms=2, alpha=0.5)
    ax.set_xlabel("step", fontsize=_FONT)
    ax.set_ylabel(f"share of {domains_of(records[0])[0]} in the batch", fontsize=_FONT)
    ax.set_title(
        "scheduled weight (lines) and realized share per batch (dots), first seed", fontsize=_FONT
    )
    ax.legend(fontsize=_FONT - 1)
    paths.append(save(fig, out / "mix.png"))
    return paths


def pyplot() -> Any:
    """matplotlib's pyplot on the file backend, or ``None`` (said) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plots skipped: matplotlib is not installed (pip install 'annealmix[plot]')")
        return None
    return plt


def save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
