"""Which part of every global batch one rank's micro-batch holds.

Rank ``r`` of ``W`` owns positions ``[r * B / W, (r + 1) * B / W)`` of every global
batch, and micro-batch ``m`` of ``M`` the ``m``-th contiguous part of that. The plan
spreads every source evenly through the batch, so each slice follows the mixture
too. Rank, world size and micro-batches are explicit ints here; finding them from
``torch.distributed`` or the environment happens at the edge, in
``annealmix.torch.resolve_rank``.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import _validate

__all__ = ["Shard"]


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

    def columns(self) -> slice:
        """Positions of the global batch in all of this rank's micro-batches."""
        return slice(self.positions(0).start, self.positions(self.micro_batches - 1).stop)
