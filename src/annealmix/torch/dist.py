"""Where this process sits among data-parallel ranks, and summing metrics over them."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist

from .. import metrics as _metrics
from ..shard import Shard

__all__ = ["all_reduce_metrics", "resolve_local_rank", "resolve_rank", "resolve_shard"]

# (rank, world size, local rank) variables, in the order launchers are tried, as ezpz
# does: torchrun (and ezpz itself), MPICH/Intel MPI (PMI; MPICH's local rank), MPICH
# under PALS (Aurora, Polaris: PALS numbers the ranks, PMI_SIZE counts them), Open
# MPI, SLURM.
_ENV = (
    ("RANK", "WORLD_SIZE", "LOCAL_RANK"),
    ("PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"),
    ("PALS_RANKID", "PMI_SIZE", "PALS_LOCAL_RANKID"),
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"),
    ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"),
)


def _launcher() -> tuple[int, int, int] | None:
    """(rank, world size, local rank) from the first launcher whose variables are set."""
    for rank_var, size_var, local_var in _ENV:
        if rank_var in os.environ and size_var in os.environ:
            names = (rank_var, size_var, local_var)
            values = [os.environ.get(v, "0" if v == local_var else "") for v in names]
            try:
                rank, world, local = (int(v) for v in values)
            except ValueError:
                shown = ", ".join(f"{v}={os.environ.get(v)!r}" for v in names if v in os.environ)
                raise ValueError(
                    f"environment {shown} are not integers; fix the launcher or pass "
                    f"shard=annealmix.Shard(global_batch_size=..., rank=..., world_size=...)"
                ) from None
            if not 0 <= rank < world:
                raise ValueError(
                    f"environment {rank_var}={rank} is not a rank of {size_var}={world}; fix "
                    "the launcher or pass shard=annealmix.Shard(global_batch_size=..., rank=..., "
                    "world_size=...)"
                )
            return rank, world, local
    return None


def resolve_rank(
    rank: int | None = None, world_size: int | None = None, group: Any = None
) -> tuple[int, int]:
    """This process's data-parallel (rank, world size).

    Explicit arguments win; then the group (default: the world) of an initialised
    ``torch.distributed`` (under tensor or pipeline parallelism, pass the
    data-parallel group: its peers must get the same batches); then the launcher's
    environment (``RANK``/``WORLD_SIZE``, ``PMI_*``, ``PALS_RANKID``,
    ``OMPI_COMM_WORLD_*``, ``SLURM_*``); else a single process (0, 1).
    """
    if (rank is None) != (world_size is None):
        raise ValueError(
            f"give both rank and world_size or neither, got rank={rank!r}, "
            f"world_size={world_size!r}"
        )
    if rank is not None:
        return int(rank), int(world_size)  # type: ignore[arg-type]
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(group), dist.get_world_size(group)
    found = _launcher()
    return (0, 1) if found is None else found[:2]


def resolve_local_rank() -> int:
    """This process's rank on its node (for the device it should use), from the same
    launcher variables as ``resolve_rank`` (``LOCAL_RANK``, ``MPI_LOCALRANKID``,
    ``PALS_LOCAL_RANKID``, ``OMPI_COMM_WORLD_LOCAL_RANK``, ``SLURM_LOCALID``); 0 alone."""
    found = _launcher()
    return 0 if found is None else found[2]


def resolve_shard(global_batch_size: int, *, micro_batches: int = 1, group: Any = None) -> Shard:
    """This process's ``Shard``: rank and world size from ``resolve_rank(group=group)``."""
    rank, world = resolve_rank(group=group)
    return Shard(
        global_batch_size=global_batch_size,
        rank=rank,
        world_size=world,
        micro_batches=micro_batches,
    )


def all_reduce_metrics(values: Mapping[str, float], group: Any = None) -> dict[str, float]:
    """Sum the additive metrics (counts, samples, tokens) over the ranks of ``group``.

    Other keys (weights, shares, epochs, losses) pass through unchanged. Without an
    initialised ``torch.distributed`` the values come back as they are.
    """
    out = dict(values)
    if not (dist.is_available() and dist.is_initialized()):
        return out
    keys = sorted(k for k in out if any(f"/{kind}/" in k for kind in _metrics.ADDITIVE))
    if keys:
        buf = torch.tensor([out[k] for k in keys], dtype=torch.float64)
        dist.all_reduce(buf, op=dist.ReduceOp.SUM, group=group)
        out.update(zip(keys, buf.tolist()))
    return out
