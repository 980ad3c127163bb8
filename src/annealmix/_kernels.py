"""Compiled inner loops of the plans (numba), each giving its numpy or Python twin's
integers bit for bit.

numba is optional (``pip install "annealmix[fast]"``). Without it, or with
``ANNEALMIX_KERNELS=numpy`` in the environment, the code in ``_counts`` runs
instead: same integers, same stream, only slower (``benchmarks/bench_plan.py``,
``bench_tokens.py`` and ``bench_online.py`` measure both). The first call in a fresh
environment compiles (about 4 seconds on 2 cores; numba caches the machine code on
disk, and later processes load it in a third of a second).

What is compiled:

- ``quantize``: rows of float weights -> integer quanta, fused (one pass instead of
  ten array passes), and ``blend``: the same for a moving phase's weights, blended
  from its two ends row by row;
- ``earliest_deadline``: a replay chunk of the exact plan: levels, deadlines (exact
  within the look-ahead, projected beyond), and the sequential choice of each step's
  bonus bits (forced bits, then the earliest deadlines);
- ``carried``: an online plan's walk in samples (``_counts.Carried``), and
  ``tokens``: a token plan's walk over documents (``_counts.Tokens``, comparing
  finish times in exact 128-bit products).
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from contextlib import contextmanager
from types import SimpleNamespace

import numpy as np

_built: object = None  # the kernels once built; False where there are none
Q_BITS = 40
Q = 1 << Q_BITS  # as in _counts (which imports this module, so cannot be imported here)


def kernels():
    """The compiled kernels (a namespace: ``quantize``, ``blend``,
    ``earliest_deadline``, ``carried``, ``tokens``), or ``None`` without numba or with
    ``ANNEALMIX_KERNELS=numpy``. numba is imported on the first call, not with
    annealmix."""
    global _built
    if _built is None:
        _built = _build() or False
    return _built or None


def _quantize_row(w: np.ndarray, out: np.ndarray) -> None:
    n = w.shape[0]
    q = float(Q)
    cum, prev, starved = 0.0, 0.0, 0
    for k in range(n):
        cum += w[k]
        edge = min(np.rint(cum * q), q) if k < n - 1 else q
        out[k] = np.int64(edge - prev)
        prev = edge
        if w[k] > 0 and out[k] == 0:
            starved += 1
    if starved:
        for k in range(n):
            if w[k] > 0 and out[k] == 0:
                out[k] = 1
        big = 0
        for k in range(1, n):
            if out[k] > out[big]:
                big = k
        out[big] -= starved


def _quantize(weights: np.ndarray, out: np.ndarray) -> None:
    for i in range(weights.shape[0]):
        _quantize_row(weights[i], out[i])


def _blend(gamma: np.ndarray, start: np.ndarray, target: np.ndarray, out: np.ndarray) -> None:
    """Quanta of the weights ``(1 - gamma) * start + gamma * target``, row by row."""
    n = out.shape[1]
    w = np.empty(n, dtype=np.float64)
    for i in range(gamma.shape[0]):
        g = gamma[i]
        for k in range(n):
            w[k] = (1.0 - g) * start[k] + g * target[k]
        _quantize_row(w, out[i])


def _select(buf: np.ndarray, count: int, kth: int) -> int:
    """The ``kth`` smallest of ``buf[:count]`` (distinct values), reordering them."""
    lo, hi = 0, count - 1
    while lo < hi:
        pivot = buf[(lo + hi) // 2]
        i, j = lo, hi
        while i <= j:
            while buf[i] < pivot:
                i += 1
            while buf[j] > pivot:
                j -= 1
            if i <= j:
                buf[i], buf[j] = buf[j], buf[i]
                i += 1
                j -= 1
        if kth <= j:
            hi = j
        elif kth >= i:
            lo = i
        else:
            break
    return buf[kth]


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
    whatever the chunk; the rows equal ``_counts.EarliestDeadline._chunk``'s.
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
        if (batch * (x & (Q - 1))) & (Q - 1) == 0:
            keys[k] = never
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
    room = batch * (start + t + 1) - total - forced
    if room < 0:
        failed[0], failed[1], failed[2] = t, forced, room
        return False
    due = (t + 2) * n  # keys below this: due at the next step
    if room <= first:  # the first ``room`` of them by id
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


@contextmanager
def numpy_only():
    """The numpy code inside the ``with``, as without numba (benchmarks and tests
    compare the two; not for use while other threads plan)."""
    global _built
    saved, _built = _built, False
    try:
        yield
    finally:
        _built = saved


def _carried(quanta, batch, counts, deficits, rows, carries):
    """``_counts.Carried``'s walk over the rows of ``quanta``: cumulative counts into
    ``rows`` and the deficits after each step into ``carries`` (they stay within
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
            carries[row, k] = d[k]


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


def _tokens(quanta, batch, c, d, flat, end, pos, rows, carries):
    """``_counts.Tokens``' walk over the rows of ``quanta``, from counts ``c`` and
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
            carries[row, k] = d[k]
    return steps


def threads() -> int:
    """Threads a long replay may use: ``ANNEALMIX_THREADS``, else the cores this
    process may run on."""
    wanted = os.environ.get("ANNEALMIX_THREADS")
    if wanted is not None:
        try:
            return max(1, int(wanted))
        except ValueError:
            raise ValueError(
                f"ANNEALMIX_THREADS must be a whole number of threads, got {wanted!r}; "
                "unset it to use every core this process may run on"
            ) from None
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _build():
    global _quantize_row, _select, _decide, _wide, _product_less
    wanted = os.environ.get("ANNEALMIX_KERNELS", "numba")
    if wanted not in ("numba", "numpy"):
        raise ValueError(
            f"ANNEALMIX_KERNELS must be 'numba' or 'numpy', got {wanted!r}; 'numpy' runs "
            "the plan without compiled kernels (the same stream), unset it to use them"
        )
    if wanted == "numpy" or importlib.util.find_spec("numba") is None:
        return None
    try:  # an optional extra: every kernel has a numpy twin in _counts
        import numba
    except ImportError as err:  # installed, but not for this numpy or Python
        warnings.warn(
            f"numba is installed but does not import ({err}); exact plans run on numpy "
            "alone (the same stream, slower)",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    if numba.config.DISABLE_JIT:  # NUMBA_DISABLE_JIT: the kernels would run as Python
        return None

    def jit(fn):
        return numba.njit(nogil=True, cache=True)(getattr(fn, "py_func", fn))

    # Rebound first: the kernels below call these by their global names.
    _quantize_row, _select, _decide = jit(_quantize_row), jit(_select), jit(_decide)
    _wide, _product_less = jit(_wide), jit(_product_less)
    return SimpleNamespace(
        quantize=jit(_quantize),
        blend=jit(_blend),
        earliest_deadline=jit(_earliest_deadline),
        carried=jit(_carried),
        tokens=jit(_tokens),
    )
