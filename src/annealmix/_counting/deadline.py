"""Three or more sources: earliest deadline first, replayed in vectorised chunks.

The cumulative count ``C_k(t)`` is ``floor(T_k(t))`` plus a bonus bit ``b_k(t)``; the
bits of a step sum to ``r(t) = B (t + 1) - sum_k floor(T_k(t))``, so every count is
within one sample of its target. Counts never fall, so a bit held at step t-1 by a
source whose floor did not advance must be held at t (the *forced* set F). The free
bits go by deadline: the step at which a source's target reaches the next integer.
Nearest rounding can strand more forced bits than a step has room for when weights
jump; EDF on the known schedule cannot (Tijdeman's chairman assignment: an
assignment within one sample always exists, and EDF finds one when deadlines are
exact, whatever breaks its ties). Where rounding to the nearest is one of EDF's
choices, the step takes it: when the sources due at the next step whose fractional
target is at least one half are exactly ``r(t)`` and hold every forced bit, they
get the bits (any ``r(t)`` of the sources due next is an EDF choice), so equal
weights get equal counts (by id alone, {1, 1, 1} at B = 6 drew [2, 3, 1] every
step, 1/3 not being a multiple of the quantum). Each step reads deadlines off the
schedule ``LOOKAHEAD`` steps ahead of itself and projects them at that step's rate
beyond, which is exact once the weights stop moving; a step's deadlines depend on
the step alone, so chunking never changes a count.

Where F lies inside the memoryless choice (the first ``r(t)`` by key) the two
agree; elsewhere the step is *repaired*. Repairs carry memory, held weights or
not: in general no closed form gives a step's counts without the steps before it.
Held segments have one where the sparse sources leave little room (``held``);
the rest is replayed: by the compiled twin here (``_earliest_deadline``, the
``fast`` extra) where it is built, split across threads for long spans
(``threads``), else by numpy.

A replay chunk reads ``LOOKAHEAD`` rows past its end, so a short request computes
``AHEAD`` rows at least and keeps them in the memo: a loader asking for a few
steps at a time pays the look-ahead once per ``AHEAD`` steps, not once per
request. (Rows never depend on the chunking.)
"""

from __future__ import annotations

import numpy as np

from .. import _compiled as compiled
from .._compiled import select as _select
from . import threads
from .held import held_constants, held_counts
from .memo import Counter, Memo, OutOfBound, Point
from .quanta import Q_BITS, Q

LOOKAHEAD = 8192
AHEAD = 4096  # rows a short replay request computes and keeps
_NEVER = np.int64(1) << np.int64(61)


