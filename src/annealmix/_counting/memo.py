"""What every counter shares: the point a walk stands at, the caches it keeps, the
refusal it raises, and the two-method contract (``point``, ``range``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, slots=True, eq=False)
class Point:
    """Where a walk over a plan stands: before ``step``.

    Args:
        step: the next step.
        counts: the plan's own samples of each source in steps [0, step) (int64).
        deficits: what a walking counter carries into ``step`` besides the counts:
            each source's target minus what it drew, in units of 1/Q (tokens / Q
            in tokens, samples / Q online), exact integers summing to zero;
            ``None`` for counters whose counts alone say where they stand.
    """

    step: int
    counts: np.ndarray
    deficits: tuple[int, ...] | None = None


Deficits = Sequence[tuple[int, ...]] | None


class OutOfBound(RuntimeError):
    """A replay met a step it cannot keep within one sample of its targets: counts
    no plan produces (a guessed start of a threaded replay), or a mixture the proof
    does not cover (please report it)."""


@dataclass(eq=False)
class Memo:
    """A counter's private caches: every field is a snapshot replaced whole (never
    changed in place), so a fresh memo gives the same counts, only slower.

    Attributes:
        targets_at: ``(s, U(s - 1))``: quanta summed over steps before ``s``.
        counts_at: ``(s, C(s - 1))``: counts before ``s``, where the last replay stopped.
        ahead: ``(first, rows, C(first - 1))``: cumulative counts computed ahead.
        window: ``(first, quanta)``: the last quanta computed (look-ahead reuse).
        walked: the ``Point`` where the last walk stopped (walking counters).
        marks: ``s -> Point`` every ``MARK`` steps walked (walking counters).
        entries: ``s -> (C(s - 1), U(s - 1))`` at the first step of each held
            segment reached (``EarliestDeadline``).
        tokens_at: ``(counts, tokens)``: tokens of a token plan's first draws.
        inner: a grouped counter's memo for its counter over the units (whose
            targets and counts are the units', not the sources').
    """

    targets_at: tuple[int, list[int]] | None = None
    counts_at: tuple[int, np.ndarray] | None = None
    ahead: tuple[int, np.ndarray, np.ndarray] | None = None
    window: tuple[int, np.ndarray] | None = field(default=None, repr=False)
    walked: Point | None = None
    marks: dict[int, Point] = field(default_factory=dict, repr=False)
    entries: dict[int, tuple[np.ndarray, list[int]]] = field(default_factory=dict, repr=False)
    tokens_at: tuple[np.ndarray, np.ndarray] | None = None
    inner: Memo | None = field(default=None, repr=False)


class Counter:
    """Cumulative counts C(t) of a plan: ``point(step)`` and ``range(at, n)``.

    Every counter is immutable; what it remembers between calls lives in the
    ``Memo`` its caller hands it.
    """

    #: whether a step's counts are laid out over its positions (``Plan``'s layout);
    #: a counter that draws each position's source itself gives ``sources()``.
    lays_out = True

    def __init__(self, targets, batch: int) -> None:
        self.targets = targets
        self.batch = batch
        self.n = targets.n
        # Rows a replay computes at once (about a million entries per (rows, N) array):
        # walking on in multiples of it adds no work. Chunking never changes a count.
        self.chunk = max(8192, (1 << 20) // self.n)

    def point(self, step: int, memo: Memo) -> Point:
        """Where the walk stands before ``step``."""
        start, counts = 0, np.zeros(self.n, dtype=np.int64)
        if memo.counts_at is not None and memo.counts_at[0] <= step:
            start, counts = memo.counts_at
        while start < step:
            stop = min(step, start + self.chunk)
            counts = self.range(Point(start, counts), stop - start, memo)[0][-1]
            start = stop
        memo.counts_at = (step, counts)
        return Point(step, counts.copy())

    def range(self, at: Point, num_steps: int, memo: Memo) -> tuple[np.ndarray, Deficits]:
        """C(t) for t in [at.step, at.step + num_steps), shape (num_steps, N), and the
        deficits before each of those steps and after the last (``num_steps + 1``
        tuples of ints; ``None`` for counters that carry none)."""
        raise NotImplementedError

    def bounds(self) -> list[tuple[int, int]] | None:
        """Per source: the open range every carried deficit lies in (units of 1/Q);
        ``None`` for counters that carry none."""
        return None
