"""Weights in tokens over samples of varying length: the token walk, beside its
compiled twin ``_tokens`` (deficits in int64 within their proven bounds, finish
times compared as exact 128-bit products)."""

from __future__ import annotations

import numpy as np

from .. import _compiled as compiled
from .memo import Deficits, Memo
from .quanta import Q
from .walk import DeficitRows, Walk


class Tokens(Walk):
    """Weights in tokens over samples of varying length (unpacked documents).

    Source k's target ``T_k`` grows by ``q_k(t) * L`` whenever a sample of L tokens
    joins step t (any source's), so the targets share out the tokens actually
    drawn by the step's weight quanta ``q(t)`` (summing to Q). The *deficit*
    ``d_k = T_k - Q * tokens_k`` (exact integers, in tokens / Q) sums to zero over
    the sources at every moment. Each position goes to the source whose next
    sample would finish first at its own rate, ``(Q * L_k - d_k) / q_k``, among
    the sources with a positive weight that are not ahead of their target
    (``d_k >= 0``: worst-case fair weighted fair queueing, WF2Q, on tokens);
    where none of them is, to the source furthest behind (one whose weight fell
    to zero while it was owed tokens). Ties go to the lower source id.

    The bound (``tokens_k`` against its target ``T_k / Q``, after every sample,
    so at every step; ``M_k`` is source k's longest sample):

    - ahead by less than ``M_k``: a source takes a sample only when
      ``d_k >= 0``, which leaves ``d_k > -Q * M_k``, and ``d_k`` only grows until
      its next sample;
    - behind by less than ``sum_{j != k} M_j``: the deficits sum to zero and every
      other one is above ``-Q * M_j``. For two sources: less than the other
      source's longest sample. (Measured over random mixtures of 2 to 6 sources
      and schedules, the largest gap either way was 0.96 of the longest sample;
      ``benchmarks/bench_tokens.py``.)

    A position's source depends on every sample's length before it: the walk
    goes sample by sample (``Walk``).

    Args:
        lengths_of: ``(source id, first draw, count) -> lengths`` of that run of
            the source's draws, in tokens (int64, each >= 1).
        longest: each source's longest sample.
    """

    def __init__(self, targets, batch: int, lengths_of, longest: tuple[int, ...]) -> None:
        super().__init__(targets, batch)
        self.lengths_of = lengths_of
        self.longest = longest
        self.chunk = max(1, (1 << 15) // batch)
        self._block = max(256, batch)
        # The compiled walk keeps deficits in int64, within (-Q M_k, Q sum M): exact
        # while the longest samples sum under 2^21 tokens (longer: the Python walk).
        self._fits = sum(longest) + max(longest) < 1 << 21

    def bounds(self) -> list[tuple[int, int]]:
        total = sum(self.longest)
        return [(-Q * m, Q * max(total - m, 1)) for m in self.longest]

    def _walk(
        self, start: int, stop: int, counts: np.ndarray, deficits: tuple[int, ...], memo: Memo
    ) -> tuple[np.ndarray, Deficits]:
        """Cumulative counts after each step of [start, stop), and the deficits there."""
        kernels = compiled.kernels()
        if kernels is not None and self._fits:
            return self._compiled(start, stop, counts, deficits, memo, kernels.tokens)
        n, everyone = self.n, range(self.n)
        c, d = [int(x) for x in counts], list(deficits)
        buffers: list[list[int]] = [[] for _ in everyone]
        first = list(c)  # draw number of each buffer's first entry
        rows = np.empty((stop - start, n), dtype=np.int64)
        after = []

        def length(k: int) -> int:  # tokens of source k's next draw, read a block at a time
            at = c[k] - first[k]
            if at >= len(buffers[k]):
                first[k], at = c[k], 0
                buffers[k] = self.lengths_of(k, c[k], self._block).tolist()
            return buffers[k][at]

        for row, q in enumerate(self.targets.quanta(start, stop).tolist()):
            weighted = [k for k in everyone if q[k]]
            for _ in range(self.batch):
                pick, need, rate = -1, 0, 1
                for k in weighted:
                    if d[k] < 0:
                        continue
                    mine = Q * length(k) - d[k]
                    if pick < 0 or mine * rate < need * q[k]:
                        pick, need, rate = k, mine, q[k]
                if pick < 0:  # every weighted source is ahead: a zero-weight one is owed
                    pick = max(everyone, key=d.__getitem__)
                tokens = length(pick)
                for k in weighted:
                    d[k] += q[k] * tokens
                d[pick] -= Q * tokens
                c[pick] += 1
            rows[row] = c
            after.append(tuple(d))
            self._mark(memo, start + row + 1, rows[row], after[-1])
        return rows, after

    def _compiled(self, start, stop, counts, deficits, memo, walk):
        """``_walk`` through the compiled kernel (the same integers). Each source's
        next lengths are fetched ahead, about twice its share of the draws; where a
        source runs short the kernel stops at a step and its lengths are topped up."""
        n, b, steps = self.n, self.batch, stop - start
        quanta = self.targets.quanta(start, stop)
        share = quanta.sum(axis=0) / float(Q)  # expected draws per position, roughly
        c = np.asarray(counts, dtype=np.int64).copy()
        d = np.array(deficits, dtype=np.int64)
        buffers = [np.zeros(0, dtype=np.int64) for _ in range(n)]
        first = c.copy()  # draw number of each buffer's first length
        rows = np.empty((steps, n), dtype=np.int64)
        carried = np.empty((steps, n), dtype=np.int64)
        done = 0
        while done < steps:
            for k in range(n):
                used = int(c[k] - first[k])
                if len(buffers[k]) - used < b:
                    more = b + max(self._block, int(2 * share[k] * b), 2 * used)
                    fresh = self.lengths_of(k, int(first[k]) + len(buffers[k]), more)
                    buffers[k] = np.concatenate([buffers[k][used:], fresh])
                    first[k] = c[k]
            ends = np.cumsum([len(x) for x in buffers])
            pos = ends - [len(x) for x in buffers] + (c - first)
            flat = np.concatenate(buffers)
            done += walk(quanta[done:], b, c, d, flat, ends, pos, rows[done:], carried[done:])
        for row in range((-start - 1) % self.MARK, steps, self.MARK):
            self._mark(memo, start + row + 1, rows[row], tuple(carried[row].tolist()))
        return rows, DeficitRows(carried)


def _wide(a, b):
    """a * b as (high, low) 64-bit halves, for a, b >= 0 (uint64 arithmetic)."""
    mask = np.uint64(0xFFFFFFFF)
    x, y = np.uint64(a), np.uint64(b)
    x0, x1, y0, y1 = x & mask, x >> np.uint64(32), y & mask, y >> np.uint64(32)
    p00, p01, p10, p11 = x0 * y0, x0 * y1, x1 * y0, x1 * y1
    mid = (p00 >> np.uint64(32)) + (p01 & mask) + (p10 & mask)
    low = (mid << np.uint64(32)) | (p00 & mask)
    high = p11 + (p01 >> np.uint64(32)) + (p10 >> np.uint64(32)) + (mid >> np.uint64(32))
    return high, low


def _product_less(a, b, c, d):
    """a * b < c * d exactly, for int64 a, c and positive int64 b, d."""
    if (a < 0) != (c < 0):
        return a < 0
    if a < 0:  # both negative: compare the magnitudes the other way round
        a, b, c, d = -c, d, -a, b
    h1, l1 = _wide(a, b)
    h2, l2 = _wide(c, d)
    return h1 < h2 or (h1 == h2 and l1 < l2)


def _tokens(quanta, batch, c, d, flat, end, pos, rows, after):
    """``Tokens``' walk over the rows of ``quanta``, from counts ``c`` and
    deficits ``d`` (updated in place): source k's next draws have the lengths
    ``flat[pos[k]:end[k]]``. Stops before a step that could run a source short
    (fewer than ``batch`` lengths left) and returns the steps walked."""
    steps, n = quanta.shape
    for row in range(steps):
        for k in range(n):
            if end[k] - pos[k] < batch:
                return row
        for _ in range(batch):
            pick, need, rate = -1, 0, 1
            for k in range(n):
                q = quanta[row, k]
                if q == 0 or d[k] < 0:
                    continue
                mine = Q * flat[pos[k]] - d[k]
                if pick < 0 or _product_less(mine, rate, need, q):
                    pick, need, rate = k, mine, q
            if pick < 0:  # every weighted source is ahead: a zero-weight one is owed
                pick = 0
                for k in range(1, n):
                    if d[k] > d[pick]:
                        pick = k
            tokens = flat[pos[pick]]
            for k in range(n):
                d[k] += quanta[row, k] * tokens
            d[pick] -= Q * tokens
            c[pick] += 1
            pos[pick] += 1
        for k in range(n):
            rows[row, k] = c[k]
            after[row, k] = d[k]
    return steps


@compiled.register
def build(jit) -> dict:
    """The compiled twin of ``Tokens``' walk (``compiled.kernels``)."""
    global _wide, _product_less
    _wide, _product_less = jit(_wide), jit(_product_less)
    return {"tokens": jit(_tokens)}