class EarliestDeadline(Counter):
    """Three or more sources: earliest deadline first (see the module doc).

    Step t's bonus bits are the nearest set ``N`` (the sources due at t + 1 with a
    fractional target of at least one half) where ``|N| = r(t)`` and ``N`` holds the
    forced set ``F`` (bits held at t - 1 by sources whose floor did not rise at t);
    else ``F`` plus the first ``r(t) - |F|`` other sources with a fractional target,
    by key (deadline, then id).
    """

    def __init__(self, targets, batch: int) -> None:
        super().__init__(targets, batch)
        self.piece = max(self.chunk, 4 * LOOKAHEAD)  # the shortest span a thread replays
        self._held = {
            i: held_constants(row.tolist(), batch)
            for i, row in enumerate(targets.held_rows)
            if row is not None
        }

    def point(self, step: int, memo: Memo) -> Point:
        start, counts = 0, np.zeros(self.n, dtype=np.int64)
        if memo.counts_at is not None and memo.counts_at[0] <= step:
            start, counts = memo.counts_at
        entry = max((s for s in memo.entries if start < s <= step), default=None)
        if entry is not None:
            counts, targets = memo.entries[entry]
            start, memo.targets_at = entry, (entry, targets)
        segments = self.targets.segments
        while start < step:
            i = self.targets.segment_of(start)
            seg = segments[i]
            if seg.weights is not None:
                base = self.targets.before(start, memo)
                if start == seg.start:
                    memo.entries[start] = (counts.copy(), base)
                last = step - 1 if seg.stop is None else min(step - 1, seg.stop - 2)
                if last >= start:
                    held = self.held_counts(i, start, counts, base, last)
                    if held is not None:
                        counts, start = held, last + 1
                        continue
            nxt = [s.start for s in segments[i + 1 :] if s.weights is not None]
            stop = min(step, nxt[0]) if nxt else step  # where a held segment may jump
            split = threads.pieces(self, start, stop)
            if split is None:
                stop = min(stop, start + self.chunk)
                counts = self.rows(start, stop - start, counts, memo)[-1]
            else:
                counts = threads.parallel(self, split, counts, memo, keep=False)
            start = stop
        memo.counts_at = (step, counts)
        return Point(step, counts.copy())

    def held_counts(
        self, segment: int, start: int, counts: np.ndarray, base: list[int], last: int
    ) -> np.ndarray | None:
        """C(last) in closed form (``held.held_counts``) inside held ``segment``."""
        return held_counts(self.batch, self._held[segment], start, counts, base, last)

    def range(self, at: Point, num_steps: int, memo: Memo) -> tuple[np.ndarray, None]:
        return self.rows(at.step, num_steps, at.counts, memo), None

    def rows(self, start: int, num_steps: int, prev: np.ndarray, memo: Memo) -> np.ndarray:
        """C(t) for t in [start, start + num_steps) from ``prev`` = C(start - 1)."""
        split = threads.pieces(self, start, start + num_steps)
        if split is not None:
            return threads.parallel(self, split, prev, memo, keep=True)
        end, out, a = start + num_steps, [], start
        while a < end:
            rows = self._kept(a, prev, memo)
            if rows is None:
                b = min(max(end, a + AHEAD), a + self.chunk)
                rows = self.chunk_rows(a, b, prev, memo)
                memo.ahead = (a, rows, np.asarray(prev).copy())
            rows = rows[: end - a]
            out.append(rows)
            prev = rows[-1]
            a += len(rows)
        return out[0] if len(out) == 1 else np.concatenate(out)

    @staticmethod
    def _kept(a: int, prev: np.ndarray, memo: Memo) -> np.ndarray | None:
        """Kept rows from step ``a`` on, if they were computed from the same counts."""
        if memo.ahead is None:
            return None
        first, rows, before_first = memo.ahead
        if not first <= a < first + len(rows):
            return None
        expected = before_first if a == first else rows[a - first - 1]
        if not np.array_equal(expected, prev):
            return None
        return rows[a - first :]

    def chunk_rows(self, start: int, stop: int, prev: np.ndarray, memo: Memo) -> np.ndarray:
        """One replay chunk's rows [start, stop) from ``prev`` = C(start - 1)."""
        t = self.targets
        base = t.before(start, memo)
        steps = stop - start
        ahead = min(stop + LOOKAHEAD, max(stop, t.moving_end + 1))
        quanta = t.quanta(start, ahead, memo)
        if compiled.kernels() is not None:
            return self._compiled(start, steps, base, quanta, prev, memo)
        level, frac, v, hi = t.levels(base, quanta, self.batch)
        memo.targets_at = (stop, [h * Q + u for h, u in zip(hi.tolist(), v[steps - 1].tolist())])
        deadline = self._deadlines(steps, level, v, hi, quanta)
        level, frac = level[:steps], frac[:steps]
        key = np.where(frac > 0, deadline * self.n + np.arange(self.n), _NEVER)
        rank = np.empty_like(key)
        np.put_along_axis(rank, key.argsort(axis=1, kind="stable"), np.arange(self.n), axis=1)
        r = self.batch * np.arange(start + 1, stop + 1, dtype=np.int64) - level.sum(axis=1)
        # The memoryless choice: the nearest set where it has r(t) sources, else the
        # top r(t) by deadline.
        nearest = (deadline == np.arange(1, steps + 1)[:, None]) & (frac >= Q // 2)
        free = np.where((nearest.sum(axis=1) == r)[:, None], nearest, rank < r[:, None])
        prev_level = np.array([(self.batch * u) >> Q_BITS for u in base], dtype=np.int64)
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

    def _compiled(
        self,
        start: int,
        steps: int,
        base: list[int],
        quanta: np.ndarray,
        prev: np.ndarray,
        memo: Memo,
    ) -> np.ndarray:
        """``chunk_rows`` through the compiled twin ``_earliest_deadline``: the same rows."""
        b = self.batch
        low = np.array([u & (Q - 1) for u in base], dtype=np.int64)
        hi = [u >> Q_BITS for u in base]
        prev_level = np.array([(b * u) >> Q_BITS for u in base], dtype=np.int64)
        out = np.empty((steps, self.n), dtype=np.int64)
        failed = np.zeros(3, dtype=np.int64)  # row, forced, room
        through = compiled.kernels().earliest_deadline(
            quanta, low, np.array(hi, dtype=np.int64), b, steps, start, LOOKAHEAD,
            int(_NEVER), np.asarray(prev, dtype=np.int64), prev_level, out, failed,
        )  # fmt: skip
        if failed[2] < 0:
            raise _overflow(start + int(failed[0]), int(failed[1]), int(failed[1] + failed[2]))
        memo.targets_at = (start + steps, [h * Q + u for h, u in zip(hi, through.tolist())])
        return out

    def _repair(
        self, i: int, forced: np.ndarray, key: np.ndarray, r: np.ndarray, start: int
    ) -> np.ndarray:
        room = int(r[i]) - int(forced.sum())
        if room < 0:
            raise _overflow(start + i, int(forced.sum()), int(r[i]))
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


def _overflow(step: int, forced: int, allowed: int) -> OutOfBound:
    return OutOfBound(
        f"exact plan cannot keep step {step} within one sample of its targets "
        f"({forced} sources hold a sample ahead, {allowed} may); please report this mixture"
    )



def _earliest_deadline(
    quanta, low, hi, batch, steps, start, lookahead, never, prev, prev_level, out, failed
):
    """Cumulative counts of ``steps`` rows into ``out``; returns U's remainder
    through the last row (``low`` plus its quanta). A row whose forced bits
    overflow it stops the walk with ``failed = (row, forced, room)`` (room < 0; the
    caller raises). ``quanta`` spans the rows and their look-ahead; ``low``/``hi``
    split U before the first row (remainder and multiples of Q); ``prev`` and
    ``prev_level`` are the counts and floors before it.

    One pass down the window with two running sums of the quanta: the leading one
    marks, in a ring of bits, the rows where each source's level rises; the one
    ``lookahead`` rows behind decides each row once the rows its deadlines may
    read are marked. A source's next rise is searched for once: the row found (or
    how far the search got) serves the rows after it, so the search is amortised
    O(1) per row and source. The ring is ``n`` bytes per row of look-ahead,
    whatever the chunk; the rows equal ``EarliestDeadline.chunk_rows``'.
    """
    width, n = quanta.shape
    ring = 1
    while ring < lookahead + 2:  # a power of two: slots by masking, not division
        ring *= 2
    rises = np.zeros((ring, n), dtype=np.bool_)  # level of row r above row r - 1's
    lead = low.copy()  # U's remainder through the last row marked
    last_level = prev_level.copy()
    state = np.empty((5, n), dtype=np.int64)  # U through row t; search state; keys
    state[0] = low
    state[1] = -1  # a row where the source's level rose (-1: none found yet)
    state[2] = 0  # rows searched for a rise, up to here
    held = np.empty(n, dtype=np.bool_)
    for k in range(n):
        held[k] = prev[k] - prev_level[k] > 0
    t = 0
    for j in range(width):
        slot = j & (ring - 1)
        for k in range(n):
            x = lead[k] + quanta[j, k]
            lead[k] = x
            lv = batch * (hi[k] + (x >> Q_BITS)) + ((batch * (x & (Q - 1))) >> Q_BITS)
            rises[slot, k] = lv > last_level[k]
            last_level[k] = lv
        end = j == width - 1
        while t < steps and (t + lookahead == j or end):
            if not _decide(
                t, j, quanta, lead, rises, state, held, hi, batch, start, never, width, out,
                failed,
            ):  # fmt: skip
                return state[0]
            t += 1
    return state[0]


def _decide(
    t, p, quanta, lead, rises, state, held, hi, batch, start, never, width, out, failed,
):  # fmt: skip
    """Row t's bonus bits (``held``) and counts, its deadlines read up to row p
    (``lead`` is U's remainder through row p)."""
    ring, n = rises.shape
    mask = ring - 1
    u, found, seen, keys = state[0], state[1], state[2], state[3]
    total = 0
    forced = 0
    first = 0  # candidates due at the next step (key order = id order among them)
    near = 0  # sources due at the next step with a fractional target of a half or more
    outside = False  # a forced bit outside them: no nearest choice
    for k in range(n):
        x = u[k] + quanta[t, k]
        u[k] = x
        lv = batch * (hi[k] + (x >> Q_BITS)) + ((batch * (x & (Q - 1))) >> Q_BITS)
        out[t, k] = lv
        total += lv
        if held[k] and not rises[t & mask, k]:
            forced += 1
        else:
            held[k] = False
        frac = (batch * (x & (Q - 1))) & (Q - 1)
        if frac == 0:
            keys[k] = never
            outside = outside or held[k]
            continue
        if found[k] <= t:  # search on for the first rise after t, up to row p
            found[k] = -1
            r = max(t, seen[k]) + 1
            while r <= p:
                if rises[r & mask, k]:
                    found[k] = r
                    break
                r += 1
            seen[k] = min(r, p)
        if found[k] > t:
            deadline = found[k]
        else:  # no rise within the window: projected at row p's rate
            m = lv + 1 - batch * hi[k]
            need = (m // batch) * Q + (((m % batch) * Q + batch - 1) // batch)
            rate = quanta[p, k]
            if rate > 0:
                deadline = p + (need - lead[k] + rate - 1) // rate
            else:
                deadline = p + never // n - width
        keys[k] = deadline * n + k
        if deadline == t + 1 and not held[k]:
            first += 1
        if deadline == t + 1 and frac >= Q // 2:
            near += 1
        elif held[k]:
            outside = True
    room = batch * (start + t + 1) - total - forced
    if room < 0:
        failed[0], failed[1], failed[2] = t, forced, room
        return False
    due = (t + 2) * n  # keys below this: due at the next step
    if near == room + forced and not outside:  # rounding to the nearest: an EDF choice
        for k in range(n):
            if keys[k] < due and (batch * (u[k] & (Q - 1))) & (Q - 1) >= Q // 2:
                held[k] = True
    elif room <= first:  # the first ``room`` of them by id
        for k in range(n):
            if room == 0:
                break
            if not held[k] and keys[k] < due:
                held[k] = True
                room -= 1
    else:  # all of them, then the earliest later deadlines
        buf = state[4]
        count = 0
        for k in range(n):
            if not held[k] and keys[k] != never:
                if keys[k] < due:
                    held[k] = True
                    room -= 1
                else:
                    buf[count] = keys[k]
                    count += 1
        cut = never - 1 if room >= count else _select(buf, count, room - 1)
        for k in range(n):
            if not held[k] and keys[k] != never and due <= keys[k] <= cut:
                held[k] = True
    for k in range(n):
        if held[k]:
            out[t, k] += 1
    return True


@compiled.register
def build(jit) -> dict:
    """The compiled twin of this module's replay (``compiled.kernels``)."""
    global _select, _decide
    _select, _decide = jit(_select), jit(_decide)
    return {"earliest_deadline": jit(_earliest_deadline)}
