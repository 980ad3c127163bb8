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

__all__ = ["CONTRASTS", "MEASURES", "measure", "paired", "summarise", "tables", "write_outputs"]

FINAL = ("loss_math", "loss_code", "loss_prose", "answer_acc", "exact", "acc_code", "acc_prose")
MEASURES = (*FINAL, "code_rise", "math_samples", "math_age")
REFERENCE = "abrupt"
PAIRED = ("loss_math", "loss_code", "answer_acc", "acc_code")
# The controls: each pair differs in one thing, the rest of the design held equal.
CONTRASTS = (
    ("anneal", "recency", "the shape alone: as many B samples, as recent on average"),
    ("early", "preramp", "mixing early: the same mix through the decay, as many B samples"),
)


def first_move(rec: dict[str, Any]) -> int:
    """The first step whose scheduled mix differs from the first step's (the decay's
    first step for the arm that never moves)."""
    w = np.asarray(rec[f"weight_{TARGET}"])
    moved = np.flatnonzero(np.abs(w - w[0]) > 1e-12)
    steps = rec["config"]["steps"]
    return int(moved[0]) if moved.size else steps - rec["decay_steps"]


def measure(rec: dict[str, Any]) -> dict[str, float]:
    """One run's measures (see the module docstring)."""
    out = {k: float(rec[k][-1]) for k in FINAL}
    steps = np.asarray(rec["eval_step"])
    out["code_rise"] = _rise(steps, np.asarray(rec["loss_code"]), first_move(rec))[0]
    counts = np.asarray(rec[f"count_{TARGET}"], dtype=float)
    total = counts.sum()
    age = len(counts) - np.arange(len(counts))
    out["math_samples"] = float(total)
    out["math_age"] = float((counts * age).sum() / total) if total else float("nan")
    return out


def paired(records: list[dict[str, Any]], run: str, other: str) -> dict[str, Any]:
    """Run ``run`` minus run ``other`` (names ``arm@ending``), seed by seed: per measure
    in ``PAIRED`` the mean difference and its 95% interval (NaN without common seeds)."""
    runs = {(r["run"], r["seed"]): measure(r) for r in records if r["run"] in (run, other)}
    seeds = sorted(s for name, s in runs if name == run and (other, s) in runs)
    out: dict[str, Any] = {"seeds": len(seeds)}
    for key in PAIRED:
        diffs = [runs[(run, s)][key] - runs[(other, s)][key] for s in seeds]
        out[f"d_{key}"] = float(np.mean(diffs)) if diffs else float("nan")
        out[f"d_{key}_ci"] = confidence(diffs)
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
        row: dict[str, Any] = {"run": name, "arm": recs[0]["arm"], "ending": recs[0]["ending"],
                               "seeds": len(recs)}  # fmt: skip
        for key in MEASURES:
            values = np.array([m[key] for m in runs])
            row[key] = float(np.mean(values))
            row[key + "_std"] = float(np.std(values))
            row[key + "_ci"] = confidence(values)
        row["passes"] = {d: max(r["passes"][d] for r in recs) for d in DOMAINS}
        row["reference"] = row["arm"] == REFERENCE
        diff = paired(records, name, f"{REFERENCE}@{row['ending']}")
        row |= {k: v for k, v in diff.items() if k.startswith("d_")}
        rows.append(row)
    for row in rows:
        for key in ("loss_math", "loss_code"):
            row[f"same_{key}"] = [
                other["arm"] for other in rows
                if other is not row and other["ending"] == row["ending"]
                and abs(other[key] - row[key]) <= row[f"{key}_ci"] + other[f"{key}_ci"]
            ]  # fmt: skip
    return rows


def _ci(row: dict[str, Any], key: str, scale: float = 1.0, digits: int = 3) -> str:
    mean, half = row[key] * scale, row[f"{key}_ci"] * scale
    if not np.isfinite(mean):
        return "-"
    return f"{mean:.{digits}f}" + ("" if not np.isfinite(half) else f" ± {half:.{digits}f}")


def _paired(row: dict[str, Any], key: str, scale: float = 1.0, digits: int = 3) -> str:
    if row.get("reference"):
        return "(reference)"
    mean, half = row[f"d_{key}"] * scale, row[f"d_{key}_ci"] * scale
    if not np.isfinite(mean):
        return "-"
    if not np.isfinite(half):
        return f"{mean:+.{digits}f}"
    verdict = "indistinguishable" if abs(mean) <= half else ("lower" if mean < 0 else "higher")
    return f"{mean:+.{digits}f} ± {half:.{digits}f} ({verdict})"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(cells) + " |" for cells in [head, ["---"] * len(head), *rows]]


