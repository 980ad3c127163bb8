"""Long exact replays split across threads, bit for bit the serial replay's.

The compiled replay releases the GIL, so pieces of a long span run at once. A
piece starts from its floors with no bonus bit held (its true counts are the
previous piece's last row, not known yet) and is replayed at once; then, in
order, each piece is checked against the true counts before it. Where they
differ its first chunk is replayed again from the true counts until a row equals
the guessed one: a row's counts are all a step carries to the next, so from
there on the guessed rows are the true rows. (Held bits of a low-weight source
last until its floor rises; should none meet within the chunk, the whole piece
is replayed again.) A guess that meets a step the bound refuses (``OutOfBound``:
counts no plan produces) is replayed from the true counts instead.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .. import _compiled as compiled
from .memo import Memo, OutOfBound
from .quanta import Q_BITS


def pieces(counter, start: int, stop: int) -> list[int] | None:
    """Where to split a replay of [start, stop) across threads, or ``None`` when it
    would not pay: the kernels off (numpy holds the GIL), one core, a short span."""
    workers = compiled.threads()
    if workers < 2 or compiled.kernels() is None:
        return None
    count = min(workers, (stop - start) // counter.piece)
    if count < 2:
        return None
    return [start + (stop - start) * i // count for i in range(count + 1)]


def parallel(counter, edges: list[int], prev: np.ndarray, memo: Memo, keep: bool) -> np.ndarray:
    """Rows ``[edges[0], edges[-1])`` (``keep``) or the last of them, one piece per
    thread (see the module doc)."""
    t, b, zero = counter.targets, counter.batch, [0] * counter.n
    spans = list(zip(edges, edges[1:]))
    bases = [t.before(edges[0], memo)]
    with ThreadPoolExecutor(len(spans)) as pool:
        # U before each piece: the pieces' quanta summed at once, then added up.
        for part in pool.map(lambda p: t.before(p[1], Memo(targets_at=(p[0], zero))),
                             spans[:-1]):  # fmt: skip
            bases.append([x + y for x, y in zip(bases[-1], part)])
        guesses = [np.asarray(prev, dtype=np.int64)] + [
            np.array([(b * u) >> Q_BITS for u in base], dtype=np.int64) for base in bases[1:]
        ]
        guessed = [False] + [True] * (len(spans) - 1)
        runs = list(
            pool.map(lambda *a: _guess(counter, *a), spans, guesses, bases, guessed,
                     [keep] * len(spans))
        )  # fmt: skip
    true, out = guesses[0], []
    for piece, guess, base, run in zip(spans, guesses, bases, runs):
        if run is None:  # the guess met a step no plan reaches: replay from the true counts
            run, guess = _serial(counter, piece, true, base, keep), true
        head, rows, last, through = run
        if not np.array_equal(guess, true):
            a = piece[0]
            again = counter.chunk_rows(a, a + len(head), true, Memo(targets_at=(a, base)))
            meet = np.flatnonzero((again == head).all(axis=1))
            if not meet.size:
                _, rows, last, _ = _serial(counter, piece, true, base, keep)
            elif keep:
                rows = np.concatenate([again[: meet[0]], rows[meet[0] :]])
        out.append(rows)
        true = last
    memo.targets_at = (edges[-1], through)
    return np.concatenate(out) if keep else true



def _guess(
    counter, piece: tuple[int, int], prev: np.ndarray, base: list[int], guessed: bool, keep: bool
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, list[int]] | None:
    """``_serial``; from ``guessed`` counts, ``None`` where they lead to a step the
    bound refuses (counts no plan produces; the caller replays the true ones)."""
    try:
        return _serial(counter, piece, prev, base, keep)
    except OutOfBound:
        if not guessed:
            raise
        return None


def _serial(
    counter, piece: tuple[int, int], prev: np.ndarray, base: list[int], keep: bool
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, list[int]]:
    """Replay ``piece`` = [start, stop) from counts ``prev`` and U(start - 1) =
    ``base``: its first chunk's rows, all its rows (``keep``) or ``None``, its
    last row, and U(stop - 1)."""
    (a, stop), memo = piece, Memo(targets_at=(piece[0], base))
    head, rows = None, []
    while a < stop:
        chunk = counter.chunk_rows(a, min(stop, a + counter.chunk), prev, memo)
        head = chunk if head is None else head
        if keep:
            rows.append(chunk)
        prev, a = chunk[-1], a + len(chunk)
    return head, np.concatenate(rows) if keep else None, prev, memo.targets_at[1]
