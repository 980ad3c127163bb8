"""From the runs' records to the leaderboard and CSV/JSON files (the plots: ``plots``).

Measures, per run (then mean and spread over seeds per arm):

- ``final_code``, ``final_prose``: held-out loss at the end; ``final_mean`` is their
  mean, the ranking criterion (lower is better: a good model of both domains);
- ``forgetting``: final code loss minus the best code loss of the run;
- ``code_rise`` / ``prose_rise`` (named by the run's domains): how far the held-out
  loss rises above its level just before the switch (mean of the last three
  evaluations), at most, after it; ``*_rise_steps``: how many steps it stays above
  that level from the first evaluation above it (to the end of training if it
  never comes back down; a ramp's loss may fall on for a while before it rises);
- ``train_jump``: the largest rise of the training loss (5-step running mean) over
  its pre-switch level, during the move and shortly after (the loss falls through
  training, so its level is taken just before the arm's own switch);
- ``grad_jump``: the largest gradient norm in the window (below) minus its mean
  before, in units of its standard deviation before (how unusual the jump is
  against normal step-to-step fluctuation);
- ``turn``: how far the gradient's direction turns: the mean cosine between
  consecutive steps' gradients before the window, minus its lowest value in it
  (the post's "sudden shift in gradient statistics", as a direction, not a size);
- ``v_jump``: the largest ratio of the squared gradient to AdamW's second-moment
  estimate in the window, divided by its mean before: how far the new gradients
  outgrow what the optimizer's normalisation expects;
- ``alignment``: the mean cosine between the gradients of the two domains'
  held-out losses at the evaluations inside the move (1: the domains pull the
  weights the same way; 0: unrelated; below 0: against each other).

With several learning-rate schedules (``--lr-schedule constant,wsd,cosine``) arms are
named ``arm@schedule`` and ranked, and compared, within their schedule.

Per arm, the leaderboard also gives the 95% confidence interval of the mean final
loss over seeds (Student's t) and the arms whose intervals overlap it: arms this
run cannot tell apart (overlap is a conservative test: it calls some real
differences indistinguishable, never the reverse).

The switch is the first step whose scheduled mix differs from the step before
(the abrupt arm: the midpoint; a ramp: the start of its window); the constant arm
has none, so its figures are taken at the default window's start, as a reference
for noise. The three gradient measures (grad jump, turn, v jump) are taken over one
window for every arm, the arm's move widened to the default window (25% to 75% of
training) plus a margin of a tenth of training after it, against the margin before
it: the largest value of a noisy curve grows with the number of steps it is taken
over, so each arm's own window would favour the abrupt one, whose move is a step.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["MEASURES", "leaderboard", "measure", "move", "summarise", "write_outputs"]

MEASURES = (
    "final_mean",
    "final_code",
    "final_prose",
    "forgetting",
    "code_rise",
    "code_rise_steps",
    "prose_rise",
    "prose_rise_steps",
    "train_jump",
    "grad_jump",
    "turn",
    "v_jump",
    "alignment",
    "max_count_error",
    "tokens_per_s",
)
_REFERENCE_WINDOW = (0.25, 0.75)
DEFAULT_DOMAINS = ("code", "prose")


def domains_of(rec: dict[str, Any]) -> tuple[str, str]:
    """The run's (first, second) domain: the arms move from the first to the second."""
    return tuple(rec["config"].get("domains", DEFAULT_DOMAINS))


def measures(domains: tuple[str, str] = DEFAULT_DOMAINS) -> tuple[str, ...]:
    """``MEASURES`` named for these domains (``final_code`` is ``final_math`` for math)."""
    old, new = domains
    return tuple(k.replace("code", "\0").replace("prose", new).replace("\0", old)
                 for k in MEASURES)  # fmt: skip


# Student's t, two-sided 95%, by degrees of freedom (normal beyond the table).
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
        9: 2.262, 10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}  # fmt: skip


