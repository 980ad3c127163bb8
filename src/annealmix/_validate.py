"""Shared argument checks: every message names the field, the value and the fix."""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np


def real(name: str, value: object) -> float:
    """Return ``value`` as a finite float, or raise naming ``name``."""
    if isinstance(value, bool) or not hasattr(value, "__float__"):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    out = float(value)  # type: ignore[arg-type]
    if not math.isfinite(out):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return out


def unit_interval(name: str, value: object) -> float:
    out = real(name, value)
    if not 0.0 <= out <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value!r}")
    return out


def integer(name: str, value: object, *, minimum: int | None = None) -> int:
    """Return ``value`` as an int (1.0 is fine, 1.5 is not), at least ``minimum``."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    try:
        out = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be an integer, got {value!r}") from None
    if out != value:
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    if minimum is not None and out < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return out


def choice(name: str, value: object, valid: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``valid``, else raise with a close match."""
    valid = sorted(valid)
    if isinstance(value, str) and value in valid:
        return value
    hint = difflib.get_close_matches(str(value), valid, n=1)
    did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
    raise ValueError(f"unknown {name} {value!r}{did_you_mean}; valid: {', '.join(valid)}")


def per_source(
    where: str,
    values: object,
    names: Sequence[str],
    *,
    allow_missing: bool = False,
    noun: str = "value",
) -> np.ndarray:
    """Values by source name (a mapping) or one per source in order (a sequence) ->
    float64 in source order; a source left out is NaN where ``allow_missing``."""
    if isinstance(values, Mapping):
        for name in values:
            choice(f"source in {where}:", name, names)
        missing = [n for n in names if n not in values]
        if missing and not allow_missing:
            raise ValueError(f"{where} has no {noun} for {missing}; give every source a {noun}")
        raw = [values.get(n, math.nan) for n in names]
    elif isinstance(values, (Sequence, np.ndarray)) and not isinstance(values, (str, bytes)):
        raw = list(values)
        if len(raw) != len(names):
            raise ValueError(
                f"{where} must map each of {list(names)} to a {noun} or list one per source, "
                f"got {values!r}"
            )
    else:
        raise ValueError(f"{where} must map each of {list(names)} to a {noun}, got {values!r}")
    try:
        return np.array([float(v) for v in raw], dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{where} must be numbers, got {values!r}") from None
