"""Counters that walk step by step, carrying per-source deficits: each step reads
its own weights only (so weights learned online can be committed ahead of it).

``Walk`` is the shared walk; ``Carried`` (online plans in samples, here with its
compiled twin ``_carried``) and ``tokens.Tokens`` (weights in tokens) give the
rows of a range of steps and the proven range of every deficit, which a loaded
state is checked against. The walk is sequential: step t costs a replay of the
steps before it unless a ``Point`` at or before t is known. A stream's state
carries one (its ``deficits``), so a resume is O(1); the memo keeps a mark every
``MARK`` steps walked, so looking a step up again is cheap.
"""

from __future__ import annotations

import numpy as np

from .. import _compiled as compiled
from .._compiled import select as _select
from .memo import Counter, Deficits, Memo, Point
from .quanta import CHUNK, Q_BITS, Q


class Walk(Counter):
    """The walk shared by counters that carry deficits (see the module doc)."""

    MARK = 256

    def bounds(self) -> list[tuple[int, int]]:
        raise NotImplementedError

    def start(self, step: int, memo: Memo) -> Point:
        """The latest known point at or before ``step``."""
        best = Point(0, np.zeros(self.n, dtype=np.int64), (0,) * self.n)
        known = memo.walked
        if known is not None and known.step <= step:
            best = known
        marks = [s for s in memo.marks if best.step < s <= step]
        return memo.marks[max(marks)] if marks else best

    def point(self, step: int, memo: Memo) -> Point:
        at = self.start(step, memo)
        a, counts, deficits = at.step, at.counts, at.deficits
        while a < step:
            b = min(step, a + self.chunk)
            rows, after = self._walk(a, b, counts, deficits, memo)
            counts, deficits, a = rows[-1], after[-1], b
        memo.walked = Point(step, counts.copy(), deficits)
        return Point(step, counts.copy(), deficits)  # the caller's own: the memo's stays

    def range(self, at: Point, num_steps: int, memo: Memo) -> tuple[np.ndarray, Deficits]:
        if at.deficits is None:  # counts alone: the walk's own point there says the rest
            known = self.point(at.step, memo)
            if not np.array_equal(known.counts, at.counts):
                raise ValueError(
                    f"counts before step {at.step} ({np.asarray(at.counts).tolist()}) are not "
                    f"this plan's ({known.counts.tolist()}); walk the plan from a state it "
                    "produced"
                )
            at = known
        end = at.step + num_steps
        rows, after = self._walk(at.step, end, at.counts, at.deficits, memo)
        memo.walked = Point(end, rows[-1].copy(), after[-1])
        return rows, _Before(at.deficits, after)

    def _walk(
        self, start: int, stop: int, counts: np.ndarray, deficits: tuple[int, ...], memo: Memo
    ) -> tuple[np.ndarray, Deficits]:
        """Cumulative counts after each step of [start, stop), and the deficits there."""
        raise NotImplementedError

    def _mark(self, memo: Memo, step: int, row: np.ndarray, deficits: tuple[int, ...]) -> None:
        if step % self.MARK == 0:
            memo.marks[step] = Point(step, row.copy(), deficits)


class _Before:
    """Deficits before each step of a range and after its last: ``first`` then the
    walk's deficits after each step."""

    def __init__(self, first: tuple[int, ...], after: Deficits) -> None:
        self.first, self.after = first, after

    def __len__(self) -> int:
        return len(self.after) + 1

    def __getitem__(self, i: int) -> tuple[int, ...]:
        if i < 0:
            i += len(self)
        return self.first if i == 0 else self.after[i - 1]


class DeficitRows:
    """Deficits after each step of a compiled walk, handed out as tuples of ints
    only when read."""

    def __init__(self, rows: np.ndarray) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[int, ...]:
        return tuple(self.rows[i].tolist())


