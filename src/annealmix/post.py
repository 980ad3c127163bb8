"""Drop-in replacements for the functions of "Mixing Between Distributions While Training".

``make_schedule`` returns the post's values; ``MixtureSampler(X, Y, schedule)`` keeps
its meaning (each step yields one sample, from X with probability gamma_t, uniformly
with replacement) but is seeded, resumable, and fails clearly where the post's
crashes (an empty X or Y, fewer than two steps).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from . import _hash, _validate
from .schedules import SCHEDULES

__all__ = ["MixtureSampler", "make_schedule"]


def make_schedule(
    n_steps: int, start: float = 0.0, end: float = 1.0, kind: str = "linear"
) -> list[float]:
    """gamma_0 .. gamma_{n_steps-1} from ``start`` to ``end`` along ``kind``.

    ``linear`` and ``cosine`` are the post's formulas; any other name in
    ``annealmix.SCHEDULES`` works too.
    """
    n_steps = _validate.integer("n_steps", n_steps)
    if n_steps < 2:
        raise ValueError(f"n_steps must be >= 2 (a schedule needs two ends), got {n_steps}")
    start = _validate.unit_interval("start", start)
    end = _validate.unit_interval("end", end)
    if kind not in SCHEDULES:
        raise ValueError(f"Unknown schedule kind: {kind}; valid: {', '.join(sorted(SCHEDULES))}")
    last = n_steps - 1
    if kind == "linear":
        return [start + (end - start) * t / last for t in range(n_steps)]
    if kind == "cosine":
        return [
            start + (end - start) * (1 - math.cos(math.pi * t / last)) / 2 for t in range(n_steps)
        ]
    schedule = SCHEDULES[kind](start=start, end=end)
    return schedule(np.arange(n_steps) / last).tolist()


class MixtureSampler:
    """Yields ``(t, sample)`` for each gamma_t: from X with probability gamma_t, else Y.

    Args:
        X: a non-empty sequence (anything with ``len`` and indexing).
        Y: a non-empty sequence.
        schedule: gamma_t per step, each in [0, 1].
        seed: keys the counter-based draws; the stream is a pure function of it.
    """

    def __init__(
        self, X: Sequence[Any], Y: Sequence[Any], schedule: Sequence[float], seed: int = 0
    ):
        for name, data in (("X", X), ("Y", Y)):
            if not hasattr(data, "__len__") or not hasattr(data, "__getitem__"):
                raise TypeError(
                    f"{name} must be a sequence (len and indexing), got {type(data).__name__}"
                )
            if len(data) == 0:
                raise ValueError(
                    f"{name} is empty: a mixture needs at least one sample on each side"
                )
        self.X, self.Y = X, Y
        self.schedule = [
            _validate.unit_interval(f"schedule[{t}]", g) for t, g in enumerate(schedule)
        ]
        if not self.schedule:
            raise ValueError("schedule is empty: give at least one gamma value")
        self.seed = _validate.integer("seed", seed, minimum=0)
        self.t = 0
        self._key = _hash.key(self.seed, 0x9057)

    def __len__(self) -> int:
        return len(self.schedule)

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        while self.t < len(self.schedule):
            t = self.t
            coin, pick = _hash.hash_counter(self._key, np.array([2 * t, 2 * t + 1])) >> np.uint64(
                11
            )
            from_x = coin * 2.0**-53 < self.schedule[t]
            data = self.X if from_x else self.Y
            self.t += 1
            yield t, data[int(pick * 2.0**-53 * len(data))]

    def state_dict(self) -> dict[str, Any]:
        return {"version": 1, "t": self.t}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("version") != 1 or "t" not in state:
            raise ValueError(f"not a MixtureSampler state_dict: {state!r}")
        self.t = _validate.integer("state t", state["t"], minimum=0)
