"""Thousands of sources in corpora: exact counts per unit, a closed form inside.

A plan given ``corpora`` counts its sources in *units*: the sources of one corpus
whose weights keep their ratios at every step (each vector the mixture moves
between, restricted to them, is proportional to one vector ``p``; a corpus whose
files change their ratios splits into several units, a source in no corpus is a
unit of its own). The units' counts ``C_u(t)`` come from the usual exact counter
over the mixture of the units (``EarliestDeadline``, or ``Nearest`` for two), so
they keep its bound: ``|C_u(t) - T_u(t)| < 1`` (1/2 for two units). Inside a unit,
``n`` samples split by a Huffman tree over ``p``: a node holding ``n`` gives its
lighter child ``floor(q n + 1/2)``, ``q`` that child's share of the node's weight
(an integer out of ``2**40``), and the other child the rest. Both are
nondecreasing in ``n`` (``q <= 1``), so every source's count ``n_f(C_u(t))`` is
too, and a step's samples of a source are the difference of two such counts.

Bound: ``|n_f(t) - p_f T_u(t)| < psi / 2 = 1.68`` samples for every source, every step
(``psi = 3.3599`` is the sum of the Fibonacci numbers' reciprocals). Proof: a child
``c`` of ``v`` has error ``e_c = (round(q n_v) - q n_v) + q e_v`` (the other child:
``(1 - q) e_v`` minus the same rounding), so ``|e_c| <= 1/2 + (p_c / p_v) |e_v|``
and, down the path ``f = v_0, v_1, ..., v_d = u``,
``|e_f| <= 1/2 * sum_{j<d} p_f / p_{v_j} + (p_f / p_u) |e_u|``. In a Huffman tree the
sibling of ``v_{j+1}`` weighs at least ``v_j`` (when ``v_j`` was merged it was among
the two lightest nodes, and every node not yet merged, or built later from such
nodes, weighs at least as much), so ``p_{v_{j+2}} >= p_{v_{j+1}} + p_{v_j}``: the
weights grow at least as the Fibonacci numbers, ``p_f / p_{v_j} <= 1 / F_{j+1}``, and
with ``|e_u| < 1`` the sum stays under ``psi / 2``. A unit of one source keeps
the unit bound. (``p`` here is the product of the quantised shares down the path,
within ``depth * 2**-41`` of the weights' own ratio.)

Cost: any step's counts are the unit counter's (O(units) per replayed step, held
segments in closed form) plus O(sources) for the split, so a resume at 4,000
files costs what one at 20 corpora does. Splits are exact int64 arithmetic for unit
counts below ``2**44`` samples (a larger count is refused).
"""

from __future__ import annotations

import bisect
import heapq
import math

import numpy as np

from .. import _compiled as compiled
from ..mixture import Mixture, Phase
from ..ramp import Stretched
from .memo import Counter, Memo, Point

SHARE_BITS = 40
_SAME = 1e-12  # shapes this close are one: proportional up to the floats' rounding
MAX_COUNT = 1 << 44  # a unit's samples the int64 split is exact for


def vectors(mixture: Mixture) -> np.ndarray:
    """Every weight vector ``mixture`` moves between, one row each: its weights at
    every step are convex combinations of them."""
    rows = [mixture.weights_at(0)]
    for i in range(len(mixture.phases)):
        rows += mixture.ends(i)
    return np.array(rows)


