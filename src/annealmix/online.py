"""Online mixing: weights that change during training, replayed exactly from a log.

An ``OnlinePlan`` is a plan over a scheduled mixture plus a *weight log*: entries
``(step, weights)``, each committed before its step is planned. From an entry's step
on, the schedule is tilted so that the mixture at that step is the logged weights:
``w(t) = normalise(schedule(t) * m)``, ``m = weights / schedule(step)``. Under a
constant schedule that is the logged weights themselves; under an anneal the
learned tilt rides along it (a scheduled anneal with a learned residual). A source
the schedule gives weight 0 stays at 0 (its tilt has nothing to scale).

Where a ``Plan`` reads weights thousands of steps ahead of the step it plans (its
exact counts for three or more sources look ahead), weights learned online are not
known ahead. So an online plan walks, each step reading only its own weights and
the per-source deficits carried in: in samples, each step's counts are the
deficits' largest remainders (``annealmix._counts.Carried``, O(N) per step); with
``lengths``, in tokens, sample by sample as a ``TokenPlan``. A committed entry
therefore never changes a step before it, and the plan with the log replays every
step exactly, on any world size. The bound, against the realized weights: each
source ahead of its target by less than one sample (one longest sample in tokens)
and behind by less than one sample for two sources, N - 1 for N (the others'
longest samples together, in tokens); measured under two.

The log travels in the stream's state (``"log"``, one row per update), so a
resumed run rebuilds the plan from it; the log is part of the plan's fingerprint
("phases"), so an edited log is refused. ``MixtureDataLoader.commit`` commits
updates at a step every rank and every prefetching worker agrees on.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from . import _validate
from ._counts import Carried
from .mixture import Mixture, Segment
from .plan import Plan
from .tokens import TokenPlan, _put_lengths

__all__ = ["OnlinePlan"]


class _Tilted:
    """The schedule tilted by the log (what the walk reads): ``weights_at`` and
    ``segments`` as a ``Mixture`` gives them."""

    def __init__(self, base: Mixture, log: tuple[tuple[int, np.ndarray], ...]) -> None:
        self.base, self.num_sources, self.sources = base, base.num_sources, base.sources
        self.tilts = []
        for step, weights in log:
            scheduled = base.weights_at(step)
            tilt = np.divide(weights, scheduled, out=np.zeros_like(weights), where=scheduled > 0)
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


class OnlinePlan(TokenPlan):
    """A plan whose weights can change during training, from a weight log.

    Args:
        mixture: the schedule the log tilts (a constant one for purely online mixing).
        global_batch_size: B, samples per optimizer step across all ranks.
        sizes: samples per source, by name (for sample indices and epochs).
        lengths: tokens per sample, by name, to weigh tokens (as ``TokenPlan``);
            ``None``: every sample counts one, weights are sample shares.
        seed, order: as for ``Plan``.
        log: ``(step, weights)`` entries in step order, weights by source name.

    Attributes:
        log: the entries, ``(step, weights array)``, in step order.
    """

    __slots__ = ("log",)

    def __init__(
        self,
        mixture: Mixture,
        *,
        global_batch_size: int,
        sizes: Mapping[str, int] | None = None,
        lengths: Mapping[str, Any] | None = None,
        seed: int = 0,
        order: str | Mapping[str, str] = "shuffle",
        log: Sequence[tuple[int, Any]] = (),
    ) -> None:
        if not isinstance(mixture, Mixture):
            raise TypeError(f"mixture must be an annealmix.Mixture, got {type(mixture).__name__}")
        put = object.__setattr__
        names = mixture.sources
        if lengths is not None:
            sizes = {n: a.size for n, a in zip(names, _put_lengths(self, lengths, names))}
        else:
            if sizes is None:
                raise ValueError("an OnlinePlan needs sizes={name: samples} (or lengths=)")
            put(self, "lengths", None)
            put(self, "_digest", None)
        put(self, "log", _check_log(log, mixture))
        super(TokenPlan, self).__init__(
            mixture, global_batch_size=global_batch_size, seed=seed, sizes=sizes, order=order
        )
        put(self, "mode", "online")
        walked = _Tilted(mixture, self.log)
        if lengths is None:  # samples: each step apportioned on its own, O(N)
            put(self, "_counter", Carried(walked, self.global_batch_size))
        else:  # tokens: sample by sample, as a TokenPlan
            put(self, "_counter", self._walk(walked))

    def _arguments(self) -> dict[str, Any]:
        names = self.mixture.sources
        out = super(TokenPlan, self)._arguments()
        del out["mode"]
        lengths = None if self.lengths is None else dict(zip(names, self.lengths))
        return out | {"lengths": lengths, "log": self.log_entries()}

    def __repr__(self) -> str:
        return (
            super().__repr__().replace("TokenPlan(", "OnlinePlan(", 1)[:-1]
            + f", updates={len(self.log)})"
        )

    def spec(self) -> dict[str, Any]:
        out = super().spec()
        out["mode"] = "online" if self.lengths is None else "online tokens"
        return out

    def _parts(self) -> dict[str, Any]:
        parts = super()._parts()
        parts["phases"] = {"phases": parts["phases"], "log": self.log_entries()}
        return parts

    def log_entries(self) -> list[list[Any]]:
        """The log as plain JSON: ``[[step, [weight, ...]], ...]`` in source order."""
        return [[step, weights.tolist()] for step, weights in self.log]

    def with_update(self, step: int, weights: Any) -> OnlinePlan:
        """This plan with ``weights`` taking effect at ``step`` (after every earlier
        entry). Bad weights (NaN, negative, all zero, unknown or missing sources)
        are refused with a message; this plan is unchanged either way."""
        return self.with_log([*self.log_entries(), [step, weights]])

    def with_log(self, log: Sequence[tuple[int, Any]]) -> OnlinePlan:
        """The same schedule and sources under another log (a saved state's)."""
        return OnlinePlan(self.mixture, **(self._arguments() | {"log": log}))

    @classmethod
    def from_plan(cls, plan: Plan, log: Sequence[tuple[int, Any]] = ()) -> OnlinePlan:
        """The online plan over ``plan``'s schedule, sizes, seed and orders (and its
        lengths, for a ``TokenPlan``), under ``log``: e.g. to look up the steps of
        an online run from its saved state."""
        if plan.sizes is None:
            raise ValueError("an online plan needs the plan's sizes: build it with sizes=")
        arguments = plan._arguments()
        arguments.pop("mode", None)  # an online plan walks, whatever the plan's mode
        return cls(plan.mixture, **(arguments | {"log": log}))

    def weights_at(self, step: int | np.ndarray) -> np.ndarray:
        """The realized weights: the schedule tilted by the log."""
        return self._counter.targets.mixture.weights_at(step)


def _check_log(log: Sequence[tuple[int, Any]], mixture: Mixture) -> tuple:
    if isinstance(log, (str, bytes, Mapping)) or not isinstance(log, Sequence):
        raise TypeError(f"log must be a list of (step, weights) entries, got {log!r}")
    names = mixture.sources
    out, last = [], -1
    for i, entry in enumerate(log):
        if isinstance(entry, (str, bytes)) or not isinstance(entry, Sequence) or len(entry) != 2:
            raise ValueError(f"log[{i}] must be (step, weights), got {entry!r}")
        step = _validate.integer(f"log[{i}] step", entry[0], minimum=0)
        if step <= last:
            raise ValueError(
                f"log[{i}] step {step} is not after the previous entry's step {last}; the log "
                "is append-only, one entry per step"
            )
        out.append((step, _weights(f"log[{i}] (step {step})", entry[1], names)))
        last = step
    return tuple(out)


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