class Carried(Walk):
    """Weights in samples, one step at a time (online plans): carried largest
    remainders.

    Source k is owed ``x_k = d_k + B q_k(t)`` at step t (its deficit carried in, in
    units of 1/Q, plus its share of the step). It takes ``floor(x_k / Q)`` samples
    (none if that is negative: a source ahead of its target), and the ``r`` left
    over go one each to the largest remainders among the sources owed something
    (ties to the lower id); if the floors overshoot ``B`` (sources ahead of target
    hold back more than the rest round away), ``-r`` are taken back, one at a time,
    from the sources with the smallest remainder that still have a sample. Exact
    integers, O(N log N) per step, whatever B.

    The bound, after every step (``d_k`` against ``(-Q, (N - 1) Q)``; the deficits
    sum to zero):

    - ahead by less than one sample: a source with ``x_k < 0`` takes nothing and
      ``x_k > d_k > -Q``; a floor leaves a remainder in ``[0, Q)``; a bonus goes
      only to a positive remainder (``r`` is below the sum of the remainders, each
      under Q, so the ``r`` largest are positive), leaving ``> -Q``;
    - behind by less than one sample for two sources (one source ahead at most, so
      the floors never overshoot) and less than ``N - 1`` for N: a take-back adds
      one to a remainder below Q, and fewer than the number of sources ahead are
      taken back. (Measured: under 2 for every mixture of the property tests.)
    """

    MARK = 4096

    def __init__(self, targets, batch: int) -> None:
        super().__init__(targets, batch)
        self.chunk = CHUNK

    def bounds(self) -> list[tuple[int, int]]:
        return [(-Q, Q * max(1, self.n - 1))] * self.n

    def _walk(
        self, start: int, stop: int, counts: np.ndarray, deficits: tuple[int, ...], memo: Memo
    ) -> tuple[np.ndarray, list[tuple[int, ...]]]:
        n, b = self.n, self.batch
        kernels = compiled.kernels()
        if kernels is not None:  # the same integers (``_carried``)
            rows = np.empty((stop - start, n), dtype=np.int64)
            carried = np.empty((stop - start, n), dtype=np.int64)
            kernels.carried(self.targets.quanta(start, stop), b, np.asarray(counts, np.int64),
                             np.array(deficits, dtype=np.int64), rows, carried)  # fmt: skip
            for row in range((-start - 1) % self.MARK, stop - start, self.MARK):
                self._mark(memo, start + row + 1, rows[row], tuple(carried[row].tolist()))
            return rows, DeficitRows(carried)
        everyone = range(n)
        c, d = [int(x) for x in counts], list(deficits)
        rows = np.empty((stop - start, n), dtype=np.int64)
        after = []
        for row, q in enumerate(self.targets.quanta(start, stop).tolist()):
            owed = [d[k] + b * q[k] for k in everyone]
            take = [max(x // Q, 0) for x in owed]
            rest = [x - t * Q for x, t in zip(owed, take)]  # remainders, in [0, Q) if owed >= 0
            left = b - sum(take)
            if left > 0:
                ranked = sorted((k for k in everyone if owed[k] >= 0), key=lambda k: -rest[k])
                for k in ranked[:left]:
                    take[k] += 1
            while left < 0:
                k = min((k for k in everyone if take[k] > 0), key=lambda k: rest[k])
                take[k] -= 1
                rest[k] += Q
                left += 1
            for k in everyone:
                c[k] += take[k]
                d[k] = owed[k] - take[k] * Q
            rows[row] = c
            after.append(tuple(d))
            self._mark(memo, start + row + 1, rows[row], after[-1])
        return rows, after


def _carried(quanta, batch, counts, deficits, rows, after):
    """``Carried``'s walk over the rows of ``quanta``: cumulative counts into
    ``rows`` and the deficits after each step into ``after`` (they stay within
    (-Q, (N - 1) Q), so int64 holds them exactly)."""
    steps, n = quanta.shape
    c = counts.copy()
    d = deficits.copy()
    owed = np.empty(n, dtype=np.int64)
    take = np.empty(n, dtype=np.int64)
    rest = np.empty(n, dtype=np.int64)
    keys = np.empty(n, dtype=np.int64)
    for row in range(steps):
        left = batch
        for k in range(n):
            x = d[k] + batch * quanta[row, k]
            owed[k] = x
            t = max(x >> Q_BITS, 0)
            take[k] = t
            rest[k] = x - t * Q
            left -= t
        if left > 0:  # the largest remainders of those owed something, ties to the lower id
            count = 0
            for k in range(n):
                if owed[k] >= 0:
                    keys[count] = (Q - 1 - rest[k]) * n + k
                    count += 1
            cut = keys[count - 1] if left >= count else _select(keys, count, left - 1)
            for k in range(n):
                if owed[k] >= 0 and (Q - 1 - rest[k]) * n + k <= cut:
                    take[k] += 1
        while left < 0:  # taken back from the smallest remainder that has a sample
            pick = -1
            for k in range(n):
                if take[k] > 0 and (pick < 0 or rest[k] < rest[pick]):
                    pick = k
            take[pick] -= 1
            rest[pick] += Q
            left += 1
        for k in range(n):
            c[k] += take[k]
            d[k] = owed[k] - take[k] * Q
            rows[row, k] = c[k]
            after[row, k] = d[k]


@compiled.register
def build(jit) -> dict:
    """The compiled twin of ``Carried``'s walk (``compiled.kernels``)."""
    global _select
    _select = jit(_select)
    return {"carried": jit(_carried)}
