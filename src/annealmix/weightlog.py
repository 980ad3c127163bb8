"""An online plan's weight log: entries ``(step, weights)``, and the schedule they tilt.

From an entry's step on, the schedule is tilted so that the mixture at that step is
the logged weights: ``w(t) = normalise(schedule(t) * m)``, ``m = weights /
schedule(step)``. Under a constant schedule that is the logged weights themselves;
under an anneal the learned tilt rides along it. A source the schedule holds at 0
at an entry's step keeps its scheduled weight (tilt 1): when the schedule raises it
later, it enters as scheduled. An entry cannot give it weight there (nothing to
scale): the log refuses that, naming the source.
"""

from __future__ import annotations

import bisect
import hashlib
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from . import _validate
from .mixture import Mixture, Segment

__all__ = ["Tilted", "WeightLog"]


class Tilted:
    """The schedule tilted by the log (what the walk reads): ``weights_at`` and
    ``segments`` as a ``Mixture`` gives them."""

    def __init__(self, base: Mixture, log: tuple[tuple[int, np.ndarray], ...]) -> None:
        self.base, self.num_sources, self.sources = base, base.num_sources, base.sources
        self.tilts = []
        for step, weights in log:
            scheduled = base.weights_at(step)
            tilt = np.divide(weights, scheduled, out=np.ones_like(weights), where=scheduled > 0)
            self.tilts.append((step, tilt))

    def _tilt(self, weights: np.ndarray, tilt: np.ndarray) -> np.ndarray:
        tilted = weights * tilt
        total = tilted.sum(axis=-1, keepdims=True)
        return np.where(total > 0, tilted / np.where(total > 0, total, 1.0), weights)

    def weights_at(self, step: int | np.ndarray) -> np.ndarray:
        steps = np.asarray(step)
        out = self.base.weights_at(steps)
        if not self.tilts:
            return out
        cuts = np.array([s for s, _ in self.tilts])
        which = np.searchsorted(cuts, steps, side="right") - 1  # the entry in force, or -1
        tilted = which >= 0
        if tilted.any():
            table = np.stack([t for _, t in self.tilts])
            out[tilted] = self._tilt(out[tilted], table[which[tilted]])
        return out

    def segments(self) -> tuple[Segment, ...]:
        cuts = [s for s, _ in self.tilts]
        out = []
        for seg in self.base.segments():
            lo = bisect.bisect_right(cuts, seg.start)
            hi = len(cuts) if seg.stop is None else bisect.bisect_left(cuts, seg.stop)
            edges = [seg.start, *cuts[lo:hi]]
            for a, b in zip(edges, [*edges[1:], seg.stop]):
                weights = seg.weights
                active = bisect.bisect_right(cuts, a)  # entries at or before a
                if weights is not None and active:
                    weights = self._tilt(weights, self.tilts[active - 1][1])
                out.append(Segment(start=a, stop=b, weights=weights, phase=seg.phase))
        return tuple(out)


