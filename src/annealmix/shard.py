"""One rank's share of the plan, micro-batch by micro-batch, resumable.

Rank ``r`` of ``W`` owns positions ``[r * B / W, (r + 1) * B / W)`` of every global
batch, and micro-batch ``m`` of ``M`` the ``m``-th contiguous part of that. The plan
spreads every source evenly through the batch, so each slice follows the mixture
too. Every rank computes its own slice from the plan: no collective, no
coordinator. Rank, world size and micro-batches are explicit ints here; finding
them from ``torch.distributed`` or the environment happens in ``annealmix.torch``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _validate
from .plan import Plan, check_state, step_counts

__all__ = ["MicroBatch", "Shard", "ShardStream"]

STATE_VERSION = 1
_HISTORY = 4096  # steps whose start counts state_at() finds without a replay


@dataclass(frozen=True, kw_only=True, slots=True)
class Shard:
    """Which part of each global batch one rank's micro-batch holds.

    Args:
        global_batch_size: B, samples per optimizer step across all ranks.
        rank: this rank, in [0, world_size).
        world_size: data-parallel ranks.
        micro_batches: gradient-accumulation micro-batches per step on each rank.
    """

    global_batch_size: int
    rank: int = 0
    world_size: int = 1
    micro_batches: int = 1

    def __post_init__(self) -> None:
        world = _validate.integer("world_size", self.world_size, minimum=1)
        rank = _validate.integer("rank", self.rank, minimum=0)
        if rank >= world:
            raise ValueError(f"rank must be in [0, world_size={world}), got {rank}")
        micro = _validate.integer("micro_batches", self.micro_batches, minimum=1)
        b = _validate.integer("global_batch_size", self.global_batch_size, minimum=1)
        if b % (world * micro):
            raise ValueError(
                f"global_batch_size {b} does not divide into world_size {world} x "
                f"micro_batches {micro} = {world * micro} equal parts; choose a global batch "
                f"that is a multiple of {world * micro}"
            )

    @property
    def micro_batch_size(self) -> int:
        """Samples per micro-batch on one rank."""
        return self.global_batch_size // (self.world_size * self.micro_batches)

    def positions(self, micro: int) -> slice:
        """Positions of the global batch in this rank's micro-batch ``micro``."""
        size = self.micro_batch_size
        first = (self.rank * self.micro_batches + micro) * size
        return slice(first, first + size)


@dataclass(frozen=True, kw_only=True, slots=True)
class MicroBatch:
    """One rank's micro-batch: parallel arrays over its samples.

    Args:
        step: the optimizer step.
        micro: the micro-batch within the step, in [0, micro_batches).
        sources: source id of each sample (int16).
        draws: draw number of each sample within its source.
        indices: sample index within its source; ``None`` for a plan without sizes.
    """

    step: int
    micro: int
    sources: np.ndarray
    draws: np.ndarray
    indices: np.ndarray | None


