"""Annealing schedules: curves gamma(progress) on progress in [0, 1].

A schedule says how far along a phase the mixture has moved: 0 is the phase's
starting weights, 1 its target weights. Every schedule is a small frozen dataclass,
vectorised over numpy arrays, comparable with ``==``, and buildable from a name plus
parameters (``get_schedule("cosine")``) or from the dict ``to_dict`` writes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from . import _fmath, _validate

__all__ = [
    "SCHEDULES",
    "Constant",
    "Cosine",
    "Linear",
    "PiecewiseLinear",
    "Schedule",
    "Sigmoid",
    "Step",
    "get_schedule",
    "schedule_from_dict",
]


class Schedule:
    """Base of all schedules: call with a progress in [0, 1] (float or array)."""

    name: ClassVar[str]

    def __call__(self, progress: float | np.ndarray) -> Any:
        p = np.asarray(progress, dtype=np.float64)
        if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
            bad = float(p[np.isnan(p) | (p < 0) | (p > 1)].flat[0])
            raise ValueError(f"progress must lie in [0, 1], got {bad!r}")
        gamma = self._curve(p)
        return float(gamma) if gamma.ndim == 0 else gamma

    def _curve(self, p: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def breaks(self) -> tuple[float, ...]:
        """Progress points where the curve jumps or bends (none for smooth curves):
        where a sampled check of the curve must look."""
        return ()

    def to_dict(self) -> dict[str, Any]:
        """The schedule as ``{"name": ..., **parameters}``, for config files."""
        params = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if "knots" in params:
            params["knots"] = [list(k) for k in params["knots"]]
        return {"name": self.name, **params}


@dataclass(frozen=True, kw_only=True, slots=True)
class Constant(Schedule):
    """gamma(p) = value: a mixture held at one point of the way.

    Args:
        value: the constant gamma, in [0, 1].
    """

    name: ClassVar[str] = "constant"
    value: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", _validate.unit_interval("constant value", self.value))

    def _curve(self, p: np.ndarray) -> np.ndarray:
        return np.full_like(p, self.value)


@dataclass(frozen=True, kw_only=True, slots=True)
class _Ramp(Schedule):
    start: float = 0.0
    end: float = 1.0

    def __post_init__(self) -> None:
        for field in ("start", "end"):
            value = _validate.unit_interval(f"{self.name} {field}", getattr(self, field))
            object.__setattr__(self, field, value)

    def _curve(self, p: np.ndarray) -> np.ndarray:
        shape = self._shape(p)
        # start + (end - start) * shape, written so that shape 0 and 1 land exactly.
        return self.start * (1.0 - shape) + self.end * shape

    def _shape(self, p: np.ndarray) -> np.ndarray:
        raise NotImplementedError


@dataclass(frozen=True, kw_only=True, slots=True)
class Linear(_Ramp):
    """gamma(p) = start + (end - start) * p, the post's ``linear``.

    Args:
        start: gamma at p = 0, in [0, 1].
        end: gamma at p = 1, in [0, 1].
    """

    name: ClassVar[str] = "linear"

    def _shape(self, p: np.ndarray) -> np.ndarray:
        return p


@dataclass(frozen=True, kw_only=True, slots=True)
class Cosine(_Ramp):
    """gamma(p) = start + (end - start) * (1 - cos(pi p)) / 2, the post's ``cosine``.

    Flat at both ends, steepest in the middle (pi/2 times the linear slope).

    Args:
        start: gamma at p = 0, in [0, 1].
        end: gamma at p = 1, in [0, 1].
    """

    name: ClassVar[str] = "cosine"

    def _shape(self, p: np.ndarray) -> np.ndarray:
        return (1.0 - _fmath.cos_pi(p)) * 0.5


@dataclass(frozen=True, kw_only=True, slots=True)
class Step(_Ramp):
    """The abrupt switch: gamma = start before ``at``, end from ``at`` on.

    Args:
        at: the progress of the switch, in [0, 1].
        start: gamma before the switch.
        end: gamma from the switch on.
    """

    name: ClassVar[str] = "step"
    at: float = 0.5

    def __post_init__(self) -> None:
        _Ramp.__post_init__(self)
        object.__setattr__(self, "at", _validate.unit_interval("step at", self.at))

    def _shape(self, p: np.ndarray) -> np.ndarray:
        return (p >= self.at).astype(np.float64)

    def breaks(self) -> tuple[float, ...]:
        return (self.at,)


@dataclass(frozen=True, kw_only=True, slots=True)
class Sigmoid(_Ramp):
    """A logistic ramp, rescaled so that gamma(0) = start and gamma(1) = end exactly.

    Args:
        steepness: slope of the logistic in units of 1/progress; large values
            approach ``Step(at=midpoint)``, small ones approach ``Linear``.
        midpoint: the progress at which the ramp is halfway, in [0, 1].
        start: gamma at p = 0.
        end: gamma at p = 1.
    """

    name: ClassVar[str] = "sigmoid"
    steepness: float = 12.0
    midpoint: float = 0.5

    def __post_init__(self) -> None:
        _Ramp.__post_init__(self)
        steep = _validate.real("sigmoid steepness", self.steepness)
        if not 0.0 < steep <= 500.0:
            raise ValueError(
                f"sigmoid steepness must lie in (0, 500], got {self.steepness!r}; "
                "use 'step' for an abrupt switch"
            )
        object.__setattr__(self, "steepness", steep)
        mid = _validate.unit_interval("sigmoid midpoint", self.midpoint)
        object.__setattr__(self, "midpoint", mid)

    def _shape(self, p: np.ndarray) -> np.ndarray:
        def logistic(x: np.ndarray) -> np.ndarray:
            return 1.0 / (1.0 + _fmath.exp(-self.steepness * (x - self.midpoint)))

        lo, hi = logistic(np.zeros(1))[0], logistic(np.ones(1))[0]
        return np.clip((logistic(p) - lo) / (hi - lo), 0.0, 1.0)


@dataclass(frozen=True, kw_only=True, slots=True)
class PiecewiseLinear(Schedule):
    """Straight lines between knots ``(progress, gamma)``.

    Args:
        knots: at least two ``(progress, gamma)`` pairs, progress strictly
            increasing from 0 to 1, gamma in [0, 1].
    """

    name: ClassVar[str] = "piecewise"
    knots: tuple[tuple[float, float], ...] = ((0.0, 0.0), (1.0, 1.0))

    def __post_init__(self) -> None:
        try:
            knots = tuple((float(p), float(g)) for p, g in self.knots)
        except (TypeError, ValueError):
            raise TypeError(
                f"piecewise knots must be (progress, gamma) pairs, got {self.knots!r}"
            ) from None
        if len(knots) < 2:
            raise ValueError(f"piecewise knots need at least 2 points, got {len(knots)}")
        for i, (p, g) in enumerate(knots):
            _validate.unit_interval(f"piecewise knots[{i}] progress", p)
            _validate.unit_interval(f"piecewise knots[{i}] gamma", g)
        ps = [p for p, _ in knots]
        if ps[0] != 0.0 or ps[-1] != 1.0 or any(b <= a for a, b in zip(ps, ps[1:])):
            raise ValueError(f"piecewise knot progresses must rise strictly from 0 to 1, got {ps}")
        object.__setattr__(self, "knots", knots)

    def breaks(self) -> tuple[float, ...]:
        return tuple(p for p, _ in self.knots)

    def _curve(self, p: np.ndarray) -> np.ndarray:
        # Written out rather than np.interp, whose C loop may be FMA-contracted on
        # some platforms: the plan needs the same bits on every machine.
        xp = np.array([k[0] for k in self.knots])
        fp = np.array([k[1] for k in self.knots])
        i = np.clip(np.searchsorted(xp, p, side="right") - 1, 0, len(xp) - 2)
        frac = (p - xp[i]) / (xp[i + 1] - xp[i])
        return fp[i] * (1.0 - frac) + fp[i + 1] * frac


SCHEDULES: dict[str, type[Schedule]] = {
    cls.name: cls for cls in (Constant, Linear, Cosine, Step, Sigmoid, PiecewiseLinear)
}


def get_schedule(name: str, **params: Any) -> Schedule:
    """Build a schedule from its registry name and parameters.

    >>> get_schedule("cosine", start=0.1, end=0.9)
    Cosine(start=0.1, end=0.9)
    """
    cls = SCHEDULES[_validate.choice("schedule", name, SCHEDULES)]
    valid = {f.name for f in dataclasses.fields(cls)}
    for key in params:
        if key not in valid:
            _validate.choice(f"parameter for schedule {name!r}:", key, valid)
    return cls(**params)


def schedule_from_dict(spec: dict[str, Any] | str) -> Schedule:
    """Inverse of ``Schedule.to_dict``; a bare name is accepted too."""
    if isinstance(spec, str):
        return get_schedule(spec)
    params = dict(spec)
    if "name" not in params:
        raise ValueError(f"schedule needs a 'name' (one of {', '.join(SCHEDULES)}), got {spec!r}")
    return get_schedule(params.pop("name"), **params)
