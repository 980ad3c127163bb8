"""The mid-training study's figures (matplotlib, extra ``plot``): the design, the
held-out curves through the cooldown, and each arm's paired difference to the abrupt
switch with its interval."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .midtrain import ARMS, TARGET
from .midtrain_report import REFERENCE, summarise, tables, write_outputs
from .plots import pyplot, save

__all__ = ["plot_study", "publish"]

_FONT = 10


def _colors(plt: Any) -> dict[str, str]:
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {arm: cycle[i % len(cycle)] for i, arm in enumerate(ARMS)}


def plot_study(records: list[dict[str, Any]], rows: list[dict[str, Any]], out: Path) -> list[Path]:
    """Write design.png, curves.png and paired.png; their paths ([] without matplotlib)."""
    plt = pyplot()
    if plt is None:
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
    paths.append(save(fig, out / "design.png"))

    # (measure, title, first step shown): the last three decay-lengths, and for math loss
    # the decay's last three quarters (its fall at the switch dwarfs what follows)
    tail = steps - 3 * records[0]["decay_steps"]
    cooldown = decay_start + records[0]["decay_steps"] // 4
    panels = (("loss_math", "math loss", tail), ("loss_math", "math loss, late", cooldown),
              ("loss_code", "code loss", tail),
              ("answer_acc", "answer bytes right", tail))  # fmt: skip
    fig, axes = plt.subplots(len(endings), len(panels), figsize=(16, 3.4 * len(endings)),
                             squeeze=False)  # fmt: skip
    for row, ending in enumerate(endings):
        for col, (key, title, start) in enumerate(panels):
            ax = axes[row, col]
            for arm in arms:
                if start == cooldown and arm == "none":
                    continue  # no arithmetic: far above the rest
                recs = [r for r in records if r["arm"] == arm and r["ending"] == ending]
                x = np.asarray(recs[0]["eval_step"])
                keep = x >= start
                curve = np.mean([np.asarray(r[key]) for r in recs], axis=0)
                ax.plot(x[keep], curve[keep], color=colors[arm], lw=1.5, label=arm)
            ax.axvline(decay_start, color="0.5", ls="--", lw=1)
            ax.set_title(f"held-out {title}, decay to {ending}", fontsize=_FONT)
            if row == len(endings) - 1:
                ax.set_xlabel("step (dashed: the decay starts)", fontsize=_FONT)
    axes[0, 0].legend(fontsize=_FONT - 2, ncol=2)
    n = min(r["seeds"] for r in rows)
    fig.suptitle(f"held-out measures, mean over {n} seeds (second column: the last three "
                 "quarters of the decay, without none)", fontsize=_FONT + 1)  # fmt: skip
    paths.append(save(fig, out / "curves.png"))

    panels = (("loss_math", "math loss", 1.0), ("loss_code", "code loss", 1.0),
              ("answer_acc", "answer bytes right (points)", 100.0))  # fmt: skip
    shown = [r for e in endings for r in rows
             if r["ending"] == e and r["arm"] not in (REFERENCE, "none")]  # fmt: skip
    fig, axes = plt.subplots(1, len(panels), figsize=(13, 0.45 * len(shown) + 1.6), squeeze=False)
    for col, (key, title, scale) in enumerate(panels):
        ax = axes[0, col]
        for i, row in enumerate(shown):
            mean, half = row[f"d_{key}"] * scale, row[f"d_{key}_ci"] * scale
            ax.errorbar(mean, i, xerr=half if np.isfinite(half) else None, fmt="o",
                        color=colors[row["arm"]], capsize=3)  # fmt: skip
        ax.axvline(0, color=colors[REFERENCE], lw=1.2)
        ax.set_yticks(range(len(shown)), [r["run"] for r in shown] if col == 0 else [])
        ax.invert_yaxis()
        ax.set_title(f"{title} minus {REFERENCE}'s", fontsize=_FONT)
    fig.suptitle(f"paired with {REFERENCE} seed by seed: mean difference ± 95% interval over "
                 f"{n} seeds (an interval across the line: indistinguishable)",
                 fontsize=_FONT + 1)  # fmt: skip
    paths.append(save(fig, out / "paired.png"))
    return paths


def publish(design: list[dict[str, Any]], records: list[dict[str, Any]], out: Path) -> None:
    """Print the report's tables and write its files and figures under ``out``."""
    rows = summarise(records)
    print(tables(design, records, rows))
    written = write_outputs(design, records, rows, out)
    written += plot_study(records, rows, out)
    print(f"\nwrote {', '.join(str(p) for p in written)}")
