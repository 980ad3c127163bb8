"""How many samples of each source the global stream holds by every step.

The exact target of source k through step t is ``T_k(t) = B * U_k(t) / Q``: ``U_k(t)``
sums the source's weight quanta over steps 0..t, each step's weights being rounded
to integers out of ``Q = 2**40`` that sum to Q exactly. Integer sums are exact and
associative, so a target is the same bits however the steps are chunked, on any
machine. (Against the float weights the quantised target drifts by under
``B * steps / 2**41`` samples: 0.02 after 10^7 steps at B = 4096.)

The cumulative count ``C_k(t)`` is ``floor(T_k(t))`` plus a bonus bit ``b_k(t)``; the
bits of a step sum to ``r(t) = B (t + 1) - sum_k floor(T_k(t))``. So every count is
within one sample of its target. Counts never fall, so a bit held at step t-1 by a
source whose floor did not advance must be held at t (the *forced* set F). The free
bits go by priority:

- two sources: the larger fractional part, which is nearest rounding,
  ``C_0 = floor(T_0 + 1/2)``, within one half of the target; it never needs F, so
  any step is O(1) from ``U(t)``;
- more sources: earliest deadline first, the deadline of a source being the step at
  which its target reaches the next integer. Nearest rounding can strand more
  forced bits than a step has room for when weights jump; EDF on the known
  schedule cannot (Tijdeman's chairman assignment: an assignment within one sample
  always exists, and EDF finds one when deadlines are exact). Each step reads
  deadlines off the schedule ``LOOKAHEAD`` steps ahead of itself and projects them
  at that step's rate beyond, which is exact once the weights stop moving; a
  step's deadlines depend on the step alone, so chunking never changes a count.

Replaying N >= 3 sources is vectorised: the memoryless choice (top r(t) by priority)
is computed for a chunk of steps at once, checked against the forced bits for all
rows at once, and a Python loop visits only the rare rows that need repair.
"""

from __future__ import annotations

import numpy as np

from .mixture import Mixture

Q_BITS = 40
Q = 1 << Q_BITS
CHUNK = 8192
LOOKAHEAD = 8192
AHEAD = 4096  # rows a short replay request computes and keeps
_CHUNK_ENTRIES = 1 << 20
_NEVER = np.int64(1) << np.int64(61)


def quantize(weights: np.ndarray) -> np.ndarray:
    """Rows of weights (summing to 1) -> int64 quanta summing to Q exactly.

    Rounds the running sum across sources, so zero weights get zero quanta; any
    positive weight gets at least one, taken from the row's largest entry.
    """
    edges = np.minimum(np.rint(np.cumsum(weights, axis=-1) * float(Q)), float(Q))
    edges[..., -1] = float(Q)
    quanta = np.diff(edges, axis=-1, prepend=0.0).astype(np.int64)
    starved = (weights > 0) & (quanta == 0)
    if starved.any():
        quanta += starved
        rows = np.flatnonzero(starved.any(axis=-1))
        big = quanta[rows].argmax(axis=-1)
        quanta[rows, big] -= starved[rows].sum(axis=-1)
    return quanta