def units(mixture: Mixture, corpora: tuple[tuple[int, ...], ...]) -> tuple[list, list]:
    """The units of ``mixture``'s sources (ids, in order of their first source):
    each corpus (a tuple of source ids) split by the ratios of its sources' weights;
    and each source's weight summed over the vectors (its share inside its unit)."""
    rows = vectors(mixture)
    home = {k: c for c, members in enumerate(corpora) for k in members}
    found: list[list[int]] = []
    # Per corpus: its units so far and their first sources' shapes (a column over its
    # total). A source joins the first unit whose shape its own matches to 1e-12
    # (proportional up to the floats' own rounding): a tolerance, not rounded keys,
    # which a value near a rounding boundary would split.
    # Candidates are found by the first entry of the shape, kept sorted per corpus.
    known: dict[int, tuple[list[float], list[tuple[list[float], list[int]]]]] = {}
    totals = []
    for k, column in enumerate(rows.T.tolist()):
        total = math.fsum(column)
        totals.append(total)
        if k not in home or total == 0.0:
            found.append([k])
            continue
        shape = [x / total for x in column]
        keys, units_by_key = known.setdefault(home[k], ([], []))
        lo = bisect.bisect_left(keys, shape[0] - _SAME)
        hi = bisect.bisect_right(keys, shape[0] + _SAME)
        unit = next((members for first, members in units_by_key[lo:hi]
                     if max(abs(a - b) for a, b in zip(first, shape)) <= _SAME), None)  # fmt: skip
        if unit is not None:
            unit.append(k)
            continue
        found.append([k])
        at = bisect.bisect_right(keys, shape[0])
        keys.insert(at, shape[0])
        units_by_key.insert(at, (shape, found[-1]))
    return sorted(found, key=lambda members: members[0]), totals


def unit_mixture(mixture: Mixture | Stretched, members: list[list[int]]) -> Mixture | Stretched:
    """The mixture of the units: each unit's weight the sum of its sources' (over
    the plan steps of a ramp, stretched as its sources' is)."""
    if isinstance(mixture, Stretched):
        return Stretched(unit_mixture(mixture.base, members), mixture.batch_sizes)

    def summed(vector: np.ndarray) -> dict[str, float]:
        return {f"unit{u}": math.fsum(vector[m].tolist()) for u, m in enumerate(members)}

    phases = [
        Phase(start_step=p.start_step, end_step=p.end_step, weights=summed(mixture.ends(i)[1]),
              schedule=p.schedule)  # fmt: skip
        for i, p in enumerate(mixture.phases)
    ]
    return Mixture(weights=summed(mixture.weights_at(0)), phases=phases)


class Split:
    """Every unit's Huffman tree as arrays walked top-down.

    Nodes ``0 .. n - 1`` are the sources (leaves), the rest the trees' inner nodes.
    ``roots[u]`` is unit ``u``'s root; ``inner`` lists the inner nodes parents first,
    with their children and the share (out of ``2**SHARE_BITS``) of the first child;
    ``levels`` groups them by depth for the numpy walk. ``depth`` is the deepest
    leaf's.
    """

    def __init__(self, n: int, members: list[list[int]], weights: list[float]) -> None:
        self.n = n
        roots, made = [], []  # made: (node, first, second, share) in merge order
        nodes = n
        for unit in members:
            heap = [(weights[k], i, k) for i, k in enumerate(unit)]
            heapq.heapify(heap)
            order = len(unit)
            while len(heap) > 1:
                w1, _, a = heapq.heappop(heap)
                w2, _, b = heapq.heappop(heap)
                total = w1 + w2
                share = round(w1 / total * (1 << SHARE_BITS)) if total > 0 else 0
                made.append((nodes, a, b, share))
                heapq.heappush(heap, (total, order, nodes))
                order, nodes = order + 1, nodes + 1
            roots.append(heap[0][2])
        self.roots = np.array(roots, dtype=np.int64)
        self.size = nodes
        table = np.array(made[::-1], dtype=np.int64).reshape(-1, 4)  # parents first
        self.inner = table
        depth = np.zeros(nodes, dtype=np.int64)
        for node, a, b, _ in table.tolist():
            depth[a] = depth[b] = depth[node] + 1
        self.depth = int(depth[:n].max()) if n else 0
        at = depth[table[:, 0]]
        self.levels = [table[at == d] for d in range(int(at.max()) + 1)] if len(table) else []

    def expand(self, unit_counts: np.ndarray) -> np.ndarray:
        """Per-source counts (rows, n) of per-unit counts (rows, units)."""
        unit_counts = np.ascontiguousarray(unit_counts, dtype=np.int64)
        if unit_counts.size and unit_counts.max() >= MAX_COUNT:
            raise OverflowError(
                f"a unit of the plan's corpora reached {int(unit_counts.max())} samples; "
                f"its split is exact below 2**44 = {MAX_COUNT}: give the plan smaller corpora"
            )
        vals = np.empty((unit_counts.shape[0], self.size), dtype=np.int64)
        vals[:, self.roots] = unit_counts
        kernels = compiled.kernels()
        if kernels is not None:
            kernels.split(self.inner, vals)
            return vals[:, : self.n]
        for level in self.levels:
            held = vals[:, level[:, 0]]
            first = share_of(level[:, 3], held)
            vals[:, level[:, 1]] = first
            vals[:, level[:, 2]] = held - first
        return vals[:, : self.n]


