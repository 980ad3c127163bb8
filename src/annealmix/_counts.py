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
bits go by priority, and the strategy is chosen once per plan:

- ``Nearest`` (two sources): the larger fractional part, which is nearest rounding,
  ``C_0 = floor(T_0 + 1/2)``, within one half of the target; it never needs F, so
  any step is O(1) from ``U(t)``;
- ``EarliestDeadline`` (three or more): the deadline of a source is the step at
  which its target reaches the next integer. Nearest rounding can strand more
  forced bits than a step has room for when weights jump; EDF on the known
  schedule cannot (Tijdeman's chairman assignment: an assignment within one sample
  always exists, and EDF finds one when deadlines are exact). Each step reads
  deadlines off the schedule ``LOOKAHEAD`` steps ahead of itself and projects them
  at that step's rate beyond, which is exact once the weights stop moving; a
  step's deadlines depend on the step alone, so chunking never changes a count.
  Held segments where the sparse sources leave under one sample of slack have a
  closed form (any step in O(N) from the segment's entry; see its doc); the rest
  is replayed, compiled and split across threads where ``_kernels`` can.
- ``Bernoulli`` (random mode): every position draws its source from a keyed hash
  of its position; the counts are whatever the draws give.
- ``Tokens`` (weights in tokens over samples of varying length): targets count
  tokens, and each position goes to the source whose next sample finishes first
  among those not ahead of their target (see its doc for the bound and the proof);
- ``Carried`` (online plans, weights in samples): each step's counts from its own
  weights and the deficits carried in (see its doc).

Strategies are immutable. Whatever one remembers between calls (where the last
replay stopped, rows computed ahead) lives in a ``Cursor`` that the caller owns:
a plan shared between threads or workers never changes. The walks of
``EarliestDeadline``, ``Carried`` and ``Tokens`` and the quantisation have compiled
twins in ``_kernels`` (the ``fast`` extra) that give the same integers.
"""

from __future__ import annotations

import bisect
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from . import _hash, _kernels
from .mixture import Mixture

Q_BITS = 40
Q = 1 << Q_BITS
CHUNK = 8192
LOOKAHEAD = 8192
AHEAD = 4096  # rows a short replay request computes and keeps
_CHUNK_ENTRIES = 1 << 20
_RANDOM_CHUNK = 1024
_NEVER = np.int64(1) << np.int64(61)
SOURCE_DTYPE = np.int16  # source ids per position, as Megatron's blending index stores them


def quantize(weights: np.ndarray) -> np.ndarray:
    """Rows of weights (summing to 1) -> int64 quanta summing to Q exactly.

    Rounds the running sum across sources, so zero weights get zero quanta; any
    positive weight gets at least one, taken from the row's largest entry.
    """
    compiled = _kernels.kernels()
    if compiled is not None and weights.ndim == 2 and weights.dtype == np.float64:
        out = np.empty(weights.shape, dtype=np.int64)
        compiled.quantize(np.ascontiguousarray(weights), out)
        return out
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


@dataclass(eq=False)
class Cursor:
    """What a walk over one plan remembers between calls, owned by the walker.

    Every field is a cache: a fresh cursor gives the same counts, only slower.

    Attributes:
        targets_at: ``(s, U(s - 1))``: quanta summed over steps before ``s``.
        counts_at: ``(s, C(s - 1))``: counts before ``s``, where the last replay stopped.
        ahead: ``(first, rows, C(first - 1))``: cumulative counts computed ahead.
        window: ``(first, quanta)``: the last quanta computed (look-ahead reuse).
        deficits_at: ``(s, C(s - 1), deficits)``: where a token walk stands (``Tokens``).
        carries: ``(first, deficits before each row and after the last)`` of the
            last token walk.
        marks: ``s -> (C(s - 1), deficits)`` every ``Tokens.MARK`` steps walked.
        entries: ``s -> (C(s - 1), U(s - 1))`` at the first step of each held
            segment reached (``EarliestDeadline``).
        tokens_at: ``(counts, tokens)``: tokens of a token plan's first draws.
    """

    targets_at: tuple[int, list[int]] | None = None
    counts_at: tuple[int, np.ndarray] | None = None
    ahead: tuple[int, np.ndarray, np.ndarray] | None = None
    window: tuple[int, np.ndarray] | None = field(default=None, repr=False)
    deficits_at: tuple[int, np.ndarray, tuple[int, ...]] | None = None
    carries: tuple[int, list[tuple[int, ...]]] | None = field(default=None, repr=False)
    marks: dict[int, tuple[np.ndarray, tuple[int, ...]]] = field(default_factory=dict, repr=False)
    entries: dict[int, tuple[np.ndarray, list[int]]] = field(default_factory=dict, repr=False)
    tokens_at: tuple[np.ndarray, np.ndarray] | None = None

    def at(self, step: int, counts: np.ndarray, deficits: tuple[int, ...] | None) -> None:
        """Say where a token walk stands (``Tokens``): counts and deficits before ``step``."""
        if deficits is not None:
            self.deficits_at = (step, np.asarray(counts, dtype=np.int64).copy(), deficits)


class Targets:
    """Exact cumulative targets of a mixture: integer weight quanta summed over steps."""

    def __init__(self, mixture: Mixture) -> None:
        self.mixture = mixture
        self.n = mixture.num_sources
        self.segments = mixture.segments()
        # Held segments' quanta, one row each (None for moving segments).
        self._rows = [
            None if seg.weights is None else quantize(seg.weights[None])[0] for seg in self.segments
        ]
        self.moving_end = self.segments[-1].start  # weights are constant from here on
        self._starts = [seg.start for seg in self.segments]
        # A moving segment of a Mixture blends its phase's two ends (compiled where
        # the kernels are); an online plan's tilted schedule gives weights only.
        self._blends = isinstance(mixture, Mixture)

    def segment_of(self, step: int) -> int:
        """Index of the segment holding ``step``."""
        return bisect.bisect_right(self._starts, step) - 1

    def quanta(self, start: int, stop: int, cursor: Cursor | None = None) -> np.ndarray:
        """Per-step quanta for steps [start, stop), shape (stop - start, N).

        With a cursor, rows its previous call computed are reused (a replay chunk's
        look-ahead is the next chunk).
        """
        out = np.empty((stop - start, self.n), dtype=np.int64)
        reused = 0
        if cursor is not None and cursor.window is not None:
            first, rows = cursor.window
            if first <= start < first + len(rows):
                reuse = rows[start - first : stop - first]
                reused = len(reuse)
                out[:reused] = reuse
        self._compute(start + reused, stop, out[reused:])
        if cursor is not None:
            cursor.window = (start, out)
        return out

    def _compute(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        steps = np.arange(start, stop, dtype=np.int64)
        if out is None:
            out = np.empty((steps.size, self.n), dtype=np.int64)
        for seg, row in zip(self.segments, self._rows):
            a, b = max(seg.start, start), stop if seg.stop is None else min(seg.stop, stop)
            if a >= b:
                continue
            if row is not None:
                out[a - start : b - start] = row
            elif self._blends and _kernels.kernels() is not None:
                gamma = self.mixture.gamma(seg.phase, steps[a - start : b - start])
                blend = _kernels.kernels().blend
                blend(gamma, *self.mixture.ends(seg.phase), out[a - start : b - start])
            else:
                weights = self.mixture.weights_at(steps[a - start : b - start])
                out[a - start : b - start] = quantize(weights)
        return out

    def before(self, step: int, cursor: Cursor | None = None) -> list[int]:
        """U(step - 1): quanta summed over steps [0, step), as exact Python ints.

        Held segments add in closed form; moving ones are summed in chunks. With a
        cursor, the sum walks on from its last call when that lies before ``step``.
        """
        mark, total = 0, [0] * self.n
        known = None if cursor is None else cursor.targets_at
        if known is not None and known[0] <= step:
            mark, total = known
        for seg, row in zip(self.segments, self._rows):
            a, b = max(seg.start, mark), step if seg.stop is None else min(seg.stop, step)
            if a >= b:
                continue
            if row is not None:
                add = [int(v) * (b - a) for v in row.tolist()]
            else:
                add = [0] * self.n
                for c in range(a, b, CHUNK):
                    part = self._compute(c, min(b, c + CHUNK)).sum(axis=0).tolist()
                    add = [x + y for x, y in zip(add, part)]
            total = [x + y for x, y in zip(total, add)]
        if cursor is not None:
            cursor.targets_at = (step, total)
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


class _Strategy:
    """Cumulative counts C(t) of a plan: ``before(step)`` and ``range(start, n)``."""

    def __init__(self, mixture: Mixture, batch: int) -> None:
        self.targets = Targets(mixture)
        self.batch = batch
        self.n = mixture.num_sources
        # Rows per replay chunk: about a million entries per (rows, N) array. How
        # steps are chunked never changes a count, only the memory it takes.
        self.chunk = max(CHUNK, _CHUNK_ENTRIES // self.n)

    def before(self, step: int, cursor: Cursor) -> np.ndarray:
        """C(step - 1): samples of each source in steps [0, step)."""
        start, counts = 0, np.zeros(self.n, dtype=np.int64)
        if cursor.counts_at is not None and cursor.counts_at[0] <= step:
            start, counts = cursor.counts_at
        while start < step:
            stop = min(step, start + self.chunk)
            counts = self.range(start, stop - start, counts, cursor)[-1]
            start = stop
        cursor.counts_at = (step, counts)
        return counts.copy()

    def range(
        self, start: int, num_steps: int, prev: np.ndarray | None, cursor: Cursor
    ) -> np.ndarray:
        """C(t) for t in [start, start + num_steps); ``prev`` is C(start - 1) if known."""
        raise NotImplementedError


class Nearest(_Strategy):
    """Two sources: ``C_0(t) = floor(T_0(t) + 1/2)``, any step in O(1) from U(t)."""

    def before(self, step: int, cursor: Cursor) -> np.ndarray:
        u = self.targets.before(step, cursor)[0]  # U_0(step - 1), exact
        first = (self.batch * u + Q // 2) >> Q_BITS
        return np.array([first, self.batch * step - first], dtype=np.int64)

    def range(
        self, start: int, num_steps: int, prev: np.ndarray | None, cursor: Cursor
    ) -> np.ndarray:
        t, out = self.targets, []
        for a in range(start, start + num_steps, self.chunk):
            b = min(start + num_steps, a + self.chunk)
            level, frac, v, hi = t.levels(t.before(a, cursor), t.quanta(a, b), self.batch)
            cursor.targets_at = (b, [h * Q + u for h, u in zip(hi.tolist(), v[-1].tolist())])
            first = level[:, 0] + (frac[:, 0] >= Q // 2)
            total = self.batch * np.arange(a + 1, b + 1, dtype=np.int64)
            out.append(np.stack([first, total - first], axis=1))
        return np.concatenate(out)


class EarliestDeadline(_Strategy):
    """Three or more sources: earliest deadline first, replayed in vectorised chunks.

    Step t's bonus bits are the forced set ``F`` (bits held at t - 1 by sources whose
    floor did not rise at t) plus the first ``r(t) - |F|`` other sources with a
    fractional target, by key (deadline, then id). Where ``F`` lies inside the
    memoryless choice (the first ``r(t)`` by key) the two agree; elsewhere the step
    is *repaired*. Repairs carry memory, held weights or not: in general no closed
    form gives a step's counts without the steps before it.

    Held segments have one where the sources under one sample per step leave
    little room (proven here, used by ``before``). In a held segment, call a source
    *dense* if its floor rises every step (``B q_k >= Q``), *sparse* if it has a
    weight but less than that, and look at a step t with t + 1 in the segment:

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
      id. O(N) from the counts at entry, whatever t.

    ``s < 1`` holds whenever every weight gives a sample per step (and no
    zero-weight source is owed one), with one sparse source, or with sparse ones
    close to a sample per step; elsewhere (several tiny weights) the step is
    replayed.

    A cursor keeps the counts at each held segment's entry it reached, so a moving
    segment is replayed once per cursor however lookups jump about.

    A replay chunk reads ``LOOKAHEAD`` rows past its end, so a short request computes
    ``AHEAD`` rows at least and keeps them in the cursor: a loader asking for a few
    steps at a time pays the look-ahead once per ``AHEAD`` steps, not once per
    request. (Rows never depend on the chunking.)
    """

    def __init__(self, mixture: Mixture, batch: int) -> None:
        super().__init__(mixture, batch)
        self.piece = max(self.chunk, 4 * LOOKAHEAD)  # the shortest span a thread replays
        # Per held segment: its quanta, the sparse sources' slack, the zero weights.
        self._held = {
            i: (
                row.tolist(),
                sum(Q - batch * x for x in row.tolist() if 0 < batch * x < Q),
                [k for k, x in enumerate(row.tolist()) if not x],
            )
            for i, row in enumerate(self.targets._rows)
            if row is not None
        }

    def before(self, step: int, cursor: Cursor) -> np.ndarray:
        start, counts = 0, np.zeros(self.n, dtype=np.int64)
        if cursor.counts_at is not None and cursor.counts_at[0] <= step:
            start, counts = cursor.counts_at
        entry = max((s for s in cursor.entries if start < s <= step), default=None)
        if entry is not None:
            counts, targets = cursor.entries[entry]
            start, cursor.targets_at = entry, (entry, targets)
        segments = self.targets.segments
        while start < step:
            i = self.targets.segment_of(start)
            seg = segments[i]
            if seg.weights is not None:
                base = self.targets.before(start, cursor)
                if start == seg.start:
                    cursor.entries[start] = (counts.copy(), base)
                last = step - 1 if seg.stop is None else min(step - 1, seg.stop - 2)
                if last >= start:
                    held = self.held_counts(i, start, counts, base, last)
                    if held is not None:
                        counts, start = held, last + 1
                        continue
            nxt = [s.start for s in segments[i + 1 :] if s.weights is not None]
            stop = min(step, nxt[0]) if nxt else step  # where a held segment may jump
            split = self._pieces(start, stop)
            if split is None:
                stop = min(stop, start + self.chunk)
                counts = self.range(start, stop - start, counts, cursor)[-1]
            else:
                counts = self._parallel(split, counts, cursor, keep=False)
            start = stop
        cursor.counts_at = (step, counts)
        return counts.copy()

    def _pieces(self, start: int, stop: int) -> list[int] | None:
        """Where to split a replay of [start, stop) across threads, or ``None`` when
        it would not pay: the kernels off (numpy holds the GIL), one core, a short span."""
        workers = _kernels.threads()
        if workers < 2 or _kernels.kernels() is None:
            return None
        count = min(workers, (stop - start) // self.piece)
        if count < 2:
            return None
        return [start + (stop - start) * i // count for i in range(count + 1)]

    def _parallel(
        self, edges: list[int], prev: np.ndarray, cursor: Cursor, keep: bool
    ) -> np.ndarray:
        """Rows ``[edges[0], edges[-1])`` (``keep``) or the last of them, one piece per
        thread, bit for bit the serial replay's.

        A piece starts from its floors with no bonus bit held (its true counts are
        the previous piece's last row, not known yet) and is replayed at once; then,
        in order, each piece is checked against the true counts before it. Where
        they differ its first chunk is replayed again from the true counts until a
        row equals the guessed one: a row's counts are all a step carries to the
        next, so from there on the guessed rows are the true rows. (Held bits of
        a low-weight source last until its floor rises; should none meet within
        the chunk, the whole piece is replayed again.)
        """
        t, b, zero = self.targets, self.batch, [0] * self.n
        pieces = list(zip(edges, edges[1:]))
        bases = [t.before(edges[0], cursor)]
        with ThreadPoolExecutor(len(pieces)) as pool:
            # U before each piece: the pieces' quanta summed at once, then added up.
            for part in pool.map(lambda p: t.before(p[1], Cursor(targets_at=(p[0], zero))),
                                 pieces[:-1]):  # fmt: skip
                bases.append([x + y for x, y in zip(bases[-1], part)])
            guesses = [np.asarray(prev, dtype=np.int64)] + [
                np.array([(b * u) >> Q_BITS for u in base], dtype=np.int64) for base in bases[1:]
            ]
            guessed = [False] + [True] * (len(pieces) - 1)
            runs = list(
                pool.map(self._guess, pieces, guesses, bases, guessed, [keep] * len(pieces))
            )
        true, out = guesses[0], []
        for piece, guess, base, run in zip(pieces, guesses, bases, runs):
            if run is None:  # the guess met a step no plan reaches: replay from the true counts
                run, guess = self._serial(piece, true, base, keep), true
            head, rows, last, through = run
            if not np.array_equal(guess, true):
                a = piece[0]
                again = self._chunk(a, a + len(head), true, Cursor(targets_at=(a, base)))
                meet = np.flatnonzero((again == head).all(axis=1))
                if not meet.size:
                    _, rows, last, _ = self._serial(piece, true, base, keep)
                elif keep:
                    rows = np.concatenate([again[: meet[0]], rows[meet[0] :]])
            out.append(rows)
            true = last
        cursor.targets_at = (edges[-1], through)
        return np.concatenate(out) if keep else true

    def _guess(
        self, piece: tuple[int, int], prev: np.ndarray, base: list[int], guessed: bool, keep: bool
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, list[int]] | None:
        """``_serial``; from ``guessed`` counts, ``None`` where they lead to a step the
        bound refuses (counts no plan produces; the caller replays the true ones)."""
        try:
            return self._serial(piece, prev, base, keep)
        except RuntimeError:
            if not guessed:
                raise
            return None

    def _serial(
        self, piece: tuple[int, int], prev: np.ndarray, base: list[int], keep: bool
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, list[int]]:
        """Replay ``piece`` = [start, stop) from counts ``prev`` and U(start - 1) =
        ``base``: its first chunk's rows, all its rows (``keep``) or ``None``, its
        last row, and U(stop - 1)."""
        (a, stop), cursor = piece, Cursor(targets_at=(piece[0], base))
        head, rows = None, []
        while a < stop:
            chunk = self._chunk(a, min(stop, a + self.chunk), prev, cursor)
            head = chunk if head is None else head
            if keep:
                rows.append(chunk)
            prev, a = chunk[-1], a + len(chunk)
        return head, np.concatenate(rows) if keep else None, prev, cursor.targets_at[1]

    def held_counts(
        self, segment: int, start: int, counts: np.ndarray, base: list[int], last: int
    ) -> np.ndarray | None:
        """C(last) in O(N) from ``counts`` = C(start - 1) and ``base`` = U(start - 1),
        both steps inside held ``segment`` (``last`` before its last step); ``None``
        where the closed form is not proven (the class doc's condition)."""
        b, m = self.batch, last - start + 1
        q, slack, zero = self._held[segment]
        counts = counts.tolist()
        for k in zero:  # fractional targets of zero weights holding no bit
            x = b * base[k]
            if counts[k] <= x >> Q_BITS:
                slack += x & (Q - 1)
        if slack >= Q:
            return None
        out, due, room = [], [], b * (last + 1)
        for c, x, y in zip(counts, base, q):
            floor, u = (b * x) >> Q_BITS, b * (x + y * m)
            level = u >> Q_BITS
            forced = c > floor and level == floor  # held at entry, floor not risen since
            out.append(level + forced)
            room -= level + forced
            due.append(not forced and u & (Q - 1) and (u + b * y) >> Q_BITS > level)
        for k, d in enumerate(due):  # the first ``room`` due at the next step, by id
            if room <= 0:
                break
            if d:
                out[k] += 1
                room -= 1
        if room:
            raise RuntimeError(
                f"held segment counts at step {last} left {room} bonus samples unplaced; "
                "please report this mixture"
            )
        return np.array(out, dtype=np.int64)

    def range(
        self, start: int, num_steps: int, prev: np.ndarray | None, cursor: Cursor
    ) -> np.ndarray:
        if prev is None:
            prev = self.before(start, cursor)
        split = self._pieces(start, start + num_steps)
        if split is not None:
            return self._parallel(split, prev, cursor, keep=True)
        end, out, a = start + num_steps, [], start
        while a < end:
            rows = self._kept(a, prev, cursor)
            if rows is None:
                b = min(max(end, a + AHEAD), a + self.chunk)
                rows = self._chunk(a, b, prev, cursor)
                cursor.ahead = (a, rows, np.asarray(prev).copy())
            rows = rows[: end - a]
            out.append(rows)
            prev = rows[-1]
            a += len(rows)
        return out[0] if len(out) == 1 else np.concatenate(out)

    @staticmethod
    def _kept(a: int, prev: np.ndarray, cursor: Cursor) -> np.ndarray | None:
        """Kept rows from step ``a`` on, if they were computed from the same counts."""
        if cursor.ahead is None:
            return None
        first, rows, before_first = cursor.ahead
        if not first <= a < first + len(rows):
            return None
        expected = before_first if a == first else rows[a - first - 1]
        if not np.array_equal(expected, prev):
            return None
        return rows[a - first :]

    def _chunk(self, start: int, stop: int, prev: np.ndarray, cursor: Cursor) -> np.ndarray:
        t = self.targets
        base = t.before(start, cursor)
        steps = stop - start
        ahead = min(stop + LOOKAHEAD, max(stop, t.moving_end + 1))
        quanta = t.quanta(start, ahead, cursor)
        if _kernels.kernels() is not None:
            return self._compiled(start, steps, base, quanta, prev, cursor)
        level, frac, v, hi = t.levels(base, quanta, self.batch)
        cursor.targets_at = (stop, [h * Q + u for h, u in zip(hi.tolist(), v[steps - 1].tolist())])
        deadline = self._deadlines(steps, level, v, hi, quanta)
        level, frac = level[:steps], frac[:steps]
        key = np.where(frac > 0, deadline * self.n + np.arange(self.n), _NEVER)
        rank = np.empty_like(key)
        np.put_along_axis(rank, key.argsort(axis=1, kind="stable"), np.arange(self.n), axis=1)
        r = self.batch * np.arange(start + 1, stop + 1, dtype=np.int64) - level.sum(axis=1)
        free = rank < r[:, None]  # the memoryless choice: top r(t) by deadline
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
        cursor: Cursor,
    ) -> np.ndarray:
        """``_chunk`` through the compiled kernel: the same rows (``annealmix._kernels``)."""
        b = self.batch
        low = np.array([u & (Q - 1) for u in base], dtype=np.int64)
        hi = [u >> Q_BITS for u in base]
        prev_level = np.array([(b * u) >> Q_BITS for u in base], dtype=np.int64)
        out = np.empty((steps, self.n), dtype=np.int64)
        failed = np.zeros(3, dtype=np.int64)  # row, forced, room
        through = _kernels.kernels().earliest_deadline(
            quanta, low, np.array(hi, dtype=np.int64), b, steps, start, LOOKAHEAD,
            int(_NEVER), np.asarray(prev, dtype=np.int64), prev_level, out, failed,
        )  # fmt: skip
        if failed[2] < 0:
            raise _overflow(start + int(failed[0]), int(failed[1]), int(failed[1] + failed[2]))
        cursor.targets_at = (start + steps, [h * Q + u for h, u in zip(hi, through.tolist())])
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


def _overflow(step: int, forced: int, allowed: int) -> RuntimeError:
    return RuntimeError(
        f"exact plan cannot keep step {step} within one sample of its targets "
        f"({forced} sources hold a sample ahead, {allowed} may); please report this mixture"
    )


class Bernoulli(_Strategy):
    """Random mode: position ``j`` of step ``t`` draws its source with probabilities
    w(t) from a keyed hash of ``t * B + j``; counts are what the draws give, so a
    cold ``before(step)`` hashes every earlier position (a cursor walks on)."""

    def __init__(self, mixture: Mixture, batch: int, seed: int) -> None:
        super().__init__(mixture, batch)
        self.chunk = _RANDOM_CHUNK
        self._key = _hash.key(seed, 0xA11)

    def sources(self, start: int, stop: int) -> np.ndarray:
        """Source id per position for steps [start, stop), shape (stop - start, B)."""
        b = self.batch
        positions = np.arange(start * b, stop * b, dtype=np.int64).reshape(-1, b)
        u = (_hash.hash_counter(self._key, positions) >> np.uint64(64 - Q_BITS)).astype(np.int64)
        edges = np.cumsum(self.targets.quanta(start, stop), axis=1)[:, :-1]
        return (u[:, :, None] >= edges[:, None, :]).sum(axis=2, dtype=SOURCE_DTYPE)

    def range(
        self, start: int, num_steps: int, prev: np.ndarray | None, cursor: Cursor
    ) -> np.ndarray:
        if prev is None:
            prev = self.before(start, cursor)
        per_step = step_counts(self.sources(start, start + num_steps), self.n)
        return prev + np.cumsum(per_step, axis=0)


class _Walk(_Strategy):
    """A plan walked step by step, carrying per-source deficits: each step reads its
    own weights only (so weights learned online can be committed ahead of it).

    Subclasses give ``_walk`` (the rows of a range of steps) and ``bounds`` (the
    proven range of every deficit, which a loaded state is checked against).
    The walk is sequential: step t costs a replay of the steps before it unless a
    cursor holds the counts and deficits of a step at or before t. A stream's state
    carries them (``deficits``), so a resume is O(1); a cursor keeps a mark every
    ``MARK`` steps it walks, so looking a step up again is cheap.
    """

    MARK = 256

    def bounds(self) -> list[tuple[int, int]]:
        """Per source: every deficit lies strictly between these (units of 1/Q)."""
        raise NotImplementedError

    def start(self, step: int, cursor: Cursor) -> tuple[int, np.ndarray, tuple[int, ...]]:
        """The latest known point at or before ``step``: (step, counts, deficits)."""
        best = (0, np.zeros(self.n, dtype=np.int64), (0,) * self.n)
        known = cursor.deficits_at
        if known is not None and known[0] <= step:
            best = known
        marks = [s for s in cursor.marks if best[0] < s <= step]
        if marks:
            s = max(marks)
            best = (s, *cursor.marks[s])
        return best

    def before(self, step: int, cursor: Cursor) -> np.ndarray:
        a, counts, deficits = self.start(step, cursor)
        while a < step:
            b = min(step, a + self.chunk)
            rows, carries = self._walk(a, b, counts, deficits, cursor)
            counts, deficits, a = rows[-1], carries[-1], b
        cursor.deficits_at = (step, counts.copy(), deficits)
        return counts.copy()

    def range(
        self, start: int, num_steps: int, prev: np.ndarray | None, cursor: Cursor
    ) -> np.ndarray:
        known = cursor.deficits_at
        if known is None or known[0] != start:
            self.before(start, cursor)
            known = cursor.deficits_at
        if prev is not None and not np.array_equal(known[1], prev):
            raise ValueError(
                f"counts before step {start} ({np.asarray(prev).tolist()}) are not this "
                f"plan's ({known[1].tolist()}); walk the plan from a state it produced"
            )
        rows, carries = self._walk(start, start + num_steps, known[1], known[2], cursor)
        cursor.deficits_at = (start + num_steps, rows[-1].copy(), carries[-1])
        cursor.carries = (start, [known[2], *carries])
        return rows

    def _walk(
        self, start: int, stop: int, counts: np.ndarray, deficits: tuple[int, ...], cursor: Cursor
    ) -> tuple[np.ndarray, list[tuple[int, ...]]]:
        """Cumulative counts after each step of [start, stop), and the deficits there."""
        raise NotImplementedError

    def _mark(self, cursor: Cursor, step: int, row: np.ndarray, carry: tuple[int, ...]) -> None:
        if step % self.MARK == 0:
            cursor.marks[step] = (row.copy(), carry)


class Carried(_Walk):
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

    def __init__(self, mixture: Mixture, batch: int) -> None:
        super().__init__(mixture, batch)
        self.chunk = CHUNK

    def bounds(self) -> list[tuple[int, int]]:
        return [(-Q, Q * max(1, self.n - 1))] * self.n

    def _walk(
        self, start: int, stop: int, counts: np.ndarray, deficits: tuple[int, ...], cursor: Cursor
    ) -> tuple[np.ndarray, list[tuple[int, ...]]]:
        n, b = self.n, self.batch
        compiled = _kernels.kernels()
        if compiled is not None:  # the same integers (annealmix._kernels)
            rows = np.empty((stop - start, n), dtype=np.int64)
            carried = np.empty((stop - start, n), dtype=np.int64)
            compiled.carried(self.targets.quanta(start, stop), b, np.asarray(counts, np.int64),
                             np.array(deficits, dtype=np.int64), rows, carried)  # fmt: skip
            for row in range((-start - 1) % self.MARK, stop - start, self.MARK):
                self._mark(cursor, start + row + 1, rows[row], tuple(carried[row].tolist()))
            return rows, _Carries(carried)
        everyone = range(n)
        c, d = [int(x) for x in counts], list(deficits)
        rows = np.empty((stop - start, n), dtype=np.int64)
        carries = []
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
            carries.append(tuple(d))
            self._mark(cursor, start + row + 1, rows[row], carries[-1])
        return rows, carries


class _Carries:
    """Deficits after each step of a compiled walk, handed out as tuples of ints
    (what ``_walk`` returns) only when read."""

    def __init__(self, rows: np.ndarray) -> None:
        self.rows = rows

    def __getitem__(self, i: int) -> tuple[int, ...]:
        return tuple(self.rows[i].tolist())

    def __iter__(self):
        return (tuple(r) for r in self.rows.tolist())


class Tokens(_Walk):
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
    goes sample by sample (``_Walk``).

    Args:
        lengths_of: ``(source id, first draw, count) -> lengths`` of that run of
            the source's draws, in tokens (int64, each >= 1).
        longest: each source's longest sample.
    """

    def __init__(self, mixture: Mixture, batch: int, lengths_of, longest: tuple[int, ...]) -> None:
        super().__init__(mixture, batch)
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
        self, start: int, stop: int, counts: np.ndarray, deficits: tuple[int, ...], cursor: Cursor
    ) -> tuple[np.ndarray, list[tuple[int, ...]]]:
        """Cumulative counts after each step of [start, stop), and the deficits there."""
        compiled = _kernels.kernels()
        if compiled is not None and self._fits:
            return self._compiled(start, stop, counts, deficits, cursor, compiled.tokens)
        n, everyone = self.n, range(self.n)
        c, d = [int(x) for x in counts], list(deficits)
        buffers: list[list[int]] = [[] for _ in everyone]
        first = list(c)  # draw number of each buffer's first entry
        rows = np.empty((stop - start, n), dtype=np.int64)
        carries = []

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
            carries.append(tuple(d))
            self._mark(cursor, start + row + 1, rows[row], carries[-1])
        return rows, carries

    def _compiled(self, start, stop, counts, deficits, cursor, walk):
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
            self._mark(cursor, start + row + 1, rows[row], tuple(carried[row].tolist()))
        return rows, _Carries(carried)


def step_counts(sources: np.ndarray, n: int) -> np.ndarray:
    """Samples of each source in each row of ``sources`` (steps, B): shape (steps, n)."""
    rows = np.arange(sources.shape[0])[:, None] * n
    return np.bincount((rows + sources).ravel(), minlength=sources.shape[0] * n).reshape(-1, n)


def strategy(mixture: Mixture, batch: int, mode: str, seed: int) -> _Strategy:
    """The counting strategy of a plan, chosen once."""
    if mode == "random":
        return Bernoulli(mixture, batch, seed)
    return Nearest(mixture, batch) if mixture.num_sources == 2 else EarliestDeadline(mixture, batch)