class Targets:
    """Exact cumulative targets of a mixture: integer weight quanta summed over steps."""

    def __init__(self, mixture: Mixture) -> None:
        self.mixture = mixture
        n = mixture.num_sources
        # Segments [lo, hi) of constant weights (row) or of a moving phase (None).
        held = quantize(mixture._starts)
        self._segments: list[tuple[int, int | None, np.ndarray | None]] = []
        cursor = 0
        for i, phase in enumerate(mixture.phases):
            if phase.start_step > cursor:
                self._segments.append((cursor, phase.start_step, held[i]))
            nxt = mixture.phases[i + 1].start_step if i + 1 < len(mixture.phases) else None
            cursor = phase.end_step + 1 if nxt is None else min(phase.end_step + 1, nxt)
            self._segments.append((phase.start_step, cursor, None))
        self._segments.append((cursor, None, held[-1]))
        self._moving_end = cursor  # weights are constant from here on
        self._totals: dict[int, list[int]] = {}  # whole moving segments, once summed
        self._mark = (0, [0] * n)  # (step, U(step - 1)) of the last call to before()
        self._window = (0, np.zeros((0, n), dtype=np.int64))  # last quanta() result

    def quanta(self, start: int, stop: int) -> np.ndarray:
        """Per-step quanta for steps [start, stop), shape (stop - start, N).

        Consecutive calls overlap (a chunk's look-ahead is the next chunk), so rows
        already computed by the previous call are reused.
        """
        cached_start, cached = self._window
        reuse = (
            cached[start - cached_start :]
            if cached_start <= start < cached_start + len(cached)
            else cached[:0]
        )
        reuse = reuse[: stop - start]
        fresh = self._compute(start + len(reuse), stop)
        out = fresh if not len(reuse) else np.concatenate([reuse, fresh])
        self._window = (start, out)
        return out

    def _compute(self, start: int, stop: int) -> np.ndarray:
        steps = np.arange(start, stop, dtype=np.int64)
        out = np.empty((steps.size, self.mixture.num_sources), dtype=np.int64)
        for lo, hi, row in self._segments:
            a, b = max(lo, start), stop if hi is None else min(hi, stop)
            if a >= b:
                continue
            if row is not None:
                out[a - start : b - start] = row
            else:
                weights = self.mixture.weights_at(steps[a - start : b - start])
                out[a - start : b - start] = quantize(weights)
        return out

    def before(self, step: int) -> list[int]:
        """U(step - 1): quanta summed over steps [0, step), as exact Python ints.

        Walks on from the previous call when it can, so a run of increasing steps
        costs the steps between them, not a re-sum from step 0.
        """
        mark, total = self._mark
        if mark > step:
            mark, total = 0, [0] * self.mixture.num_sources
        for i, (lo, hi, row) in enumerate(self._segments):
            a, b = max(lo, mark), step if hi is None else min(hi, step)
            if a >= b:
                continue
            if row is not None:
                add = [int(v) * (b - a) for v in row.tolist()]
            elif (a, b) == (lo, hi) and i in self._totals:
                add = self._totals[i]
            else:
                add = [0] * len(total)
                for c in range(a, b, CHUNK):
                    part = self._compute(c, min(b, c + CHUNK)).sum(axis=0).tolist()
                    add = [x + y for x, y in zip(add, part)]
                if (a, b) == (lo, hi):
                    self._totals[i] = add
            total = [x + y for x, y in zip(total, add)]
        self._mark = (step, total)
        return total

    def walked(self, step: int, total: list[int]) -> None:
        """Record U(step - 1), known to a caller that summed the quanta itself."""
        self._mark = (step, total)

    def levels(self, base: list[int], quanta: np.ndarray, batch: int):
        """floor and fractional part (in units of 1/Q) of B * U / Q after each step.

        ``base`` is U just before the first row of ``quanta``. Kept in int64 by
        splitting U into whole multiples of Q and a remainder.
        """
        hi = np.array([u >> Q_BITS for u in base], dtype=np.int64)
        v = np.array([u & (Q - 1) for u in base], dtype=np.int64) + np.cumsum(quanta, axis=0)
        whole, rest = v >> Q_BITS, v & (Q - 1)
        level = batch * (hi + whole) + ((batch * rest) >> Q_BITS)
        frac = (batch * rest) & (Q - 1)
        return level, frac, v, hi