def share_of(share, count):
    """``floor(share * count / 2**40 + 1/2)`` exactly in int64 (``count < 2**44``):
    ``count`` in a high and a low part of 22 bits, so no product passes 2**62."""
    high = share * (count >> 22)
    low = share * (count & ((1 << 22) - 1)) + (1 << 39)
    return (high >> 18) + ((((high & ((1 << 18) - 1)) << 22) + low) >> 40)


_share_one = share_of  # the compiled split's own (one count at a time)


def _split(inner: np.ndarray, vals: np.ndarray) -> None:
    for r in range(vals.shape[0]):
        for j in range(inner.shape[0]):
            held = vals[r, inner[j, 0]]
            first = _share_one(inner[j, 3], held)
            vals[r, inner[j, 1]] = first
            vals[r, inner[j, 2]] = held - first


class Grouped(Counter):
    """Counts of sources in units (see the module doc): the unit counter's counts,
    each unit's split down its tree.

    Args:
        targets: the sources' own targets (what ``Plan.targets`` reports).
        batch: samples per step.
        inner: the exact counter over the units' mixture.
        unit_of: each source's unit (int64).
        split: the units' trees.
    """

    def __init__(self, targets, batch: int, inner: Counter, unit_of: np.ndarray,
                 split: Split) -> None:  # fmt: skip
        super().__init__(targets, batch)
        self.inner, self.unit_of, self.split = inner, unit_of, split
        self.chunk = inner.chunk

    def point(self, step: int, memo: Memo) -> Point:
        at = self.inner.point(step, _units(memo))
        return Point(step, self.split.expand(at.counts[None])[0])

    def range(self, at: Point, num_steps: int, memo: Memo) -> tuple[np.ndarray, None]:
        units = np.bincount(self.unit_of, weights=at.counts, minlength=self.inner.n)
        start = Point(at.step, units.astype(np.int64))
        rows = self.inner.range(start, num_steps, _units(memo))[0]
        return self.split.expand(rows), None


def _units(memo: Memo) -> Memo:
    """The memo of the counter over the units, kept inside the plan's (the plan's own
    fields hold the sources' targets)."""
    if memo.inner is None:
        memo.inner = Memo()
    return memo.inner


class Single(Counter):
    """One unit: it takes the whole batch every step."""

    def point(self, step: int, memo: Memo) -> Point:
        return Point(step, np.array([self.batch * step], dtype=np.int64))

    def range(self, at: Point, num_steps: int, memo: Memo) -> tuple[np.ndarray, None]:
        steps = np.arange(at.step + 1, at.step + num_steps + 1, dtype=np.int64)
        return (self.batch * steps)[:, None], None


@compiled.register
def build(jit) -> dict:
    """The compiled twin of the split (``compiled.kernels``)."""
    global _share_one
    _share_one = jit(_share_one)
    return {"split": jit(_split)}
