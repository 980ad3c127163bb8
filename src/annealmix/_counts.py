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
  always exists, and EDF finds one when deadlines are exact). Deadlines are read
  off the schedule ``LOOKAHEAD`` steps ahead, and projected at the last rate beyond,
  which is exact once the weights stop moving.

Replaying N >= 3 sources is vectorised: the memoryless choice (top r(t) by priority)
is computed for a chunk of steps at once, and a Python loop over bitmasks only
checks, per step, that the forced bits are inside it, repairing the rare step
where they are not.
"""

from __future__ import annotations

import numpy as np

from .mixture import Mixture

Q_BITS = 40
Q = 1 << Q_BITS
CHUNK = 8192
LOOKAHEAD = 8192
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


def _bits(mask: np.ndarray) -> list[int]:
    """Rows of a bool matrix as Python-int bitmasks (bit k = column k)."""
    if mask.shape[1] <= 62:
        return (mask.astype(np.int64) << np.arange(mask.shape[1], dtype=np.int64)).sum(1).tolist()
    packed = np.packbits(mask, axis=1, bitorder="little")
    return [int.from_bytes(row.tobytes(), "little") for row in packed]


def _unbits(rows: list[int], n: int) -> np.ndarray:
    nbytes = (n + 7) // 8
    buf = b"".join(r.to_bytes(nbytes, "little") for r in rows)
    flat = np.unpackbits(np.frombuffer(buf, dtype=np.uint8), bitorder="little")
    return flat.reshape(len(rows), nbytes * 8)[:, :n].astype(np.int64)


class ExactCounts:
    """Cumulative per-source counts C(t) of the exact plan, any step on demand."""

    def __init__(self, mixture: Mixture, batch: int) -> None:
        self.targets = Targets(mixture)
        self.batch = batch
        self.n = mixture.num_sources
        self._checkpoint = (0, [0] * self.n)  # (step s, C(s - 1)) of the last replay

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
            stop = min(step, start + CHUNK)
            counts = self.range(start, stop - start, np.array(counts))[-1].tolist()
            start = stop
        self._checkpoint = (start, counts)
        return np.array(counts, dtype=np.int64)

    def range(self, start: int, num_steps: int, prev: np.ndarray | None) -> np.ndarray:
        """C(t) for t in [start, start + num_steps); ``prev`` is C(start - 1)."""
        out = []
        for a in range(start, start + num_steps, CHUNK):
            b = min(start + num_steps, a + CHUNK)
            chunk = self._chunk(a, b, prev)
            prev = chunk[-1]
            out.append(chunk)
        return np.concatenate(out)

    def _chunk(self, start: int, stop: int, prev: np.ndarray | None) -> np.ndarray:
        t = self.targets
        base = t.before(start)
        steps = stop - start
        if self.n == 2:
            level, frac, _, _ = t.levels(base, t.quanta(start, stop), self.batch)
            first = level[:, 0] + (frac[:, 0] >= Q // 2)
            total = self.batch * np.arange(start + 1, stop + 1, dtype=np.int64)
            return np.stack([first, total - first], axis=1)
        ahead = stop + LOOKAHEAD if stop < t._moving_end else stop
        quanta = t.quanta(start, ahead)
        level, frac, v, hi = t.levels(base, quanta, self.batch)
        deadline = self._deadlines(level[:steps], v, hi, quanta[-1])
        level, frac = level[:steps], frac[:steps]
        eligible = frac > 0
        key = np.where(eligible, deadline * self.n + np.arange(self.n), _NEVER)
        rank = np.empty_like(key)
        np.put_along_axis(rank, key.argsort(axis=1, kind="stable"), np.arange(self.n), axis=1)
        r = self.batch * np.arange(start + 1, stop + 1, dtype=np.int64) - level.sum(axis=1)
        free = _bits(rank < r[:, None])
        prev_level = np.array([(self.batch * u) >> Q_BITS for u in base], dtype=np.int64)
        if prev is None:
            prev = prev_level if start == 0 else self.before(start)
        held = _bits((prev - prev_level)[None, :] > 0)[0]
        advanced = _bits(np.diff(level, axis=0, prepend=prev_level[None, :]) > 0)
        bonus = []
        for i in range(steps):
            forced = held & ~advanced[i]
            held = free[i] if forced & ~free[i] == 0 else self._repair(i, forced, key, r, start)
            bonus.append(held)
        return level + _unbits(bonus, self.n)

    def _repair(self, i: int, forced: int, key: np.ndarray, r: np.ndarray, start: int) -> int:
        room = int(r[i]) - forced.bit_count()
        if room < 0:
            raise RuntimeError(
                f"exact plan cannot keep step {start + i} within one sample of its targets "
                f"({forced.bit_count()} sources hold a sample ahead, {int(r[i])} may); "
                "please report this mixture"
            )
        bits = forced
        for k in np.argsort(key[i], kind="stable").tolist():
            if room == 0:
                break
            if key[i, k] != _NEVER and not forced >> k & 1:
                bits |= 1 << k
                room -= 1
        return bits

    def _deadlines(self, level: np.ndarray, v: np.ndarray, hi: np.ndarray, last: np.ndarray):
        """Row index at which each source's target next reaches a whole sample."""
        b = self.batch
        m = level + 1 - b * hi  # next whole sample, relative to the window's Q-multiple
        need = (m // b) * Q + (((m % b) * Q + b - 1) // b)  # smallest v with B v >= m Q
        out = np.empty_like(level)
        for k in range(self.n):
            out[:, k] = np.searchsorted(v[:, k], need[:, k], side="left")
        beyond = out >= v.shape[0]
        if beyond.any():
            rate = np.broadcast_to(last, level.shape)[beyond]
            gap = need[beyond] - v[-1][np.nonzero(beyond)[1]]
            steps = np.where(
                rate > 0, -(-gap // np.maximum(rate, 1)), _NEVER // self.n - v.shape[0]
            )
            out[beyond] = v.shape[0] - 1 + steps
        return out
