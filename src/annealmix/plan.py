"""The plan: a pure function (mixture, batch size, seed, step) -> the global batch.

Position ``j`` of step ``t`` (``t * B + j`` in the global stream) holds one draw from
one source: ``(source id, draw number)``; the source's order maps the draw number to
a sample index. Nothing per sample is stored: any step is computed on demand.

Modes:

- ``"exact"`` (default): per-source counts ``C_k(t)`` stay within one sample of the
  plan's targets (one half for two sources); see ``annealmix._counts``. Within a
  step the sources are spread evenly over the batch, so any contiguous slice of it
  (a rank's or a micro-batch's share) is close to the mixture too.
- ``"random"``: the post's sampler: every position draws its source independently
  with probabilities w(t), from a counter-based hash of (seed, position).

A ``Plan`` is an immutable value: hashable, equal to any plan with the same
fingerprint, safe to share between threads, and small to pickle (it pickles as
its arguments). Whoever walks it over many calls (a stream, a CLI replay) owns a
``Cursor`` (``plan.cursor()``) that remembers where the last replay stopped.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from . import _validate
from ._counts import Q_BITS, SOURCE_DTYPE, Bernoulli, Cursor, strategy
from .mixture import Mixture

__all__ = ["MODES", "ORDERS", "Batch", "Cursor", "Plan"]

MODES = ("exact", "random")
# Within-source orders a plan names per source (``annealmix.order`` implements them).
ORDERS = ("replacement", "sequential", "shuffle")
# The global stream's algorithm: a new value changes every user's data, on purpose.
ALGORITHM = 1
_MAX_BATCH = 1 << 22
_GOLDEN = (5**0.5 - 1) / 2
_COMPARE_MAX = 16
# The parts of a plan a state names, in the order messages list them.
PARTS = ("sources", "weights", "phases", "global_batch_size", "seed", "mode", "sizes", "orders",
         "algorithm")  # fmt: skip


@dataclass(frozen=True, kw_only=True, slots=True)
class Batch:
    """Steps ``start_step .. start_step + len(sources) - 1`` of the global stream
    (or of one rank's columns of it).

    Args:
        start_step: the first step held.
        sources: source id per position (int16), shape (num_steps, positions).
        draws: draw number within its source per position, same shape.
        first_draws: each source's first draw number in the steps held (its draws
            there run on from it), shape (num_sources,).
        indices: sample index within its source, same shape as ``sources``; ``None``
            until ``annealmix.order.indexed`` (or a ``Stream``) maps the draws, and
            for a plan without source sizes.
        carry: what a walk of the plan carries from step to step besides counts,
            before each step held and after the last (a ``TokenPlan``'s deficits);
            ``None`` for a plan whose counts alone say where it stands.
    """

    start_step: int
    sources: np.ndarray
    draws: np.ndarray
    first_draws: np.ndarray
    indices: np.ndarray | None = None
    carry: tuple[tuple[int, ...], ...] | None = None


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


class Plan:
    """Which sample of which source fills every position of every global batch.

    Args:
        mixture: the weights w(step).
        global_batch_size: B, samples per optimizer step across all ranks.
        seed: keys every random choice (random mode, shuffles); in [0, 2**64).
        mode: ``"exact"`` or ``"random"``.
        sizes: samples per source, by name; needed for sample indices and epochs.
        order: ``"shuffle"`` (without replacement), ``"replacement"`` or
            ``"sequential"``; one for all sources or a dict by source name.

    Attributes:
        fingerprints: a 64-bit hash (hex) of each part of the plan (``PARTS``), which
            a stream's state carries so that a refusal can name what changed.
        fingerprint: a hash of them all: equal fingerprints, equal streams.
    """

    __slots__ = (
        "mixture",
        "global_batch_size",
        "seed",
        "mode",
        "sizes",
        "orders",
        "fingerprints",
        "fingerprint",
        "_counter",
        "_element_at",
    )

    def __init__(
        self,
        mixture: Mixture,
        *,
        global_batch_size: int,
        seed: int = 0,
        mode: str = "exact",
        sizes: Mapping[str, int] | None = None,
        order: str | Mapping[str, str] = "shuffle",
    ) -> None:
        if not isinstance(mixture, Mixture):
            raise TypeError(f"mixture must be an annealmix.Mixture, got {type(mixture).__name__}")
        if mixture.num_sources > np.iinfo(SOURCE_DTYPE).max:
            raise ValueError(
                f"a plan holds at most {np.iinfo(SOURCE_DTYPE).max} sources, the mixture has "
                f"{mixture.num_sources}; merge small sources into one"
            )
        batch = _validate.integer("global_batch_size", global_batch_size, minimum=1)
        if batch > _MAX_BATCH:
            raise ValueError(f"global_batch_size must be <= {_MAX_BATCH}, got {global_batch_size}")
        seed = _validate.integer("seed", seed, minimum=0)
        if seed >= 1 << 64:  # keys are 64-bit: a larger seed would alias a smaller one
            raise ValueError(f"seed must be < 2**64, got {seed}; use seed % 2**64 or a new seed")
        names = mixture.sources
        orders = {n: order for n in names} if isinstance(order, str) else dict(order)
        for name in orders:
            if name not in names:
                _validate.choice("source in order:", name, names)
        put = object.__setattr__
        put(self, "mixture", mixture)
        put(self, "global_batch_size", batch)
        put(self, "seed", seed)
        put(self, "mode", _validate.choice("mode", mode, MODES))
        put(self, "sizes", None if sizes is None else _check_sizes(sizes, names))
        put(
            self,
            "orders",
            tuple(
                _validate.choice(f"order for source {n!r}", orders.get(n, "shuffle"), ORDERS)
                for n in names
            ),
        )
        fingerprints = {k: _digest(v) for k, v in self._parts().items()}
        put(self, "fingerprints", MappingProxyType(fingerprints))
        put(self, "fingerprint", _digest(fingerprints))
        put(self, "_counter", strategy(mixture, batch, self.mode, seed))
        # Element e of a step (sources laid out one after another) goes to the
        # position whose golden-ratio point is the e-th smallest: a contiguous run of
        # positions then samples every source's block evenly (three-gap theorem).
        ranks = np.argsort(np.argsort((np.arange(batch) * _GOLDEN) % 1.0, kind="stable"))
        ranks.flags.writeable = False
        put(self, "_element_at", ranks)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"a Plan is immutable; build a new one to change {name!r}")

    def __reduce__(self):
        return _rebuild, (type(self), self.mixture, self._arguments())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Plan) and other.fingerprint == self.fingerprint

    def __hash__(self) -> int:
        return hash(self.fingerprint)

    def __repr__(self) -> str:
        return (
            f"Plan(sources={list(self.mixture.sources)}, global_batch_size="
            f"{self.global_batch_size}, seed={self.seed}, mode={self.mode!r}, "
            f"fingerprint={self.fingerprint!r})"
        )

    def _arguments(self) -> dict[str, Any]:
        """What the constructor takes besides the mixture (pickling, rebuilding)."""
        names = self.mixture.sources
        return {
            "global_batch_size": self.global_batch_size,
            "seed": self.seed,
            "mode": self.mode,
            "sizes": None if self.sizes is None else dict(zip(names, self.sizes)),
            "order": dict(zip(names, self.orders)),
        }

    def _parts(self) -> dict[str, Any]:
        """What each of ``PARTS`` fingerprints, as JSON-able values."""
        spec = self.spec()
        return {
            "sources": list(self.mixture.sources),
            "weights": spec["mixture"]["weights"],
            "phases": spec["mixture"]["phases"],
            **{k: spec[k] for k in PARTS[3:]},
        }

    def spec(self) -> dict[str, Any]:
        """Everything that decides the stream, as plain JSON-able values."""
        return {
            "mixture": self.mixture.to_dict(),
            "global_batch_size": self.global_batch_size,
            "seed": self.seed,
            "mode": self.mode,
            "sizes": None if self.sizes is None else list(self.sizes),
            "orders": list(self.orders),
            "algorithm": ALGORITHM,
        }

    def changes(self, fingerprints: Mapping[str, Any]) -> list[str]:
        """The parts (``PARTS``) whose fingerprints differ from ``fingerprints``."""
        return [k for k in PARTS if fingerprints.get(k) != self.fingerprints[k]]

    @property
    def num_sources(self) -> int:
        return self.mixture.num_sources

    @property
    def replay_chunk(self) -> int:
        """Steps a replay computes at once: walking a cursor forward in multiples of
        it (``consumed(k * replay_chunk, cursor=c)``) adds no work."""
        return self._counter.chunk

    def cursor(self) -> Cursor:
        """A fresh replay cursor for walking this plan over many calls."""
        return Cursor()

    # -- counts -------------------------------------------------------------------

    def targets(self, step: int) -> np.ndarray:
        """Scheduled cumulative samples per source through ``step`` (floats)."""
        u = self._counter.targets.before(_validate.integer("step", step, minimum=0) + 1)
        return np.array([self.global_batch_size * x / (1 << Q_BITS) for x in u])

    def consumed(self, step: int, *, cursor: Cursor | None = None) -> np.ndarray:
        """Samples drawn from each source in steps [0, step), as int64 counts.

        Without a cursor every call replays from step 0 where the strategy needs a
        replay; a cursor walks on from its last call.
        """
        step = _validate.integer("step", step, minimum=0)
        return self._counter.before(step, Cursor() if cursor is None else cursor)

    def epochs(self, step: int, *, cursor: Cursor | None = None) -> np.ndarray:
        """Passes over each source made by steps [0, step) (needs ``sizes``)."""
        if self.sizes is None:
            raise ValueError("epochs need source sizes: build the Plan with sizes={name: samples}")
        return self.consumed(step, cursor=cursor) / np.array(self.sizes)

    def counts(
        self,
        start: int,
        num_steps: int = 1,
        consumed: np.ndarray | None = None,
        *,
        cursor: Cursor | None = None,
    ) -> np.ndarray:
        """Samples of each source in each step of [start, start + num_steps), shape (num_steps, N).

        ``consumed`` (``self.consumed(start)``) saves the replay when already known.
        """
        start = _validate.integer("start", start, minimum=0)
        num_steps = _validate.integer("num_steps", num_steps, minimum=1)
        cursor = Cursor() if cursor is None else cursor
        if consumed is None:
            consumed = self._counter.before(start, cursor)
        prev = np.asarray(consumed, dtype=np.int64)
        cumulative = self._counter.range(start, num_steps, prev, cursor)
        return np.diff(cumulative, axis=0, prepend=prev[None, :])

    def weights_at(self, step: int | np.ndarray) -> np.ndarray:
        """The weights the plan follows at ``step`` (its mixture's)."""
        return self.mixture.weights_at(step)

    def log_entries(self) -> list[list[Any]] | None:
        """An online plan's weight log (``annealmix.online``); ``None`` here."""
        return None

    @property
    def initial_carry(self) -> tuple[int, ...] | None:
        """What a walk carries besides counts at step 0 (``Batch.carry``); none here."""
        return None

    def check_consumed(
        self,
        step: int,
        consumed: np.ndarray,
        carry: tuple[int, ...] | None,
        cursor: Cursor,
    ) -> None:
        """Refuse counts (from a saved state) that are not the plan's at ``step``: they
        would shift every later draw without a word. Exact mode recomputes them by a
        replay, which also positions ``cursor``; random mode, whose counts cost a hash
        per earlier position, checks that they add up to the step's samples."""
        if self.mode == "random":
            self.check_total(step, consumed)
            return
        want = self.consumed(step, cursor=cursor)
        wrong = np.flatnonzero(want != consumed)
        if wrong.size:
            k = int(wrong[0])
            refuse_counts(
                step,
                f"source {self.mixture.sources[k]!r}: {int(consumed[k])} in the state, "
                f"{int(want[k])} in the plan; {wrong.size} source(s) differ",
            )

    def check_total(self, step: int, consumed: np.ndarray) -> None:
        """Refuse counts that do not add up to the samples of ``step`` steps."""
        b, total = self.global_batch_size, int(np.sum(consumed))
        if total != b * step:
            refuse_counts(step, f"they add up to {total}, not {step} steps x {b} = {b * step}")

    # -- batches ------------------------------------------------------------------

    def batch(self, step: int) -> Batch:
        """The global batch of one step (sources and draws)."""
        return self.batches(step, 1)

    def batches(
        self,
        start: int,
        num_steps: int,
        consumed: np.ndarray | None = None,
        *,
        draw_offset: np.ndarray | None = None,
        cursor: Cursor | None = None,
    ) -> Batch:
        """The global batches of steps [start, start + num_steps): each position's
        source and draw number (``annealmix.order.indexed`` adds sample indices).

        ``consumed`` (``self.consumed(start)``) saves the replay when already known.
        ``draw_offset`` is added to each source's draw numbers: a re-planned run
        continues every source from the draws of the plan it replaced (a walking
        plan takes none: it continues from the saved counts themselves). A walking
        plan's batch carries what its walk carries (``Batch.carry``).
        """
        start = _validate.integer("start", start, minimum=0)
        num_steps = _validate.integer("num_steps", num_steps, minimum=1)
        walks = self.initial_carry is not None
        if walks and draw_offset is not None:
            raise ValueError(
                f"a {type(self).__name__} takes no draw_offset; re-plan from the saved counts"
            )
        cursor = Cursor() if cursor is None else cursor
        if consumed is None:
            consumed = self._counter.before(start, cursor)
        prev = np.asarray(consumed, dtype=np.int64)
        if isinstance(self._counter, Bernoulli):
            sources = self._counter.sources(start, start + num_steps)
            draws = _draws_in_order(sources, prev, self.num_sources)
        else:
            counts = self.counts(start, num_steps, prev, cursor=cursor)
            sources, draws = self._layout(counts, prev)
        if draw_offset is not None:
            draw_offset = np.asarray(draw_offset, dtype=np.int64)
            draws += draw_offset.take(sources)
            prev = prev + draw_offset
        carry = tuple(cursor.carries[1]) if walks else None
        return Batch(start_step=start, sources=sources, draws=draws, first_draws=prev, carry=carry)

    def _layout(self, counts: np.ndarray, prev: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Counts per step and source -> (source, draw) per position.

        Element ``e`` of a step, with the sources' blocks laid out one after another,
        sits at the position ``p`` with ``element_at[p] == e``; so a position's source
        is the block its element falls in, and its draw is the block's first draw plus
        the element's offset into the block.
        """
        steps, n = counts.shape
        ends = np.cumsum(counts, axis=1)
        element = self._element_at
        if n <= _COMPARE_MAX:  # n - 1 compares over the batch beat a gather
            sources = np.zeros((steps, self.global_batch_size), dtype=SOURCE_DTYPE)
            for k in range(n - 1):
                sources += element >= ends[:, k, None]
        else:
            ids = np.tile(np.arange(n, dtype=SOURCE_DTYPE), steps)
            sources = np.repeat(ids, counts.ravel()).reshape(steps, -1)[:, element]
        first_draw = np.cumsum(counts, axis=0) - counts + prev
        offset = first_draw - (ends - counts)
        draws = offset.ravel().take(sources + np.arange(0, steps * n, n)[:, None])
        draws += element
        return sources, draws


def refuse_counts(step: int, detail: str) -> None:
    """The error for saved counts that are not a plan's at ``step``."""
    raise ValueError(
        f"state counts at step {step} are not the plan's counts there ({detail}): the "
        "state was edited or belongs to another run; resume from the state this run saved"
    )


def _rebuild(kind: type, mixture: Mixture, arguments: dict[str, Any]) -> Plan:
    return kind(mixture, **arguments)


def _check_sizes(sizes: Mapping[str, int], names: tuple[str, ...]) -> tuple[int, ...]:
    if not isinstance(sizes, Mapping):
        raise TypeError(f"sizes must map source names to sample counts, got {sizes!r}")
    for name in sizes:
        if name not in names:
            _validate.choice("source in sizes:", name, names)
    missing = [n for n in names if n not in sizes]
    if missing:
        raise ValueError(
            f"sizes has no entry for source {missing[0]!r}; give every source's sample count"
        )
    out = []
    for n in names:
        size = _validate.integer(f"size of source {n!r}", sizes[n])
        if size < 1:
            raise ValueError(f"source {n!r} is empty (size {size}); remove it or give it samples")
        out.append(size)
    return tuple(out)


def _draws_in_order(sources: np.ndarray, prev: np.ndarray, n: int) -> np.ndarray:
    """Draw numbers when positions are consumed in stream order: each source's
    positions, in order, are numbered on from ``prev``."""
    flat = sources.ravel()
    draws = np.empty(flat.size, dtype=np.int64)
    if n <= _COMPARE_MAX:  # one scan per source beats a sort
        for k in range(n):
            where = np.flatnonzero(flat == k)
            draws[where] = prev[k] + np.arange(where.size)
    else:  # a stable sort by source puts each source's positions in one run
        by_source = np.argsort(flat, kind="stable")
        totals = np.bincount(flat, minlength=n)
        first = prev - (np.cumsum(totals) - totals)  # draw = first[k] + rank in sorted order
        draws[by_source] = np.arange(flat.size) + first.take(flat.take(by_source))
    return draws.reshape(sources.shape)
