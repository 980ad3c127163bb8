"""The mid-training study's report: measures per run, means and 95% intervals per
arm, paired differences against the abrupt switch, the tables, the CSV/JSON files.

Measures (held-out, at the end of training unless said):

- ``loss_math``, ``loss_code``, ``loss_prose``: cross-entropy in nats per byte;
- ``answer_acc``: the share of arithmetic answer bytes predicted right (the task);
  ``exact``: the share of answers with every byte right;
- ``acc_code``, ``acc_prose``: next-byte accuracy;
- ``code_rise``: how far held-out code loss rises, at most, above its level just
  before the arm's mix first moves (the transient a switch causes; the reference
  arm is measured from the decay's start);
- ``math_samples`` and ``math_age``: arithmetic samples drawn, and their mean age at
  the end of training in steps (how recent the exposure is), as realized;
- ``passes``: the most times the run read any training window of a domain.

Per arm and ending: mean over seeds and the 95% interval of the mean (Student's t).
Arms whose intervals overlap are listed as indistinguishable (a conservative test:
it calls some real differences indistinguishable, never the reverse). Because every
seed's arms share their initialization and pre-training, the paired difference to
``abrupt`` (per seed, then its mean and 95% interval) is the sharper comparison: an
interval that holds 0 is reported as indistinguishable from ``abrupt``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from .midtrain import DOMAINS, TARGET
from .report import _rise, confidence

__all__ = ["MEASURES", "measure", "summarise", "tables", "write_outputs"]

MEASURES = (
    "loss_math",
    "loss_code",
    "loss_prose",
    "answer_acc",
    "exact",
    "acc_code",
    "acc_prose",
    "code_rise",
    "math_samples",
    "math_age",
)
REFERENCE = "abrupt"
PAIRED = ("loss_math", "loss_code", "answer_acc")


def first_move(rec: dict[str, Any]) -> int:
    """The first step whose scheduled mix differs from the first step's (the decay's
    first step for the arm that never moves)."""
    w = np.asarray(rec[f"weight_{TARGET}"])
    moved = np.flatnonzero(np.abs(w - w[0]) > 1e-12)
    steps = rec["config"]["steps"]
    return int(moved[0]) if moved.size else steps - rec["decay_steps"]


def measure(rec: dict[str, Any]) -> dict[str, float]:
    """One run's measures (see the module docstring)."""
    out = {
        k: float(rec[k][-1])
        for k in (
            "loss_math",
            "loss_code",
            "loss_prose",
            "answer_acc",
            "exact",
            "acc_code",
            "acc_prose",
        )
    }
    steps = np.asarray(rec["eval_step"])
    out["code_rise"] = _rise(steps, np.asarray(rec["loss_code"]), first_move(rec))[0]
    counts = np.asarray(rec[f"count_{TARGET}"], dtype=float)
    total = counts.sum()
    age = len(counts) - np.arange(len(counts))
    out["math_samples"] = float(total)
    out["math_age"] = float((counts * age).sum() / total) if total else float("nan")
    return out


