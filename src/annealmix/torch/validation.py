"""Per-source validation in a plain PyTorch loop: each source's held-out samples, tagged.

::

    val = validation_loader({"code": code_val, "prose": prose_val}, plan, batch_size=32)
    losses = SourceLosses(plan.mixture.sources)
    for batch in val:  # {"source": ids, "index": indices, "sample": the stacked samples}
        losses.add(per_sample_loss(model, batch["sample"]), batch["source"])
    losses.reduce()  # each source's mean held-out loss, summed exactly over the ranks
    log(losses.metrics("val"))  # val/loss/code, val/loss/prose

Batches look like ``MixtureDataLoader``'s, so the loss code of training serves; a packed
source's windows come from that source alone, so its id survives packing. Every rank
reads the same batches (validation is small; split them with ``shard=`` where it is not).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from .. import _validate
from ..plan import Plan
from .data import MixedDataset

__all__ = ["validation_loader"]


def validation_loader(
    sources: Mapping[str, Any], plan: Plan, *, batch_size: int, per_source: int | None = None,
    shard: tuple[int, int] = (0, 1), **loader_kwargs: Any,
) -> DataLoader:  # fmt: skip
    """Samples ``0, 1, ...`` of each source named in ``sources`` (its first
    ``per_source``; all by default), source after source in the plan's order,
    ``batch_size`` at a time, with their source ids.

    Args:
        sources: held-out sources by name (some or all of the plan's; random-access).
        plan: the plan, for the source ids.
        batch_size: samples per batch.
        per_source: at most this many samples of each source.
        shard: ``(rank, world_size)``: this rank reads every ``world_size``-th batch.
        loader_kwargs: ``torch.utils.data.DataLoader``'s (``num_workers``, ...).
    """
    names = plan.mixture.sources
    for name in sources:
        _validate.choice("source in sources:", name, names)
    if not sources:
        raise ValueError("sources is empty; give at least one source's held-out samples")
    batch_size = _validate.integer("batch_size", batch_size, minimum=1)
    if per_source is not None:
        per_source = _validate.integer("per_source", per_source, minimum=1)
    rank, world = (_validate.integer(f, v, minimum=m) for f, v, m in
                   zip(("rank", "world_size"), shard, (0, 1)))  # fmt: skip
    if rank >= world:
        raise ValueError(f"shard rank {rank} must be below its world size {world}")
    ordered = [sources.get(n, []) for n in names]  # a source without held-out rows: none
    keys = [np.stack([np.full(m, k), np.arange(m), np.zeros(m, dtype=np.int64)], axis=1)
            for k, s in enumerate(ordered)
            if (m := len(s) if per_source is None else min(per_source, len(s)))]  # fmt: skip
    rows = np.concatenate(keys) if keys else np.zeros((0, 3), dtype=np.int64)
    batches = [rows[a : a + batch_size] for a in range(0, len(rows), batch_size)][rank::world]
    return DataLoader(MixedDataset(ordered, batched=True), batch_sampler=batches,
                      collate_fn=_tensors, **loader_kwargs)  # fmt: skip


def _tensors(batch: dict[str, Any]) -> dict[str, Any]:
    """Source ids and indices as tensors, as ``MixtureDataLoader`` hands them."""
    return {**batch, "source": torch.from_numpy(batch["source"]),
            "index": torch.from_numpy(batch["index"])}  # fmt: skip