def tables(design: list[dict[str, Any]], records: list[dict[str, Any]],
           rows: list[dict[str, Any]]) -> str:  # fmt: skip
    """The report as Markdown: the design, per ending the results and the paired
    differences to the abrupt switch, the controls (``CONTRASTS``) and the endings
    against each other."""
    out = ["### Design (scheduled; the online arm's are what its controller drew)", ""]
    head = ["arm", "samples from mix B", "math samples", "mean age of math (steps)",
            "lambda at the end", "most reads of a window (code/prose/math)"]  # fmt: skip
    first: dict[str, dict[str, Any]] = {}
    for row in rows:
        first.setdefault(row["arm"], row)
    cells = []
    for d in design:
        if d["run"] != f"{d['arm']}@{rows[0]['ending']}" or d["arm"] not in first:
            continue
        r, online = first[d["arm"]], d["online"]
        age = r["math_age"] if online else d["mean_age"]
        cells.append([
            d["arm"],
            "-" if online else f"{d['b_samples']:.0f}",
            f"{r['math_samples'] if online else d['math_samples']:.0f}",
            "-" if not np.isfinite(age) else f"{age:.0f}",
            "-" if online else f"{d['final_lambda']:.2f}",
            "/".join(str(r["passes"][k]) for k in DOMAINS),
        ])  # fmt: skip
    out += _table(head, cells)
    for ending in dict.fromkeys(r["ending"] for r in rows):
        these = sorted((r for r in rows if r["ending"] == ending), key=lambda r: r["loss_math"])
        seeds = min(r["seeds"] for r in these)
        out += ["", f"### Learning rate decayed to {ending}: means ± 95% intervals over {seeds} "
                "seeds, ranked by held-out math loss", ""]  # fmt: skip
        head = ["arm", "math loss", "code loss", "prose loss", "answer bytes right (%)",
                "answers exact (%)", "code next-byte right (%)", "prose next-byte right (%)",
                "code-loss rise", "indistinguishable on math loss", "on code loss"]  # fmt: skip
        out += _table(head, [[r["arm"], _ci(r, "loss_math"), _ci(r, "loss_code"),
                              _ci(r, "loss_prose"), _ci(r, "answer_acc", 100, 1),
                              _ci(r, "exact", 100, 1), _ci(r, "acc_code", 100, 1),
                              _ci(r, "acc_prose", 100, 1), _ci(r, "code_rise"),
                              ", ".join(r["same_loss_math"]) or "-",
                              ", ".join(r["same_loss_code"]) or "-"] for r in these])  # fmt: skip
        out += ["", f"Paired with {REFERENCE} (same seed): the difference, ± its 95% interval", ""]
        head = ["arm", "math loss", "code loss", "answer bytes right (points)",
                "code next-byte right (points)"]  # fmt: skip
        out += _table(head, [[r["arm"], _paired(r, "loss_math"), _paired(r, "loss_code"),
                              _paired(r, "answer_acc", 100, 2), _paired(r, "acc_code", 100, 2)]
                             for r in these])  # fmt: skip
    endings = list(dict.fromkeys(r["ending"] for r in rows))
    arms = list(dict.fromkeys(r["arm"] for r in rows))
    head = ["math loss", "code loss", "answer bytes right (points)",
            "code next-byte right (points)"]  # fmt: skip

    def cells(c: dict[str, Any]) -> list[str]:
        return [_paired(c, "loss_math"), _paired(c, "loss_code"), _paired(c, "answer_acc", 100, 2),
                _paired(c, "acc_code", 100, 2)]  # fmt: skip

    controls = [[f"{a} - {b}", what, e, *cells(paired(records, f"{a}@{e}", f"{b}@{e}"))]
                for a, b, what in CONTRASTS if {a, b} <= set(arms)
                for e in endings]  # fmt: skip
    if controls:
        out += ["", "### The controls: paired differences, ± their 95% intervals", ""]
        out += _table(["contrast", "what differs", "decay to", *head], controls)
    if len(endings) > 1:
        first, second = endings[:2]
        out += ["", f"### The endings: each arm decayed to {first} minus to {second}, paired "
                "(the same pre-training up to the decay)", ""]  # fmt: skip
        out += _table(["arm", *head], [[arm, *cells(paired(records, f"{arm}@{first}",
                                                            f"{arm}@{second}"))]
                                       for arm in arms])  # fmt: skip
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
    paths[3].write_text(tables(design, records, rows) + "\n")
    return paths
