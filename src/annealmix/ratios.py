"""Weights written in text keep their ratios to the precision they are written at.

Two data-file-lists of one run (a pretraining list and a cooldown list) usually
give each corpus a new share and spread it over the corpus's files in the same
ratios as before, written to a fixed number of decimals: ``0.0019365418`` in one
list, ``0.0006455139`` in the other. Rounded so, the ratios agree to nine or ten
digits, not exactly, and a plan with ``corpora`` would count every such file on its
own (exactly, but each corpus then strays by up to its number of files from its
share per step, and a lookup costs what one over every file does), where it could
count the corpus as one unit.

``kept_ratios`` reads each weight as the interval its text allows (``0.25`` is
``[0.245, 0.255]``; a weight of 0 is exactly 0). Where values inside those intervals
exist that make a corpus's weights in a list proportional to its weights in the
first list that gives the corpus any, the weights become such values: the first
list's the nearest to what it wrote, the other's a multiple of them (its total as
written, where the intervals allow). No weight leaves the interval its text gives
(up to the floats' rounding), so each list still says what it said; files whose
ratios differ by more are left as written, and so is a corpus one list gives a file
the other leaves out.
"""

from __future__ import annotations

import decimal

__all__ = ["half_unit", "kept_ratios"]


def half_unit(text: str) -> float:
    """Half a unit in the last written place of a weight (0 for a weight of 0):
    how far the value it stands for may lie from it."""
    value = decimal.Decimal(text)
    if value == 0:
        return 0.0
    return 0.5 * 10.0 ** value.as_tuple().exponent


def kept_ratios(
    mixes: list[dict[str, float]], halves: list[dict[str, float]], corpus_of: dict[str, str]
) -> list[dict[str, float]]:
    """Each list's weights (by file), a corpus's made proportional to its first
    list's where the written precision (``halves``, by file) allows it."""
    members: dict[str, list[str]] = {}
    for file, corpus in corpus_of.items():
        members.setdefault(corpus, []).append(file)
    out = [dict(mix) for mix in mixes]
    for files in members.values():
        first = None  # the first list giving the corpus any weight, and its half units
        for mix, half in zip(out, halves):
            if sum(mix.get(f, 0.0) for f in files) <= 0:
                continue
            if first is None:
                first = (mix, dict(half))
                continue
            scale = _scale(files, *first, mix, half)
            if scale is None:
                continue
            ref, ref_half = first
            for f in files:  # the first list's values, then this one's multiple of them
                if ref.get(f, 0.0) > 0:
                    low, high = (mix[f] - half[f]) / scale, (mix[f] + half[f]) / scale
                    ref[f] = min(max(ref[f], low, ref[f] - ref_half[f]), high,
                                 ref[f] + ref_half[f])  # fmt: skip
                    ref_half[f] = 0.0  # fixed now: later lists scale these values
            for f in files:
                if f in mix:
                    mix[f] = scale * ref.get(f, 0.0)
    return out


def _scale(files: list[str], a: dict, ha: dict, b: dict, hb: dict) -> float | None:
    """A factor ``c`` with ``c * x_f`` inside ``b``'s interval for some ``x_f`` inside
    ``a``'s, for every file; ``None`` where there is none (or a file is in one only).
    The ratio of the totals where it lies inside the range that allows."""
    low, high = 0.0, float("inf")
    for f in files:
        x, y = a.get(f, 0.0), b.get(f, 0.0)
        if (x > 0) != (y > 0):
            return None
        if x > 0:
            low = max(low, (y - hb.get(f, 0.0)) / (x + ha.get(f, 0.0)))
            below = x - ha.get(f, 0.0)
            if below > 0:
                high = min(high, (y + hb.get(f, 0.0)) / below)
    if low > high:
        return None
    ratio = sum(b.get(f, 0.0) for f in files) / sum(a.get(f, 0.0) for f in files)
    return min(max(ratio, low), high)
