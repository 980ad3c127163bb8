"""Which part of every global batch one rank's micro-batch holds.

The ``W * M`` micro-batches of a step (``W`` ranks, ``M`` micro-batches each) cut the
global batch into equal windows, in order: rank ``r``'s micro-batch ``m`` is window
``r * M + m``. The plan spreads every source evenly through the batch, so each window
follows the mixture too; but under constant weights the batch is laid out the same
way every step, and a fixed window would see the same slight excess or shortfall
of a source for ever (at 64 ranks, a 10% source made 6.2% of one rank's samples and
18.8% of another's). So the windows turn: at step ``t`` they start at position
``turn(t) = floor(B * frac(t * golden))`` and wrap around the batch, which moves
every window over every position evenly in the long run, while each stays a
contiguous (cyclic) run of the plan's layout. The global stream is untouched: the
windows of a step still tile its batch exactly, on any world size. On one rank the
windows do not turn: its micro-batches are summed into one step anyway, and the
rank's share is the whole batch in the plan's order.

Rank, world size and micro-batches are explicit ints here; finding them from
``torch.distributed`` or the environment happens at the edge, in
``annealmix.torch.resolve_shard``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _validate

__all__ = ["Shard", "turn"]

_GOLDEN64 = 0x9E3779B97F4A7C15  # 2**64 / golden ratio, odd


def turn(step: int | np.ndarray, global_batch_size: int) -> np.ndarray:
    """Where the windows of ``step`` start: ``floor(B * frac(step * golden))``, in
    exact integer arithmetic (the same on every machine)."""
    t = np.asarray(step, dtype=np.uint64)
    with np.errstate(over="ignore"):  # the product wraps mod 2**64 on purpose
        frac = t * np.uint64(_GOLDEN64)
    # B * frac / 2**64 without overflow: B < 2**23, so split frac into 32-bit halves.
    hi, lo = frac >> np.uint64(32), frac & np.uint64(0xFFFFFFFF)
    b = np.uint64(global_batch_size)
    return ((hi * b + ((lo * b) >> np.uint64(32))) >> np.uint64(32)).astype(np.int64)


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

    def positions(self, micro: int, step: int) -> slice | np.ndarray:
        """Positions of the global batch in this rank's micro-batch ``micro`` at ``step``
        (a slice, or an index array where the window wraps around the batch)."""
        size = self.micro_batch_size
        first = (self.rank * self.micro_batches + micro) * size
        if self.world_size > 1:
            first = (first + int(turn(step, self.global_batch_size))) % self.global_batch_size
        if first + size <= self.global_batch_size:
            return slice(first, first + size)
        return np.r_[first : self.global_batch_size, 0 : first + size - self.global_batch_size]

    def columns(self, steps: np.ndarray) -> np.ndarray | slice:
        """Positions of all of this rank's micro-batches at each of ``steps``: an index
        array of shape (len(steps), micro_batches * micro_batch_size), or a slice when
        this shard is the whole batch."""
        size = self.micro_batches * self.micro_batch_size
        if size == self.global_batch_size:
            return slice(0, size)
        first = self.rank * size + turn(steps, self.global_batch_size)
        return (first[:, None] + np.arange(size)) % self.global_batch_size
