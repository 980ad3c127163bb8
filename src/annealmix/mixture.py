"""Mixtures: N named sources whose weights move between vectors in phases.

A mixture starts at ``weights`` and follows its phases in order. Phase i moves the
weights from wherever the mixture stands when it begins to its own target along its
schedule: at step ``s`` in ``[start_step, end_step]`` the weights are

    w(s) = (1 - gamma(p)) * from_i + gamma(p) * to_i,
    p = (s - start_step) / (end_step - start_step)

Outside phases the weights hold their last value. Weights are relative: every
vector is normalised to sum to 1, so ``w(s)`` is a point on the simplex at every step.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import _validate
from .schedules import Linear, Schedule, schedule_from_dict

__all__ = ["Mixture", "Phase", "Segment"]

_SMOOTHNESS_CHUNK = 1 << 16
_SMOOTHNESS_EXACT = 1 << 24


def _pair_starts(schedule: Schedule, span: int, pairs: int):
    """Chunks of steps s (phase-relative, s < ``pairs``) whose pair (s, s + 1)
    ``smoothness`` checks, for a phase of ``span`` steps of progress."""
    if pairs <= _SMOOTHNESS_EXACT:
        for lo in range(0, pairs, _SMOOTHNESS_CHUNK):
            yield np.arange(lo, min(pairs, lo + _SMOOTHNESS_CHUNK))
        return
    near = [int(p * span) + d for p in schedule.breaks() for d in (-1, 0, 1)]
    grid = np.linspace(0, pairs - 1, _SMOOTHNESS_CHUNK).astype(np.int64)
    yield np.unique(np.clip(np.concatenate([grid, near]), 0, pairs - 1))


@dataclass(frozen=True, kw_only=True, slots=True)
class Phase:
    """A step range over which the weights move to ``weights`` along ``schedule``.

    Args:
        start_step: first step of the phase (progress 0).
        end_step: last step of the phase (progress 1); greater than ``start_step``.
        weights: target weights by source name; sources left out get 0.
        schedule: the curve gamma(progress), a ``Schedule``, a registry name such
            as ``"cosine"``, or a dict from ``Schedule.to_dict``.
    """

    start_step: int
    end_step: int
    weights: Mapping[str, float]
    schedule: Schedule = field(default_factory=Linear)

    def __post_init__(self) -> None:
        start = _validate.integer("phase start_step", self.start_step, minimum=0)
        end = _validate.integer("phase end_step", self.end_step, minimum=0)
        if end <= start:
            raise ValueError(
                f"phase end_step must be greater than start_step, got {start} -> {end}; "
                "for an abrupt switch use a one-step phase or schedule 'step'"
            )
        object.__setattr__(self, "start_step", start)
        object.__setattr__(self, "end_step", end)
        if not isinstance(self.schedule, Schedule):
            object.__setattr__(self, "schedule", schedule_from_dict(self.schedule))
        if not isinstance(self.weights, Mapping):
            raise TypeError(f"phase weights must map source names to numbers, got {self.weights!r}")
        object.__setattr__(self, "weights", dict(self.weights))

    def to_dict(self) -> dict[str, Any]:
        return {
            "start_step": self.start_step,
            "end_step": self.end_step,
            "weights": dict(self.weights),
            "schedule": self.schedule.to_dict(),
        }


def _simplex(where: str, weights: Mapping[str, float], sources: Sequence[str]) -> np.ndarray:
    known = set(sources)
    unknown = [name for name in weights if name not in known]
    if unknown:
        _validate.choice(f"source in {where}:", unknown[0], sources)
    vec = np.zeros(len(sources))
    for i, name in enumerate(sources):
        value = weights.get(name, 0.0)
        if isinstance(value, (bool, str, bytes)):  # `true` or "0.5" is a slip, not a weight
            raise TypeError(f"{where} weight for source {name!r} must be a number, got {value!r}")
        try:
            vec[i] = float(value)
        except (TypeError, ValueError):
            raise TypeError(
                f"{where} weight for source {name!r} must be a number, got {value!r}"
            ) from None
        if not math.isfinite(vec[i]) or vec[i] < 0:
            raise ValueError(
                f"{where} weight for source {name!r} must be finite and >= 0, got {value!r}"
            )
    if vec.max() <= 0:
        raise ValueError(
            f"{where} weights are all zero; give at least one source a positive weight"
        )
    vec /= vec.max()  # first, so that a sum of huge weights (1e308 each) cannot overflow
    return vec / vec.sum()


@dataclass(frozen=True, kw_only=True, slots=True)
class Segment:
    """A maximal step range over which the weights either hold or move.

    Args:
        start: first step of the segment.
        stop: the step after the last one; ``None`` for the open segment that holds
            the final weights for ever.
        weights: the held weights (shape ``(num_sources,)``, summing to 1), or
            ``None`` where a phase moves them.
        phase: the index of the moving phase, or ``None`` for a held segment.
    """

    start: int
    stop: int | None
    weights: np.ndarray | None
    phase: int | None


@dataclass(frozen=True, kw_only=True, slots=True)
class Mixture:
    """Mixture weights w(step) over named sources.

    Args:
        weights: the starting weights by source name; its keys, in order, are the
            sources of the mixture (their ids are their positions).
        phases: phases in step order; a phase may begin on the step where the
            previous one ends, never earlier.

    Example:
        A constant pre-training mix that anneals into a high-quality mix over the
        last 20% of 10,000 steps:

        >>> mix = Mixture(
        ...     weights={"web": 0.8, "code": 0.15, "math": 0.05},
        ...     phases=[Phase(start_step=8000, end_step=9999,
        ...                   weights={"web": 0.3, "code": 0.4, "math": 0.3},
        ...                   schedule="cosine")],
        ... )
        >>> mix.weights_at(9999).round(2).tolist()
        [0.3, 0.4, 0.3]
    """

    weights: Mapping[str, float]
    phases: Sequence[Phase] = ()
    _starts: np.ndarray = field(init=False, repr=False, compare=False)
    _targets: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.weights, Mapping) or not self.weights:
            raise ValueError(
                f"mixture weights must map at least one source name to a weight, "
                f"got {self.weights!r}"
            )
        for name in self.weights:
            if not isinstance(name, str) or not name:
                raise TypeError(f"source names must be non-empty strings, got {name!r}")
        object.__setattr__(self, "weights", dict(self.weights))
        phases = tuple(p if isinstance(p, Phase) else Phase(**p) for p in self.phases)
        object.__setattr__(self, "phases", phases)
        for i, (a, b) in enumerate(zip(phases, phases[1:])):
            if b.start_step < a.end_step:
                raise ValueError(
                    f"phases[{i + 1}] starts at step {b.start_step}, before phases[{i}] "
                    f"ends at step {a.end_step}; order phases by step without overlap"
                )
        sources = self.sources
        start = _simplex("initial", self.weights, sources)
        starts, targets = [], []
        for i, phase in enumerate(phases):
            target = _simplex(f"phases[{i}]", phase.weights, sources)
            starts.append(start)
            targets.append(target)
            g1 = phase.schedule(1.0)
            start = (1.0 - g1) * start + g1 * target
        # Row i: the weights phase i starts from; row -1: where the mixture ends up.
        object.__setattr__(self, "_starts", np.array([*starts, start]).reshape(-1, len(sources)))
        object.__setattr__(self, "_targets", np.array(targets).reshape(-1, len(sources)))

    @property
    def sources(self) -> tuple[str, ...]:
        """Source names, in id order."""
        return tuple(self.weights)

    @property
    def num_sources(self) -> int:
        return len(self.weights)

    def weights_at(self, step: int | np.ndarray) -> np.ndarray:
        """w(step): shape (num_sources,) for one step, (len(step), num_sources) for many."""
        steps = np.asarray(step)
        if steps.dtype.kind not in "iu" or (steps < 0).any():
            raise ValueError(f"step must be an integer >= 0 (or an array of them), got {step!r}")
        flat = steps.reshape(-1).astype(np.int64)
        out = np.broadcast_to(self._starts[0], (flat.size, self.num_sources)).copy()
        for i, phase in enumerate(self.phases):
            within = (flat >= phase.start_step) & (flat <= phase.end_step)
            out[flat > phase.end_step] = self._starts[i + 1]
            if within.any():
                gamma = self.gamma(i, flat[within])[:, None]
                out[within] = (1.0 - gamma) * self._starts[i] + gamma * self._targets[i]
        return out.reshape(*steps.shape, self.num_sources)

    def gamma(self, phase: int, steps: np.ndarray) -> np.ndarray:
        """The schedule's value at ``steps`` (int64, inside phase ``phase``): how far
        the weights have moved from the phase's start weights to its target, 0 to 1."""
        p = self.phases[phase]
        return p.schedule((steps - p.start_step) / (p.end_step - p.start_step))

    def ends(self, phase: int) -> tuple[np.ndarray, np.ndarray]:
        """The weights phase ``phase`` moves from and towards: ``w = (1 - g) a + g b``."""
        return self._starts[phase], self._targets[phase]

    def segments(self) -> tuple[Segment, ...]:
        """The steps split into held and moving segments, in order, covering every step.

        A phase that ends exactly where the next begins hands over without a held
        segment between them; the last segment is open and holds the final weights.
        """
        out, cursor = [], 0
        for i, phase in enumerate(self.phases):
            if phase.start_step > cursor:
                out.append(
                    Segment(
                        start=cursor, stop=phase.start_step, weights=self._starts[i], phase=None
                    )
                )
            nxt = self.phases[i + 1].start_step if i + 1 < len(self.phases) else None
            cursor = phase.end_step + 1 if nxt is None else min(phase.end_step + 1, nxt)
            out.append(Segment(start=phase.start_step, stop=cursor, weights=None, phase=i))
        out.append(Segment(start=cursor, stop=None, weights=self._starts[-1], phase=None))
        return tuple(out)

    def smoothness(self) -> float:
        """The post's smoothness figure: the largest total-variation distance
        ``TV(w(s), w(s+1)) = 1/2 * sum_k |w_k(s+1) - w_k(s)|`` over all consecutive
        steps. Inside phase i it equals ``max_s |gamma(s+1) - gamma(s)| * TV(from_i, to_i)``;
        the steps into and out of each phase are checked directly. A phase of more
        than ``_SMOOTHNESS_EXACT`` steps is checked at ``_SMOOTHNESS_CHUNK`` evenly spread
        step pairs plus the pairs around its schedule's breakpoints (a step's switch,
        piecewise knots): exact for those schedules, and for smooth ones off by under
        their curvature over one grid spacing.
        """
        worst = 0.0
        for i, phase in enumerate(self.phases):
            tv = 0.5 * np.abs(self._targets[i] - self._starts[i]).sum()
            span = phase.end_step - phase.start_step
            # A phase that ends on the step the next one begins hands that step over:
            # its own steps stop one earlier, and the pair across is checked directly.
            nxt = self.phases[i + 1].start_step if i + 1 < len(self.phases) else None
            last = phase.end_step if nxt is None else min(phase.end_step, nxt - 1)
            for lo in _pair_starts(phase.schedule, span, last - phase.start_step):
                gamma = phase.schedule(np.stack([lo, lo + 1]) / span)
                worst = max(worst, float(np.abs(gamma[1] - gamma[0]).max()) * tv)
            for a in (phase.start_step - 1, last):
                if a >= 0:
                    pair = self.weights_at(np.array([a, a + 1]))
                    worst = max(worst, 0.5 * float(np.abs(pair[1] - pair[0]).sum()))
        return worst

    def to_dict(self) -> dict[str, Any]:
        return {"weights": dict(self.weights), "phases": [p.to_dict() for p in self.phases]}

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> Mixture:
        return cls(weights=spec["weights"], phases=[Phase(**p) for p in spec.get("phases", ())])
