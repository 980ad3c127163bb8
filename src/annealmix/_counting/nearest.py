"""Two sources: nearest rounding of the exact target, any step in O(1)."""

from __future__ import annotations

import numpy as np

from .memo import Counter, Memo, Point
from .quanta import Q_BITS, Q


class Nearest(Counter):
    """Two sources: ``C_0(t) = floor(T_0(t) + 1/2)``, within one half of the target.

    Nearest rounding never strands a bonus bit (see ``deadline``'s forced set), so
    any step is O(1) from ``U(t)``.
    """

    def point(self, step: int, memo: Memo) -> Point:
        u = self.targets.before(step, memo)[0]  # U_0(step - 1), exact
        first = (self.batch * u + Q // 2) >> Q_BITS
        return Point(step, np.array([first, self.batch * step - first], dtype=np.int64))

    def range(self, at: Point, num_steps: int, memo: Memo) -> tuple[np.ndarray, None]:
        t, out, start = self.targets, [], at.step
        for a in range(start, start + num_steps, self.chunk):
            b = min(start + num_steps, a + self.chunk)
            level, frac, v, hi = t.levels(t.before(a, memo), t.quanta(a, b), self.batch)
            memo.targets_at = (b, [h * Q + u for h, u in zip(hi.tolist(), v[-1].tolist())])
            first = level[:, 0] + (frac[:, 0] >= Q // 2)
            total = self.batch * np.arange(a + 1, b + 1, dtype=np.int64)
            out.append(np.stack([first, total - first], axis=1))
        return np.concatenate(out), None
