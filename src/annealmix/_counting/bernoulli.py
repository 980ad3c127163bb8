"""Random mode: the post's sampler, every position's source from a keyed hash."""

from __future__ import annotations

import numpy as np

from .. import _hash
from .memo import Counter, Memo, Point
from .quanta import Q_BITS, SOURCE_DTYPE, step_counts


class Bernoulli(Counter):
    """Position ``j`` of step ``t`` draws its source with probabilities w(t) from a
    keyed hash of ``t * B + j``; counts are what the draws give, so a cold
    ``point(step)`` hashes every earlier position (a memo walks on).

    Draws are numbered in stream order (``draws_in_order``), not by the layout of
    exact counts: ``lays_out`` is false.
    """

    lays_out = False

    def __init__(self, targets, batch: int, seed: int) -> None:
        super().__init__(targets, batch)
        self.chunk = 1024
        self._key = _hash.key(seed, 0xA11)

    def sources(self, start: int, stop: int) -> np.ndarray:
        """Source id per position for steps [start, stop), shape (stop - start, B)."""
        b = self.batch
        positions = np.arange(start * b, stop * b, dtype=np.int64).reshape(-1, b)
        u = (_hash.hash_counter(self._key, positions) >> np.uint64(64 - Q_BITS)).astype(np.int64)
        edges = np.cumsum(self.targets.quanta(start, stop), axis=1)[:, :-1]
        return (u[:, :, None] >= edges[:, None, :]).sum(axis=2, dtype=SOURCE_DTYPE)

    def range(self, at: Point, num_steps: int, memo: Memo) -> tuple[np.ndarray, None]:
        per_step = step_counts(self.sources(at.step, at.step + num_steps), self.n)
        return at.counts + np.cumsum(per_step, axis=0), None
