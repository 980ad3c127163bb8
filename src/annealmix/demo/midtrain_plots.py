"""The mid-training study's figures (matplotlib, extra ``plot``): the design, the
held-out curves through the cooldown, and the final measures with their intervals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .midtrain import ARMS, TARGET
from .midtrain_report import REFERENCE
from .plots import _save

__all__ = ["plot_study"]

_FONT = 10


def _colors(plt: Any) -> dict[str, str]:
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {arm: cycle[i % len(cycle)] for i, arm in enumerate(ARMS)}


def plot_study(records: list[dict[str, Any]], rows: list[dict[str, Any]], out: Path) -> list[Path]:
    """Write design.png, curves.png and finals.png; their paths ([] without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plots skipped: matplotlib is not installed (pip install 'annealmix[plot]')")
        return []
    colors = _colors(plt)
    endings = list(dict.fromkeys(r["ending"] for r in records))
    arms = list(dict.fromkeys(r["arm"] for r in records))
    steps = records[0]["config"]["steps"]
    decay_start = steps - records[0]["decay_steps"]
    first = {(r["arm"], r["ending"]): r for r in records if r["seed"] == records[0]["seed"]}
    paths = []

    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(10, 6), sharex=True, gridspec_kw={"height_ratios": [2, 1]}
    )
    for arm in arms:
        rec = first[(arm, endings[0])]
        top.plot(rec[f"weight_{TARGET}"], color=colors[arm], lw=1.6, label=arm)
    top.axvline(decay_start, color="0.5", ls="--", lw=1)
    top.set_ylabel(f"share of {TARGET}", fontsize=_FONT)
    top.set_title(
        f"each arm's scheduled share of {TARGET} in the batch (mix B is half {TARGET})\n"
        "the online arm: its controller's weights, first seed; dashed: the decay starts",
        fontsize=_FONT,
    )
    top.legend(fontsize=_FONT - 1, ncol=4)
    for ending in endings:
        bottom.plot(first[(arms[0], ending)]["lr"], lw=1.6, label=f"decay to {ending}")
    bottom.set_ylabel("learning rate", fontsize=_FONT)
    bottom.set_xlabel("step", fontsize=_FONT)
    bottom.legend(fontsize=_FONT - 1)
    paths.append(_save(fig, out / "design.png"))

    panels = (
        ("loss_math", "held-out math loss"),
        ("loss_code", "held-out code loss"),
        ("answer_acc", "answer bytes right"),
    )
    fig, axes = plt.subplots(
        len(endings), len(panels), figsize=(13, 3.4 * len(endings)), squeeze=False, sharex=True
    )
    start = steps - 3 * records[0]["decay_steps"]
    for row, ending in enumerate(endings):
        for col, (key, title) in enumerate(panels):
            ax = axes[row, col]
            for arm in arms:
                recs = [r for r in records if r["arm"] == arm and r["ending"] == ending]
                x = np.asarray(recs[0]["eval_step"])
                keep = x >= start
                curve = np.mean([np.asarray(r[key]) for r in recs], axis=0)
                ax.plot(x[keep], curve[keep], color=colors[arm], lw=1.5, label=arm)
            ax.axvline(decay_start, color="0.5", ls="--", lw=1)
            ax.set_title(f"{title}, decay to {ending}", fontsize=_FONT)
            if row == len(endings) - 1:
                ax.set_xlabel("step (dashed: the decay starts)", fontsize=_FONT)
    axes[0, 0].legend(fontsize=_FONT - 2, ncol=2)
    n = min(r["seeds"] for r in rows)
    fig.suptitle(
        f"the last {3 * records[0]['decay_steps']} steps: mean over {n} seeds", fontsize=_FONT + 1
    )
    paths.append(_save(fig, out / "curves.png"))

    panels = (
        ("loss_math", "math loss", 1.0),
        ("loss_code", "code loss", 1.0),
        ("answer_acc", "answer bytes right (%)", 100.0),
    )
    fig, axes = plt.subplots(
        1, len(panels), figsize=(13, 0.5 * len(arms) * len(endings) + 1.5), squeeze=False
    )
    for col, (key, title, scale) in enumerate(panels):
        ax = axes[0, col]
        labels: list[str] = []
        for ending in endings:
            these = [r for r in rows if r["ending"] == ending]
            top = len(labels)
            for row in these:
                mean, half = row[key] * scale, row[f"{key}_ci"] * scale
                ax.errorbar(
                    mean,
                    len(labels),
                    xerr=half if np.isfinite(half) else None,
                    fmt="o",
                    color=colors[row["arm"]],
                    capsize=3,
                )
                labels.append(row["run"])
            ref = [r for r in these if r["arm"] == REFERENCE]
            if ref and np.isfinite(ref[0][f"{key}_ci"]):
                mean, half = ref[0][key] * scale, ref[0][f"{key}_ci"] * scale
                ax.fill_betweenx(
                    [top - 0.5, len(labels) - 0.5],
                    mean - half,
                    mean + half,
                    color=colors[REFERENCE],
                    alpha=0.1,
                    lw=0,
                )
        ax.set_yticks(range(len(labels)), labels if col == 0 else [""] * len(labels))
        ax.invert_yaxis()
        ax.set_title(title, fontsize=_FONT)
    fig.suptitle(
        f"final held-out measures: mean ± 95% interval over {n} seeds (band: "
        f"{REFERENCE}'s interval)",
        fontsize=_FONT + 1,
    )
    paths.append(_save(fig, out / "finals.png"))
    return paths