def confidence(values: Any) -> float:
    """Half-width of the 95% confidence interval of the mean of ``values`` (Student's t;
    NaN with fewer than two values)."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    n = values.size
    if n < 2:
        return float("nan")
    dof = n - 1
    t = _T95[max(k for k in _T95 if k <= dof)] if dof <= 30 else 1.96
    return float(t * values.std(ddof=1) / np.sqrt(n))


def move(rec: dict[str, Any]) -> tuple[int, int] | None:
    """First and last step at which the scheduled mix changes (``None``: it never does)."""
    w = np.asarray(rec[f"weight_{domains_of(rec)[0]}"])
    changes = np.flatnonzero(np.abs(np.diff(w)) > 1e-12) + 1
    return (int(changes[0]), int(changes[-1])) if changes.size else None


def _switch(rec: dict[str, Any]) -> tuple[int, int]:
    found = move(rec)
    if found is not None:
        return found
    return _reference(rec["config"]["steps"])


def _rise(steps: np.ndarray, loss: np.ndarray, start: int) -> tuple[float, float]:
    before = loss[steps <= start][-3:]
    after = loss[steps > start]
    if before.size == 0 or after.size == 0:
        return float("nan"), float("nan")
    above = after > before.mean()
    spacing = float(np.median(np.diff(steps))) if steps.size > 1 else 1.0
    if not above.any():
        return 0.0, 0.0
    first_up = int(np.argmax(above))  # the loss may first fall on, then rise (a ramp)
    back = np.flatnonzero(~above[first_up:])
    first_back = first_up + (int(back[0]) if back.size else above.size - first_up)
    return float(after.max() - before.mean()), float((first_back - first_up) * spacing)


def measure(rec: dict[str, Any]) -> dict[str, float]:
    """The measures of one run (see the module docstring)."""
    steps_total = rec["config"]["steps"]
    start, end = _switch(rec)
    steps = np.asarray(rec["eval_step"])
    a, b = domains_of(rec)  # the first domain (forgotten) and the second
    first, second = np.asarray(rec[f"eval_{a}"]), np.asarray(rec[f"eval_{b}"])
    out = {f"final_{a}": float(first[-1]), f"final_{b}": float(second[-1])}
    out["final_mean"] = (out[f"final_{a}"] + out[f"final_{b}"]) / 2
    out["forgetting"] = float(first[-1] - first.min())
    out[f"{a}_rise"], out[f"{a}_rise_steps"] = _rise(steps, first, start)
    out[f"{b}_rise"], out[f"{b}_rise_steps"] = _rise(steps, second, start)
    margin = max(5, steps_total // 10)
    train = np.convolve(np.asarray(rec["train_loss"]), np.ones(5) / 5, mode="same")
    pre, window = _around(train, start, min(steps_total, end + margin), margin)
    out["train_jump"] = float(window.max() - pre.mean()) if pre.size and window.size else np.nan
    # The gradient measures look at one window for every arm (its move, widened to
    # the default window, and a margin after): the largest value of a noisy curve
    # grows with the steps it is taken over, so each arm's own window would favour
    # the arm that moves at once.
    ref = _reference(steps_total)
    lo, hi = min(start, ref[0]), min(steps_total, max(end, ref[1]) + margin)
    pre, window = _around(np.asarray(rec["grad_norm"], dtype=float), lo, hi, margin)
    spread = pre.std() if pre.size > 1 else np.nan
    out["grad_jump"] = float((window.max() - pre.mean()) / spread) if spread > 0 else np.nan
    pre, window = _around(np.asarray(rec.get("grad_cos", []), dtype=float), lo, hi, margin)
    out["turn"] = float(pre.mean() - window.min()) if pre.size and window.size else np.nan
    pre, window = _around(np.asarray(rec.get("v_ratio", []), dtype=float), lo, hi, margin)
    out["v_jump"] = float(window.max() / pre.mean()) if pre.size and window.size else np.nan
    align = np.asarray(rec.get("align", []), dtype=float)
    inside = (steps[: align.size] >= start) & (steps[: align.size] <= end)
    out["alignment"] = float(align[inside].mean()) if inside.any() else np.nan
    out["max_count_error"] = float(rec["max_count_error"])
    out["tokens_per_s"] = float(rec["tokens_per_s"])
    return out


def _reference(steps: int) -> tuple[int, int]:
    lo, hi = _REFERENCE_WINDOW
    return int(round(lo * steps)), int(round(hi * steps)) - 1


def _around(curve: np.ndarray, lo: int, hi: int, margin: int) -> tuple[np.ndarray, np.ndarray]:
    """The finite values of ``curve`` in the ``margin`` steps before ``lo``, and in [lo, hi)."""
    pre, window = curve[max(0, lo - margin) : lo], curve[lo:hi]
    return pre[np.isfinite(pre)], window[np.isfinite(window)]


def summarise(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per arm: mean and standard deviation of every measure over seeds, ranked
    within each learning-rate schedule."""
    arms: dict[str, list[dict[str, float]]] = {}
    schedule: dict[str, str] = {}
    a, b = domains_of(records[0]) if records else DEFAULT_DOMAINS
    for rec in records:
        arms.setdefault(rec["arm"], []).append(measure(rec))
        schedule[rec["arm"]] = rec["config"].get("lr_schedule", "constant")
    order = list(dict.fromkeys(schedule.values()))
    rows = []
    for arm, runs in arms.items():
        row: dict[str, Any] = {"arm": arm, "seeds": len(runs), "lr_schedule": schedule[arm]}
        row["domains"] = [a, b]
        for key in measures((a, b)):
            values = np.array([r[key] for r in runs], dtype=float)
            row[key] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
            row[key + "_std"] = float(np.nanstd(values)) if np.isfinite(values).any() else 0.0
        row["final_mean_ci"] = confidence([r["final_mean"] for r in runs])
        samples = [rec["samples"] for rec in records if rec["arm"] == arm]
        row[f"samples_{a}"] = samples[0][a]
        row[f"samples_{b}"] = samples[0][b]
        rows.append(row)
    rows.sort(key=lambda r: (order.index(r["lr_schedule"]), r["final_mean"]))
    for row in rows:  # arms whose 95% intervals of the final mean loss overlap this one's
        row["indistinguishable"] = [
            other["arm"]
            for other in rows
            if other is not row
            and other["lr_schedule"] == row["lr_schedule"]
            and abs(other["final_mean"] - row["final_mean"])
            <= row["final_mean_ci"] + other["final_mean_ci"]
        ]
    return rows


