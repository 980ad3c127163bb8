"""Where this process sits among data-parallel ranks, and summing metrics over them."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist

from .. import metrics as _metrics
from ..shard import Shard

__all__ = ["all_reduce_metrics", "resolve_local_rank", "resolve_rank", "resolve_shard"]

# (rank, world size, local rank) variables, in the order launchers are tried, as ezpz
# does: torchrun (and ezpz itself), MPICH/Intel MPI (PMI; the local rank from MPICH,
# or from Cray PALS on Aurora and Polaris, which sets PMI_RANK but not
# MPI_LOCALRANKID), PALS's own numbering, Open MPI, SLURM.
_ENV = (
    ("RANK", "WORLD_SIZE", ("LOCAL_RANK",)),
    ("PMI_RANK", "PMI_SIZE", ("MPI_LOCALRANKID", "PALS_LOCAL_RANKID", "PMI_LOCAL_RANK")),
    ("PALS_RANKID", "PMI_SIZE", ("PALS_LOCAL_RANKID", "PMI_LOCAL_RANK")),
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", ("OMPI_COMM_WORLD_LOCAL_RANK",)),
    ("SLURM_PROCID", "SLURM_NTASKS", ("SLURM_LOCALID",)),
)
_SHARD = "pass shard=annealmix.Shard(global_batch_size=..., rank=..., world_size=...)"
_FIX = f"fix the launcher or {_SHARD}"


def _integer(var: str) -> int:
    try:
        return int(os.environ[var])
    except ValueError:
        value = os.environ[var]
        raise ValueError(f"environment {var}={value!r} is not an integer; {_FIX}") from None


def _launcher() -> tuple[int, int, int | None, str] | None:
    """(rank, world size, local rank or None, the variables read) from the first
    launcher whose variables are set. Warns when another launcher's world is larger:
    the one read then misses processes (a leftover ``RANK=0 WORLD_SIZE=1`` beside an
    MPI world). A larger one read is normal (torchrun started by srun or mpirun)."""
    found = [v for v in _ENV if v[0] in os.environ and v[1] in os.environ]
    if not found:
        return None
    (rank_var, size_var, local_vars), others = found[0], found[1:]
    rank, world = _integer(rank_var), _integer(size_var)
    if not 0 <= rank < world:
        raise ValueError(
            f"environment {rank_var}={rank} is not a rank of {size_var}={world}; {_FIX}"
        )
    for other_rank, other_size, _ in others:
        wider = os.environ[other_size]
        if wider.isdigit() and int(wider) > world:
            warnings.warn(
                f"launcher variables disagree: {rank_var}={rank} {size_var}={world} but "
                f"{other_rank}={os.environ[other_rank]} {other_size}={wider}; using the first, "
                f"which misses processes. Unset the stale ones, or {_SHARD}",
                stacklevel=3,
            )
            break
    local_var = next((v for v in local_vars if v in os.environ), None)
    local = None if local_var is None else _integer(local_var)
    return rank, world, local, f"{rank_var}={rank} {size_var}={world}"


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
    ``PALS_LOCAL_RANKID``, ``PMI_LOCAL_RANK``, ``OMPI_COMM_WORLD_LOCAL_RANK``,
    ``SLURM_LOCALID``); 0 alone. A launcher that gives a world of several ranks but
    no local rank is refused: every rank would take device 0."""
    found = _launcher()
    if found is None:
        return 0
    rank, world, local, read = found
    if local is None:
        if world == 1:
            return 0
        tried = [v for _, _, local_vars in _ENV for v in local_vars]
        raise ValueError(
            f"the launcher sets {read} but no local rank ({', '.join(dict.fromkeys(tried))}): "
            "every rank would take device 0; export LOCAL_RANK (the rank on its node) in the "
            "job script"
        )
    return local


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
