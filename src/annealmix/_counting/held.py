"""Held segments of an exact plan in closed form: any step in O(N) from the
segment's entry, where the sparse sources leave under one sample of slack.

In a held segment (constant weights), call a source *dense* if its floor rises
every step (``B q_k >= Q``), *sparse* if it has a weight but less than that, and
look at a step t with t + 1 in the segment:

- a dense source's deadline is t + 1; a sparse one's is t + 1 exactly when its
  floor rises then, and its fractional target is below ``1 - B q_k / Q``
  samples otherwise; a zero-weight source never rises;
- call ``D`` the sources not forced whose deadline is t + 1 (key order = id
  order among them), and ``S`` the other candidates not forced: sparse
  sources not rising, zero-weight sources with a fractional target that hold
  no bit. Their fractional targets sum to under ``s = sum over sparse
  (1 - B q_k / Q) + sum over zero-weight sources holding no bit at entry
  (their fractional target)`` samples;
- ``r(t) < |D| + s + |F|`` (every fractional part is under one), so if
  ``s < 1``, ``r(t) - |F| <= |D|``: the choice never leaves ``D``. Every
  source it picks rises at t + 1, so no new bit is forced, and ``F`` shrinks
  to the bits held at entry whose floor has not risen since;
- so, from the counts at entry up to the segment's second-to-last step (the
  last step's deadlines look into the next segment): ``C(t) = floor(T(t))``
  plus those forced bits plus the first ``r(t) - |F|`` sources of ``D`` by
  id; or, where the sources due at t + 1 with a fractional target of at least
  one half number ``r(t)`` and hold ``F``, ``floor(T(t))`` plus a bit for each
  of them (rounding to the nearest, the replay's choice there too; it picks
  inside ``D`` as well). O(N) from the counts at entry, whatever t.

``s < 1`` holds whenever every weight gives a sample per step (and no zero-weight
source is owed one), with one sparse source, or with sparse ones close to a sample
per step; elsewhere (several tiny weights) the step is replayed
(``tests/test_counts.py`` checks the closed form against the replay, and where it
is and is not taken).
"""

from __future__ import annotations

import numpy as np

from .memo import OutOfBound
from .quanta import Q_BITS, Q


def held_constants(row: list[int], batch: int) -> tuple[list[int], int, list[int]]:
    """A held segment's quanta, its sparse sources' slack (units of 1/Q) and its
    zero-weight sources."""
    slack = sum(Q - batch * x for x in row if 0 < batch * x < Q)
    return row, slack, [k for k, x in enumerate(row) if not x]


def held_counts(
    batch: int,
    constants: tuple[list[int], int, list[int]],
    start: int,
    counts: np.ndarray,
    base: list[int],
    last: int,
) -> np.ndarray | None:
    """C(last) in O(N) from ``counts`` = C(start - 1) and ``base`` = U(start - 1),
    both steps inside one held segment (``last`` before its last step) whose
    ``held_constants`` are given; ``None`` where the closed form is not proven."""
    b, m = batch, last - start + 1
    q, slack, zero = constants
    counts = counts.tolist()
    for k in zero:  # fractional targets of zero weights holding no bit
        x = b * base[k]
        if counts[k] <= x >> Q_BITS:
            slack += x & (Q - 1)
    if slack >= Q:
        return None
    out, due, room = [], [], b * (last + 1)
    near, levels, outside = [], [], False
    for c, x, y in zip(counts, base, q):
        floor, u = (b * x) >> Q_BITS, b * (x + y * m)
        level = u >> Q_BITS
        forced = c > floor and level == floor  # held at entry, floor not risen since
        out.append(level + forced)
        levels.append(level)
        room -= level + forced
        rising = bool(u & (Q - 1)) and (u + b * y) >> Q_BITS > level  # due at last + 1
        due.append(not forced and rising)
        near.append(rising and u & (Q - 1) >= Q // 2)
        outside = outside or (forced and not near[-1])
    if not outside and sum(near) == b * (last + 1) - sum(levels):  # rounding to the nearest
        return np.array([v + n for v, n in zip(levels, near)], dtype=np.int64)
    for k, d in enumerate(due):  # the first ``room`` due at the next step, by id
        if room <= 0:
            break
        if d:
            out[k] += 1
            room -= 1
    if room:
        raise OutOfBound(
            f"held segment counts at step {last} left {room} bonus samples unplaced; "
            "please report this mixture"
        )
    return np.array(out, dtype=np.int64)