def _cell(row: dict[str, Any], key: str, digits: int = 3) -> str:
    mean, std = row[key], row[key + "_std"]
    if not np.isfinite(mean):
        return "-"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def leaderboard(rows: list[dict[str, Any]]) -> str:
    """The ranked table, as Markdown; one per learning-rate schedule when there are
    several."""
    schedules = list(dict.fromkeys(r["lr_schedule"] for r in rows))
    if len(schedules) > 1:
        return "\n\n".join(
            f"learning rate: {lr}\n\n" + leaderboard([r for r in rows if r["lr_schedule"] == lr])
            for lr in schedules
        )
    a, b = rows[0].get("domains", DEFAULT_DOMAINS) if rows else DEFAULT_DOMAINS
    head = [
        "rank",
        "arm",
        "final mean loss",
        "95% CI",
        "indistinguishable from",
        f"final {a}",
        f"final {b}",
        f"{a} forgetting",
        f"{a} rise (steps)",
        f"{b} rise (steps)",
        "train-loss jump",
        "grad-norm jump (σ)",
        "gradient turn",
        "2nd-moment jump (x)",
        "domain alignment",
        f"samples {a}/{b}",
        "max count error",
        "tokens/s",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, r in enumerate(rows, start=1):
        cells = [
            str(i),
            r["arm"],
            _cell(r, "final_mean"),
            "-" if not np.isfinite(r["final_mean_ci"]) else f"± {r['final_mean_ci']:.3f}",
            ", ".join(r["indistinguishable"]) or "-",
            _cell(r, f"final_{a}"),
            _cell(r, f"final_{b}"),
            _cell(r, "forgetting"),
            f"{_cell(r, f'{a}_rise')} ({r[f'{a}_rise_steps']:.0f})",
            f"{_cell(r, f'{b}_rise')} ({r[f'{b}_rise_steps']:.0f})",
            _cell(r, "train_jump"),
            _cell(r, "grad_jump", 1),
            _cell(r, "turn", 2),
            _cell(r, "v_jump", 1),
            _cell(r, "alignment", 2),
            f"{r[f'samples_{a}']}/{r[f'samples_{b}']}",
            f"{r['max_count_error']:.2f}",
            f"{r['tokens_per_s']:,.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_outputs(
    records: list[dict[str, Any]], rows: list[dict[str, Any]], out: Path
) -> list[Path]:
    """results.json, runs.csv, curves.csv and leaderboard.md; the paths (the plots:
    ``annealmix.demo.plots.plot_all``)."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    path = out / "results.json"
    path.write_text(json.dumps({"leaderboard": rows, "runs": records}, indent=1))
    written.append(path)
    path = out / "runs.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        names = measures(domains_of(records[0])) if records else MEASURES
        w.writerow(["arm", "seed", *names])
        for rec in records:
            m = measure(rec)
            w.writerow([rec["arm"], rec["seed"], *(m[k] for k in names)])
    written.append(path)
    path = out / "curves.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        first = domains_of(records[0])[0] if records else "code"
        columns = ("train_loss", "grad_norm", f"weight_{first}", f"share_{first}", "lr",
                   "grad_cos", "v_ratio")  # fmt: skip
        w.writerow(["arm", "seed", "step", *columns])
        for rec in records:
            for step, row in enumerate(zip(*(rec[c] for c in columns))):
                w.writerow([rec["arm"], rec["seed"], step, *row])
    written.append(path)
    path = out / "leaderboard.md"
    path.write_text(leaderboard(rows) + "\n")
    written.append(path)
    return written
