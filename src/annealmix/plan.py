"""The plan: a pure function (mixture, batch size, seed, step) -> the global batch.

Position ``j`` of step ``t`` (``t * B + j`` in the global stream) holds one draw from
one source: ``(source id, draw number)``; the source's order maps the draw number to
a sample index. Nothing per sample is stored: any step is computed on demand.

Modes:

- ``"exact"`` (default): per-source counts follow the cumulative targets
  ``B * sum_{s<=t} w(s)`` within one sample at every step (one half for two
  sources); see ``annealmix._counts``. Within a step the sources are spread evenly
  over the batch, so any contiguous slice of it (a rank's or a micro-batch's share)
  is close to the mixture too.
- ``"random"``: the post's sampler: every position draws its source independently
  with probabilities w(t), from a counter-based hash of (seed, position).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _hash, _validate
from ._counts import Q_BITS, ExactCounts, Targets
from .mixture import Mixture
from .order import ORDERS, range_indices

__all__ = ["MODES", "Batch", "Plan", "PlanIterator"]

MODES = ("exact", "random")
STATE_VERSION = 1
_MAX_BATCH = 1 << 22
_GOLDEN = (5**0.5 - 1) / 2
_COMPARE_MAX = 16
SOURCE_DTYPE = np.int16  # source ids per position, as Megatron's blending index stores them


@dataclass(frozen=True, kw_only=True, slots=True)
class Batch:
    """Steps ``start_step .. start_step + len(sources) - 1`` of the global stream.

    Args:
        start_step: the first step held.
        sources: source id per position (int16), shape (num_steps, B).
        draws: draw number within its source per position, shape (num_steps, B).
        indices: sample index within its source, shape (num_steps, B); ``None``
            when the plan was built without source sizes.
    """

    start_step: int
    sources: np.ndarray
    draws: np.ndarray
    indices: np.ndarray | None


class Plan:
    """Which sample of which source fills every position of every global batch.

    Args:
        mixture: the weights w(step).
        global_batch_size: B, samples per optimizer step across all ranks.
        seed: keys every random choice (random mode, shuffles).
        mode: ``"exact"`` or ``"random"``.
        sizes: samples per source, by name; needed for sample indices and epochs.
        order: ``"shuffle"`` (without replacement), ``"replacement"`` or
            ``"sequential"``; one for all sources or a dict by source name.
    """

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
        self.mixture = mixture
        self.global_batch_size = _validate.integer(
            "global_batch_size", global_batch_size, minimum=1
        )
        if self.global_batch_size > _MAX_BATCH:
            raise ValueError(f"global_batch_size must be <= {_MAX_BATCH}, got {global_batch_size}")
        self.seed = _validate.integer("seed", seed, minimum=0)
        self.mode = _validate.choice("mode", mode, MODES)
        names = mixture.sources
        self.sizes = None if sizes is None else self._check_sizes(sizes, names)
        orders = {n: order for n in names} if isinstance(order, str) else dict(order)
        for name in orders:
            if name not in names:
                _validate.choice("source in order:", name, names)
        self.orders = tuple(
            _validate.choice(f"order for source {n!r}", orders.get(n, "shuffle"), ORDERS)
            for n in names
        )
        self._targets = Targets(mixture)
        self._exact = ExactCounts(mixture, self.global_batch_size)
        self._random_key = _hash.key(self.seed, 0xA11)
        self._random_mark = (0, np.zeros(mixture.num_sources, dtype=np.int64))
        b = self.global_batch_size
        # Element e of a step (sources laid out one after another) goes to the
        # position whose golden-ratio point is the e-th smallest: a contiguous run of
        # positions then samples every source's block evenly (three-gap theorem).
        self._element_at = np.argsort(np.argsort((np.arange(b) * _GOLDEN) % 1.0, kind="stable"))

    @staticmethod
    def _check_sizes(sizes: Mapping[str, int], names: tuple[str, ...]) -> tuple[int, ...]:
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
                raise ValueError(
                    f"source {n!r} is empty (size {size}); remove it or give it samples"
                )
            out.append(size)
        return tuple(out)

    def spec(self) -> dict[str, Any]:
        """Everything that decides the stream, as plain JSON-able values."""
        return {
            "mixture": self.mixture.to_dict(),
            "global_batch_size": self.global_batch_size,
            "seed": self.seed,
            "mode": self.mode,
            "sizes": None if self.sizes is None else list(self.sizes),
            "orders": list(self.orders),
            "algorithm": STATE_VERSION,
        }

    def changes(self, old: Mapping[str, Any] | None) -> str:
        """Which parts of ``spec()`` differ from ``old`` (a saved spec), for messages."""
        if old is None:
            return "the plan (the state has no plan description)"
        new = self.spec()
        keys = [k for k in new if old.get(k) != new[k]]
        if "mixture" in keys:
            keys.remove("mixture")
            o, n = old.get("mixture") or {}, new["mixture"]
            keys += [f"mixture {k}" for k in ("weights", "phases") if o.get(k) != n.get(k)]
        return ", ".join(keys) or "the plan"

    @property
    def fingerprint(self) -> str:
        """A hash of ``spec()``: equal fingerprints, equal streams."""
        return hashlib.sha256(json.dumps(self.spec(), sort_keys=True).encode()).hexdigest()[:16]

    @property
    def replay_chunk(self) -> int:
        """Steps an exact replay computes at once: walking the counts forward in
        multiples of it (``consumed(k * replay_chunk)``) adds no work."""
        return self._exact.chunk

    # -- counts -------------------------------------------------------------------

    def targets(self, step: int) -> np.ndarray:
        """Scheduled cumulative samples per source through ``step`` (floats)."""
        u = self._targets.before(_validate.integer("step", step, minimum=0) + 1)
        return np.array([self.global_batch_size * x / (1 << Q_BITS) for x in u])

    def consumed(self, step: int) -> np.ndarray:
        """Samples drawn from each source in steps [0, step), as int64 counts."""
        step = _validate.integer("step", step, minimum=0)
        if self.mode == "exact":
            return self._exact.before(step)
        mark, counts = self._random_mark  # walk on from the last call, as exact mode does
        if mark > step:
            mark, counts = 0, np.zeros(self.mixture.num_sources, dtype=np.int64)
        for a in range(mark, step, 1024):
            counts = counts + self._random_counts(a, min(step, a + 1024)).sum(axis=0)
        self._random_mark = (step, counts)
        return counts.copy()

    def epochs(self, step: int) -> np.ndarray:
        """Passes over each source made by steps [0, step) (needs ``sizes``)."""
        if self.sizes is None:
            raise ValueError("epochs need source sizes: build the Plan with sizes={name: samples}")
        return self.consumed(step) / np.array(self.sizes)

    def counts(
        self, start: int, num_steps: int = 1, consumed: np.ndarray | None = None
    ) -> np.ndarray:
        """Samples of each source in each step of [start, start + num_steps), shape (num_steps, N).

        ``consumed`` (``self.consumed(start)``) saves the replay when already known.
        """
        start = _validate.integer("start", start, minimum=0)
        num_steps = _validate.integer("num_steps", num_steps, minimum=1)
        if self.mode == "random":
            return self._random_counts(start, start + num_steps)
        prev = self.consumed(start) if consumed is None else np.asarray(consumed, dtype=np.int64)
        cumulative = self._exact.range(start, num_steps, prev)
        return np.diff(cumulative, axis=0, prepend=prev[None, :])

    # -- batches ------------------------------------------------------------------

    def batch(self, step: int) -> Batch:
        """The global batch of one step."""
        return self.batches(step, 1)

    def batches(
        self,
        start: int,
        num_steps: int,
        consumed: np.ndarray | None = None,
        *,
        draw_offset: np.ndarray | None = None,
    ) -> Batch:
        """The global batches of steps [start, start + num_steps).

        ``consumed`` (``self.consumed(start)``) saves the replay when already known.
        ``draw_offset`` is added to each source's draw numbers: a re-planned run
        continues every source from the draws of the plan it replaced.
        """
        start = _validate.integer("start", start, minimum=0)
        prev = self.consumed(start) if consumed is None else np.asarray(consumed, dtype=np.int64)
        if self.mode == "random":
            sources = self._random_sources(start, start + num_steps)
            draws = _draws_in_order(sources, prev, self.mixture.num_sources)
        else:
            counts = self.counts(start, num_steps, prev)
            sources, draws = self._layout(counts, prev)
        if draw_offset is not None:
            draw_offset = np.asarray(draw_offset, dtype=np.int64)
            draws += draw_offset.take(sources)
            prev = prev + draw_offset
        return Batch(
            start_step=start,
            sources=sources,
            draws=draws,
            indices=self._indices(sources, draws, prev),
        )

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

    def _indices(
        self, sources: np.ndarray, draws: np.ndarray, prev: np.ndarray
    ) -> np.ndarray | None:
        """Sample index per position. A source's draws over a range of steps are one
        run ``prev[k], prev[k] + 1, ...``: each run is mapped in one go into a shared
        buffer, then gathered into position order."""
        if self.sizes is None:
            return None
        totals = np.bincount(sources.ravel(), minlength=self.mixture.num_sources)
        buffer = np.empty(int(totals.sum()), dtype=np.int64)
        shift = np.cumsum(totals) - totals - prev  # buffer slot of draw d of source k: d + shift[k]
        for k, (size, order) in enumerate(zip(self.sizes, self.orders)):
            run = buffer[shift[k] + prev[k] : shift[k] + prev[k] + totals[k]]
            range_indices(order, int(prev[k]), run, size=size, seed=self.seed, source_id=k)
        return buffer.take(shift.take(sources) + draws)

    def _random_sources(self, start: int, stop: int) -> np.ndarray:
        b = self.global_batch_size
        positions = np.arange(start * b, stop * b, dtype=np.int64).reshape(-1, b)
        u = (_hash.hash_counter(self._random_key, positions) >> np.uint64(64 - Q_BITS)).astype(
            np.int64
        )
        edges = np.cumsum(self._targets.quanta(start, stop), axis=1)[:, :-1]
        return (u[:, :, None] >= edges[:, None, :]).sum(axis=2, dtype=SOURCE_DTYPE)

    def _random_counts(self, start: int, stop: int) -> np.ndarray:
        return step_counts(self._random_sources(start, stop), self.mixture.num_sources)

    def iterate(self, start: int = 0) -> PlanIterator:
        """A resumable iterator over batches from ``start``."""
        return PlanIterator(self, start=start)


def step_counts(sources: np.ndarray, n: int) -> np.ndarray:
    """Samples of each source in each row of ``sources`` (steps, B): shape (steps, n)."""
    rows = np.arange(sources.shape[0])[:, None] * n
    return np.bincount((rows + sources).ravel(), minlength=sources.shape[0] * n).reshape(-1, n)


def check_state(state: Mapping[str, Any], required: set[str], version: int) -> None:
    """Refuse a state that lacks keys or was written by another state version."""
    missing = required - set(state)
    if missing:
        raise ValueError(f"state lacks {sorted(missing)}; pass what state_dict() returned")
    if state["version"] != version:
        raise ValueError(
            f"state version {state['version']!r} is not {version}; "
            "it was written by another annealmix release"
        )


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


class PlanIterator(Iterator[Batch]):
    """Walks the plan step by step, carrying the O(N) state that makes it cheap.

    Its ``state_dict`` is small plain JSON (version, step, per-source counts, the
    plan's fingerprint and description); ``load_state_dict`` continues the exact
    stream, and refuses a state from another plan naming what changed.

    Args:
        plan: the plan to walk.
        start: the first step to yield.
    """

    def __init__(self, plan: Plan, *, start: int = 0) -> None:
        self.plan = plan
        self.step = _validate.integer("start", start, minimum=0)
        self._consumed = plan.consumed(self.step)

    def __next__(self) -> Batch:
        return self.take(1)

    def take(self, num_steps: int) -> Batch:
        """The next ``num_steps`` global batches at once (the fast path)."""
        batch = self.plan.batches(self.step, num_steps, self._consumed)
        counts = np.bincount(batch.sources.ravel(), minlength=self.plan.mixture.num_sources)
        self._consumed = self._consumed + counts
        self.step += num_steps
        return batch

    @property
    def consumed(self) -> np.ndarray:
        """Samples drawn from each source before ``self.step``."""
        return self._consumed.copy()

    def state_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "step": self.step,
            "consumed": dict(zip(self.plan.mixture.sources, self._consumed.tolist())),
            "fingerprint": self.plan.fingerprint,
            "plan": self.plan.spec(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        check_state(state, {"version", "step", "consumed", "fingerprint"}, STATE_VERSION)
        if state["fingerprint"] != self.plan.fingerprint:
            raise ValueError(
                f"state was saved from a different plan: {self.plan.changes(state.get('plan'))} "
                "changed; resume with the original configuration"
            )
        names = self.plan.mixture.sources
        if sorted(state["consumed"]) != sorted(names):
            raise ValueError(
                f"state_dict counts sources {sorted(state['consumed'])}, plan has {sorted(names)}"
            )
        self.step = _validate.integer("state step", state["step"], minimum=0)
        self._consumed = np.array([state["consumed"][n] for n in names], dtype=np.int64)
