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
