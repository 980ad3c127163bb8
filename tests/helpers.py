"""Test helpers shared across modules."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any


def assert_resume_equivalent(
    make: Callable[[], Any],
    advance: Callable[[Any], Any],
    total: int,
    seed: int = 0,
) -> None:
    """Run ``total`` advances; snapshot at a random midpoint; restore into a fresh
    object; the restored tail must equal the uninterrupted tail exactly."""
    mid = random.Random(seed).randrange(1, total)
    reference = make()
    full = [advance(reference) for _ in range(total)]
    first = make()
    for _ in range(mid):
        advance(first)
    state = first.state_dict()
    restored = make()
    restored.load_state_dict(state)
    tail = [advance(restored) for _ in range(total - mid)]
    for a, b in zip(full[mid:], tail):
        assert _same(a, b), f"resumed stream differs after midpoint {mid}"


def _same(a: Any, b: Any) -> bool:
    import numpy as np

    if hasattr(a, "sources") and hasattr(a, "draws"):
        return all(
            np.array_equal(getattr(a, f), getattr(b, f)) for f in ("sources", "draws", "indices")
        )
    return a == b


def resumed_indices(plan: Any, state: dict, world: int, start: int, stop: int):
    """Sample indices of steps [start, stop) of the global batch, put together from
    ``world`` ranks that each resume ``state`` (taken at step ``start``)."""
    import numpy as np

    from annealmix import Shard, Stream

    b = plan.global_batch_size
    got = np.empty((stop - start, b), dtype=np.int64)
    for rank in range(world):
        s = Stream(plan, Shard(global_batch_size=b, world_size=world, rank=rank))
        s.load_state_dict(state)
        cols = s.shard.columns(np.arange(start, stop))
        rows = slice(None) if isinstance(cols, slice) else np.arange(stop - start)[:, None]
        got[rows, cols] = s.take(stop - start).indices
    return got