class WeightLog:
    """An online run's weight log: ``(step, weights)`` entries in step order, each
    weights array on the simplex (read-only), appended one at a time.

    Args:
        sources: the plan's source names, in id order (weights are given by name
            or in this order).
        entries: entries to start from (a saved state's ``"log"``), checked.
        schedule: the plan's ``Mixture``: an entry that gives weight to a source it
            holds at 0 at the entry's step is refused (``Plan.weight_log`` gives it).

    Attributes:
        entries: the entries, ``(step, weights array)``.
        digest: a hash of the entries, extended by each ``append``: equal digests,
            equal logs.
    """

    __slots__ = ("sources", "entries", "digest", "schedule")

    def __init__(
        self, sources: Sequence[str], entries: Sequence[tuple[int, Any]] = (), *,
        schedule: Mixture | None = None,
    ) -> None:  # fmt: skip
        if isinstance(entries, WeightLog):
            entries = entries.to_list()
        if isinstance(entries, (str, bytes, Mapping)) or not isinstance(entries, Sequence):
            raise TypeError(f"log must be a list of (step, weights) entries, got {entries!r}")
        self.sources, self.schedule = tuple(sources), schedule
        self.entries: tuple[tuple[int, np.ndarray], ...] = ()
        self.digest = ""
        for i, entry in enumerate(entries):
            pair = isinstance(entry, Sequence) and not isinstance(entry, (str, bytes))
            if not pair or len(entry) != 2:
                raise ValueError(f"log[{i}] must be (step, weights), got {entry!r}")
            self.append(*entry)

    def append(self, step: int, weights: Any, *, drop_unscheduled: bool = False) -> None:
        """``weights`` in force from ``step``, after every earlier entry's step. Bad
        weights (NaN, negative, all zero, unknown or missing sources) or a step not
        after the last are refused with a message, the log unchanged; so is weight
        for a source the schedule holds at 0 at ``step``, unless ``drop_unscheduled``:
        then it is dropped (the others renormalised) with a warning naming it."""
        i = len(self.entries)
        step = _validate.integer(f"log[{i}] step", step, minimum=0)
        last = self.entries[-1][0] if self.entries else -1
        if step <= last:
            raise ValueError(
                f"log[{i}] step {step} is not after the previous entry's step {last}; the log "
                "is append-only, one entry per step"
            )
        vec = _weights(f"log[{i}] (step {step})", weights, self.sources)
        if self.schedule is not None:
            vec = _scheduled(step, vec, self.schedule, drop_unscheduled)
        digest = hashlib.blake2b(self.digest.encode(), digest_size=8)
        digest.update(np.int64(step).tobytes())
        digest.update(vec.tobytes())
        self.entries += ((step, vec),)
        self.digest = digest.hexdigest()

    def __len__(self) -> int:
        return len(self.entries)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WeightLog) and other.digest == self.digest

    def __repr__(self) -> str:
        return f"WeightLog({self.to_list()!r})"

    def copy(self) -> WeightLog:
        """A log with the same entries that appends on its own."""
        out = WeightLog(self.sources, schedule=self.schedule)
        out.entries, out.digest = self.entries, self.digest
        return out

    def to_list(self) -> list[list[Any]]:
        """Plain JSON: ``[[step, [weight, ...]], ...]`` in source order."""
        return [[step, weights.tolist()] for step, weights in self.entries]


def _weights(where: str, weights: Any, names: tuple[str, ...]) -> np.ndarray:
    """Weights by name (or in source order) -> a read-only array on the simplex."""
    vec = _validate.per_source(where, weights, names, noun="weight")
    bad = [n for n, v in zip(names, vec) if not np.isfinite(v) or v < 0]
    if bad:
        raise ValueError(
            f"{where}: weights must be finite and >= 0, got "
            f"{ {n: float(v) for n, v in zip(names, vec) if n in bad} }; the previous weights "
            "stay in force"
        )
    if vec.sum() <= 0:
        raise ValueError(f"{where}: weights are all zero; the previous weights stay in force")
    if abs(vec.sum() - 1.0) > 1e-12:  # normalised once: a saved log reloads bit for bit
        vec = vec / vec.sum()
    vec.flags.writeable = False
    return vec


def _scheduled(step: int, weights: np.ndarray, schedule: Mixture, drop: bool) -> np.ndarray:
    """``weights``, refusing (or, with ``drop``, dropping with a warning) weight for a
    source ``schedule`` holds at 0 at ``step``: a tilt scales the schedule, so it
    would be 0 there (and the others renormalised) without a word."""
    held = (schedule.weights_at(step) == 0) & (weights > 0)
    if not held.any():
        return weights
    bad = {n: float(w) for n, w, h in zip(schedule.sources, weights, held) if h}
    if not drop or held.sum() == (weights > 0).sum():
        raise ValueError(
            f"weights {bad} at step {step}: the schedule holds {sorted(bad)} at 0 there, and "
            "an update scales the schedule, which cannot give them weight; give them weight "
            "0 (they follow the schedule when it raises them), or a schedule (Mixture "
            "phases) that gives them weight from that step; the previous weights stay in force"
        )
    warnings.warn(
        f"dropped the committed weight of {sorted(bad)}: the schedule holds them at 0 where "
        "the update takes effect (they enter when the schedule raises them); the other "
        "weights are renormalised",
        stacklevel=4,
    )
    kept = np.where(held, 0.0, weights)
    kept = kept / kept.sum()
    kept.flags.writeable = False
    return kept