def summarise(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per run (arm@ending): each measure's mean, standard deviation and 95% interval
    over seeds; the paired differences to ``abrupt``; the arms indistinguishable on
    math and on code loss (overlapping intervals, within the ending)."""
    by_run: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        by_run.setdefault(rec["run"], []).append(rec)
    rows = []
    for name, recs in by_run.items():
        runs = [measure(r) for r in recs]
        row: dict[str, Any] = {
            "run": name,
            "arm": recs[0]["arm"],
            "ending": recs[0]["ending"],
            "seeds": len(recs),
        }
        for key in MEASURES:
            values = np.array([m[key] for m in runs])
            row[key] = float(np.mean(values))
            row[key + "_std"] = float(np.std(values))
            row[key + "_ci"] = confidence(values)
        row["passes"] = {d: max(r["passes"][d] for r in recs) for d in DOMAINS}
        reference = {r["seed"]: measure(r) for r in by_run.get(f"{REFERENCE}@{row['ending']}", [])}
        for key in PAIRED:
            diffs = [
                m[key] - reference[r["seed"]][key]
                for m, r in zip(runs, recs)
                if r["seed"] in reference
            ]
            row[f"d_{key}"] = float(np.mean(diffs)) if diffs else float("nan")
            row[f"d_{key}_ci"] = confidence(diffs)
        rows.append(row)
    for row in rows:
        for key in ("loss_math", "loss_code"):
            row[f"same_{key}"] = [
                other["arm"]
                for other in rows
                if other is not row
                and other["ending"] == row["ending"]
                and abs(other[key] - row[key]) <= row[f"{key}_ci"] + other[f"{key}_ci"]
            ]
    return rows


def _ci(row: dict[str, Any], key: str, scale: float = 1.0, digits: int = 3) -> str:
    mean, half = row[key] * scale, row[f"{key}_ci"] * scale
    if not np.isfinite(mean):
        return "-"
    return f"{mean:.{digits}f}" + ("" if not np.isfinite(half) else f" ± {half:.{digits}f}")


def _paired(row: dict[str, Any], key: str, scale: float = 1.0, digits: int = 3) -> str:
    if row["arm"] == REFERENCE:
        return "(reference)"
    mean, half = row[f"d_{key}"] * scale, row[f"d_{key}_ci"] * scale
    if not np.isfinite(mean):
        return "-"
    if not np.isfinite(half):
        return f"{mean:+.{digits}f}"
    verdict = "indistinguishable" if abs(mean) <= half else ("lower" if mean < 0 else "higher")
    return f"{mean:+.{digits}f} ± {half:.{digits}f} ({verdict})"


def tables(design: list[dict[str, Any]], rows: list[dict[str, Any]]) -> str:
    """The report as Markdown: the design, then per ending the results and the paired
    differences to the abrupt switch."""
    out = ["### Design (scheduled; the online arm's are what its controller drew)", ""]
    head = [
        "arm",
        "samples from mix B",
        "math samples",
        "mean age of math (steps)",
        "lambda at the end",
        "most reads of a window (code/prose/math)",
    ]
    out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    first = {}
    for row in rows:
        first.setdefault(row["arm"], row)
    for d in design:
        if d["run"] != f"{d['arm']}@{rows[0]['ending']}" or d["arm"] not in first:
            continue
        r = first[d["arm"]]
        samples = f"{r['math_samples']:.0f}" if d["online"] else f"{d['math_samples']:.0f}"
        age = r["math_age"] if d["online"] else d["mean_age"]
        b = "-" if d["online"] else f"{d['b_samples']:.0f}"
        passes = "/".join(str(r["passes"][k]) for k in DOMAINS)
        age_cell = "-" if not np.isfinite(age) else f"{age:.0f}"
        end = "-" if d["online"] else f"{d['final_lambda']:.2f}"
        out.append(f"| {d['arm']} | {b} | {samples} | {age_cell} | {end} | {passes} |")
    for ending in dict.fromkeys(r["ending"] for r in rows):
        these = sorted((r for r in rows if r["ending"] == ending), key=lambda r: r["loss_math"])
        seeds = min(r["seeds"] for r in these)
        out += [
            "",
            f"### Learning rate decayed to {ending}: means ± 95% intervals over "
            f"{seeds} seeds, ranked by held-out math loss",
            "",
        ]
        head = [
            "arm",
            "math loss",
            "code loss",
            "prose loss",
            "answer bytes right (%)",
            "answers exact (%)",
            "code-loss rise",
            "indistinguishable on math loss",
            "on code loss",
        ]
        out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in these:
            cells = [
                r["arm"],
                _ci(r, "loss_math"),
                _ci(r, "loss_code"),
                _ci(r, "loss_prose"),
                _ci(r, "answer_acc", 100, 1),
                _ci(r, "exact", 100, 1),
                _ci(r, "code_rise"),
                ", ".join(r["same_loss_math"]) or "-",
                ", ".join(r["same_loss_code"]) or "-",
            ]
            out.append("| " + " | ".join(cells) + " |")
        out += ["", f"Paired with {REFERENCE} (same seed): the difference, ± its 95% interval", ""]
        head = ["arm", "math loss", "code loss", "answer bytes right (points)"]
        out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in these:
            cells = [
                r["arm"],
                _paired(r, "loss_math"),
                _paired(r, "loss_code"),
                _paired(r, "answer_acc", 100, 1),
            ]
            out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def write_outputs(
    design: list[dict[str, Any]],
    records: list[dict[str, Any]],
    rows: list[dict[str, Any]],
    out: Path,
) -> list[Path]:
    """results.json, runs.csv, curves.csv and report.md under ``out``; the paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "results.json", out / "runs.csv", out / "curves.csv", out / "report.md"]
    paths[0].write_text(json.dumps({"design": design, "summary": rows, "runs": records}, indent=1))
    with open(paths[1], "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["run", "arm", "ending", "seed", *MEASURES])
        for rec in records:
            m = measure(rec)
            w.writerow(
                [rec["run"], rec["arm"], rec["ending"], rec["seed"], *(m[k] for k in MEASURES)]
            )
    columns = [k for k in records[0] if k.startswith(("loss_", "acc_"))] + ["answer_acc", "exact"]
    with open(paths[2], "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["run", "seed", "step", *columns])
        for rec in records:
            for i, step in enumerate(rec["eval_step"]):
                w.writerow([rec["run"], rec["seed"], step, *(rec[c][i] for c in columns)])
    paths[3].write_text(tables(design, rows) + "\n")
    return paths