class ExactCounts:
    """Cumulative per-source counts C(t) of the exact plan, any step on demand."""

    def __init__(self, mixture: Mixture, batch: int) -> None:
        self.targets = Targets(mixture)
        self.batch = batch
        self.n = mixture.num_sources
        # Rows per replay chunk: about a million entries per (rows, N) array. How
        # steps are chunked never changes a count, only the memory it takes.
        self.chunk = max(CHUNK, _CHUNK_ENTRIES // self.n)
        self._checkpoint = (0, [0] * self.n)  # (step s, C(s - 1)) of the last replay
        empty = np.zeros((0, self.n), dtype=np.int64)
        self._ahead = (0, empty, np.zeros(self.n, dtype=np.int64))  # rows kept by range()

    def before(self, step: int) -> np.ndarray:
        """C(step - 1): samples of each source in steps [0, step)."""
        if step == 0:
            return np.zeros(self.n, dtype=np.int64)
        if self.n == 2:
            return self.range(step - 1, 1, None)[0]
        start, counts = self._checkpoint
        if start > step:
            start, counts = 0, [0] * self.n
        while start < step:
            stop = min(step, start + self.chunk)
            counts = self.range(start, stop - start, np.array(counts))[-1].tolist()
            start = stop
        self._checkpoint = (start, counts)
        return np.array(counts, dtype=np.int64)

    def range(self, start: int, num_steps: int, prev: np.ndarray | None) -> np.ndarray:
        """C(t) for t in [start, start + num_steps); ``prev`` is C(start - 1).

        With three or more sources a replay chunk reads ``LOOKAHEAD`` rows past its
        end, so a short request computes ``AHEAD`` rows at least and keeps them: a
        loader asking for a few steps at a time pays the look-ahead once per
        ``AHEAD`` steps, not once per request. (Rows never depend on the chunking.)
        """
        end, out = start + num_steps, []
        keep = self.n >= 3  # two sources have a closed form: nothing to read ahead
        if keep and prev is None:
            prev = np.zeros(self.n, dtype=np.int64) if start == 0 else self.before(start)
        a = start
        while a < end:
            rows = self._kept(a, prev) if keep else None
            if rows is None:
                b = min(max(end, a + AHEAD * keep), a + self.chunk)
                rows = self._chunk(a, b, prev)
                if keep:
                    self._ahead = (a, rows, np.asarray(prev).copy())
            rows = rows[: end - a]
            out.append(rows)
            prev = rows[-1]
            a += len(rows)
        return np.concatenate(out)

    def _kept(self, a: int, prev: np.ndarray) -> np.ndarray | None:
        """Kept rows from step ``a`` on, if they were computed from the same counts."""
        first, rows, before_first = self._ahead
        if not first <= a < first + len(rows):
            return None
        expected = before_first if a == first else rows[a - first - 1]
        if not np.array_equal(expected, prev):
            return None
        return rows[a - first :]

    def _chunk(self, start: int, stop: int, prev: np.ndarray | None) -> np.ndarray:
        t = self.targets
        base = t.before(start)
        steps = stop - start
        if self.n == 2:
            level, frac, _, _ = t.levels(base, t.quanta(start, stop), self.batch)
            first = level[:, 0] + (frac[:, 0] >= Q // 2)
            total = self.batch * np.arange(start + 1, stop + 1, dtype=np.int64)
            return np.stack([first, total - first], axis=1)
        ahead = min(stop + LOOKAHEAD, max(stop, t._moving_end + 1))
        quanta = t.quanta(start, ahead)
        level, frac, v, hi = t.levels(base, quanta, self.batch)
        t.walked(stop, [h * Q + u for h, u in zip(hi.tolist(), v[steps - 1].tolist())])
        deadline = self._deadlines(steps, level, v, hi, quanta)
        level, frac = level[:steps], frac[:steps]
        key = np.where(frac > 0, deadline * self.n + np.arange(self.n), _NEVER)
        rank = np.empty_like(key)
        np.put_along_axis(rank, key.argsort(axis=1, kind="stable"), np.arange(self.n), axis=1)
        r = self.batch * np.arange(start + 1, stop + 1, dtype=np.int64) - level.sum(axis=1)
        free = rank < r[:, None]  # the memoryless choice: top r(t) by deadline
        prev_level = np.array([(self.batch * u) >> Q_BITS for u in base], dtype=np.int64)
        if prev is None:
            prev = prev_level if start == 0 else self.before(start)
        advanced = np.diff(level, axis=0, prepend=prev_level[None, :]) > 0
        # A row may take its free choice when the bits forced on it (held by the row
        # before, floor not advanced) are inside it. Rows after an unrepaired row
        # are checked at once; a Python loop visits only the rows that fail.
        bonus = free
        fails = np.flatnonzero((free[:-1] & ~advanced[1:] & ~free[1:]).any(axis=1)) + 1
        held, i = (prev - prev_level) > 0, 0
        while i < steps:
            forced = held & ~advanced[i]
            if (forced & ~free[i]).any():
                bonus[i] = held = self._repair(i, forced, key, r, start)
                i += 1
                continue
            j = np.searchsorted(fails, i, side="right")
            if j == fails.size:
                break
            i = int(fails[j])
            held = free[i - 1]
        return level + bonus

    def _repair(
        self, i: int, forced: np.ndarray, key: np.ndarray, r: np.ndarray, start: int
    ) -> np.ndarray:
        room = int(r[i]) - int(forced.sum())
        if room < 0:
            raise RuntimeError(
                f"exact plan cannot keep step {start + i} within one sample of its targets "
                f"({int(forced.sum())} sources hold a sample ahead, {int(r[i])} may); "
                "please report this mixture"
            )
        by_deadline = np.argsort(key[i], kind="stable")
        open_ = (key[i][by_deadline] != _NEVER) & ~forced[by_deadline]
        bits = forced.copy()
        bits[by_deadline[open_][:room]] = True
        return bits

    def _deadlines(
        self, rows: int, level: np.ndarray, v: np.ndarray, hi: np.ndarray, quanta: np.ndarray
    ) -> np.ndarray:
        """Row index at which each of the first ``rows`` rows' targets next reach a whole sample.

        ``level``, ``v`` and ``quanta`` span the chunk and its look-ahead. Row t sees
        ``LOOKAHEAD`` rows ahead: the deadline is exact when the next whole sample
        falls within them (the first later row whose level rose) and projected at
        row ``t + LOOKAHEAD``'s rate beyond. So a row's deadline depends on the row
        alone, never on how the steps were chunked. (A window cut short ends in
        constant weights, where the projection is exact from any row.)
        """
        width = level.shape[0]
        rises_next = np.full_like(level, _NEVER)  # row t: t + 1 where the level rises there
        np.copyto(rises_next[:-1], np.arange(1, width)[:, None], where=level[1:] > level[:-1])
        nxt = np.minimum.accumulate(rises_next[::-1], axis=0)[::-1][:rows]
        t = np.arange(rows)[:, None]
        beyond = nxt > t + LOOKAHEAD
        if not beyond.any():
            return nxt
        r, k = np.nonzero(beyond)
        p = np.minimum(r + LOOKAHEAD, width - 1)
        b = self.batch
        m = level[r, k] + 1 - b * hi[k]  # next whole sample, relative to the window's Q-multiple
        need = (m // b) * Q + (((m % b) * Q + b - 1) // b)  # smallest v with B v >= m Q
        rate = quanta[p, k]
        gap = need - v[p, k]
        steps = np.where(rate > 0, -(-gap // np.maximum(rate, 1)), _NEVER // self.n - width)
        nxt[r, k] = p + steps
        return nxt