class ShardStream(Iterator[MicroBatch]):
    """A rank's micro-batches from the plan, in order, with resumable state.

    ``state_dict()`` describes the next micro-batch to produce; ``state_at(n)``
    the state after the first ``n`` micro-batches produced since the stream was
    made or loaded (a loader that prefetches reports what the loop consumed).

    Args:
        plan: the plan.
        shard: this rank's part of each batch.
        num_steps: stop after this many steps (``None``: never stop).
        chunk_steps: steps planned at once (speed; never changes the stream); by
            default about 64K samples' worth.
    """

    def __init__(
        self,
        plan: Plan,
        shard: Shard,
        *,
        num_steps: int | None = None,
        chunk_steps: int | None = None,
    ) -> None:
        if shard.global_batch_size != plan.global_batch_size:
            raise ValueError(
                f"shard global_batch_size {shard.global_batch_size} != plan's "
                f"{plan.global_batch_size}; build both from one batch size"
            )
        self.plan, self.shard = plan, shard
        self.num_steps = None if num_steps is None else _validate.integer("num_steps", num_steps)
        if chunk_steps is None:
            chunk_steps = min(4096, max(1, (1 << 16) // plan.global_batch_size))
        self.chunk_steps = _validate.integer("chunk_steps", chunk_steps, minimum=1)
        self._seek(0, 0, np.zeros(plan.mixture.num_sources, dtype=np.int64), None)

    def _seek(self, step: int, micro: int, consumed: np.ndarray, offset: np.ndarray | None):
        self.step, self.micro = step, micro
        self._offset = offset  # added to every draw after a re-plan
        self._plan_consumed = consumed  # the plan's own counts before self.step
        self.origin = step * self.shard.micro_batches + micro  # micro-batches before the mark
        self._history: deque[tuple[int, np.ndarray]] = deque(maxlen=_HISTORY)
        self._history.append((step, consumed))
        self._cache = None

    def mark(self) -> None:
        """Count produced micro-batches from the current position (for ``state_at``)."""
        self.origin = self.step * self.shard.micro_batches + self.micro

    # -- iteration ----------------------------------------------------------------

    def __next__(self) -> MicroBatch:
        if self.num_steps is not None and self.step >= self.num_steps:
            raise StopIteration
        batch = self._cache
        if batch is None or not batch.start_step <= self.step < batch.start_step + len(
            batch.sources
        ):
            batch = self._fill()
        row = self.step - batch.start_step
        cols = self.shard.positions(self.micro)
        out = MicroBatch(
            step=self.step,
            micro=self.micro,
            sources=batch.sources[row, cols],
            draws=batch.draws[row, cols],
            indices=None if batch.indices is None else batch.indices[row, cols],
        )
        self.micro += 1
        if self.micro == self.shard.micro_batches:
            self._plan_consumed = self._plan_consumed + self._step_counts[row]
            self.step, self.micro = self.step + 1, 0
            self._history.append((self.step, self._plan_consumed))
        return out

    def _fill(self):
        steps = self.chunk_steps
        if self.num_steps is not None:
            steps = min(steps, self.num_steps - self.step)
        self._cache = self.plan.batches(
            self.step, steps, self._plan_consumed, draw_offset=self._offset
        )
        n = self.plan.mixture.num_sources
        self._step_counts = step_counts(self._cache.sources, n)
        return self._cache

    # -- state --------------------------------------------------------------------

    @property
    def consumed(self) -> np.ndarray:
        """Samples drawn from each source, all ranks together, before ``self.step``."""
        return self._actual(self._plan_consumed)

    def _actual(self, plan_consumed: np.ndarray) -> np.ndarray:
        return plan_consumed if self._offset is None else plan_consumed + self._offset

    def state_dict(self) -> dict[str, Any]:
        """Plain JSON: where the stream stands, the counts there, and the plan's identity."""
        return self._state(self.step, self.micro, self._plan_consumed)

    def state_at(self, produced: int) -> dict[str, Any]:
        """The state after the first ``produced`` micro-batches since the last ``mark()``."""
        position = self.origin + _validate.integer("produced", produced, minimum=0)
        step, micro = divmod(position, self.shard.micro_batches)
        for known, plan_consumed in reversed(self._history):
            if known == step:
                return self._state(step, micro, plan_consumed)
        return self._state(step, micro, self.plan.consumed(step))  # not produced here: replay

    def _state(self, step: int, micro: int, plan_consumed: np.ndarray) -> dict[str, Any]:
        names = self.plan.mixture.sources
        offset = np.zeros(len(names), dtype=np.int64) if self._offset is None else self._offset
        return {
            "version": STATE_VERSION,
            "step": step,
            "micro": micro,
            "micro_batches": self.shard.micro_batches,
            "world_size": self.shard.world_size,
            "consumed": dict(zip(names, self._actual(plan_consumed).tolist())),
            "offset": dict(zip(names, offset.tolist())),
            "fingerprint": self.plan.fingerprint,
            "plan": self.plan.spec(),
        }

    def load_state_dict(self, state: Mapping[str, Any], *, replan: bool = False) -> None:
        """Continue from ``state``, on any world size when it was taken at a step boundary.

        A state from a different plan is refused, naming what changed, unless
        ``replan=True``: then the new plan takes over from the saved step, each
        source continuing from its saved count, so a without-replacement source
        repeats nothing. (Per-source counts then stay within two samples of the
        old counts plus the new plan's targets from that step on.)
        """
        required = {"version", "step", "micro", "micro_batches", "consumed", "fingerprint"}
        check_state(state, required, STATE_VERSION)
        step = _validate.integer("state step", state["step"], minimum=0)
        micro = _validate.integer("state micro", state["micro"], minimum=0)
        if micro and (
            state["micro_batches"] != self.shard.micro_batches
            or state.get("world_size") != self.shard.world_size
            or replan
        ):
            raise ValueError(
                f"state was taken inside step {step} (micro-batch {micro} of "
                f"{state['micro_batches']}, world size {state.get('world_size')}); resume it "
                "with the same world size and micro-batches, or save at step boundaries"
            )
        names = self.plan.mixture.sources
        saved = {str(k): int(v) for k, v in state["consumed"].items()}
        if state["fingerprint"] == self.plan.fingerprint:
            offset = np.array([state.get("offset", {}).get(n, 0) for n in names], dtype=np.int64)
            plan_consumed = np.array([saved[n] for n in names], dtype=np.int64) - offset
            self._seek(step, micro, plan_consumed, offset if offset.any() else None)
            return
        if not replan:
            raise ValueError(
                f"state was saved from a different plan: {self.plan.changes(state.get('plan'))} "
                "changed. Resume with the original configuration, or pass replan=True to "
                f"continue with the new one from step {step}"
            )
        plan_consumed = self.plan.consumed(step)
        actual = np.array([saved.get(n, 0) for n in names], dtype=np.int64)
        self._seek(step, 0, plan_consumed, actual - plan_consumed)
