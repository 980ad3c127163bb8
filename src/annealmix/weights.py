"""Sampling weights derived from source sizes.

- ``proportional``: w_k proportional to size_k (every sample equally likely);
- ``temperature``: w_k proportional to size_k ** alpha (``alpha = 1 / T``), as
  multilingual models up-sample small languages: alpha = 1 is proportional, 0 is
  uniform, 0.3 is XLM-R's and mT5's choice;
- ``unimax``: UniMax (Chung et al., 2023): a budget spread uniformly over the
  sources, no source repeated more than ``max_epochs`` times, what a capped source
  cannot take going to the others.

Sizes are in any one unit (samples or tokens); the weights sum to 1 and can go
straight into a ``Mixture``.
"""

from __future__ import annotations

from collections.abc import Mapping

from . import _validate

__all__ = ["proportional", "temperature", "unimax"]


def _sizes(sizes: Mapping[str, float]) -> dict[str, float]:
    if not sizes:
        raise ValueError("sizes is empty; give at least one source's size")
    out = {}
    for name, size in sizes.items():
        value = _validate.real(f"size of source {name!r}", size)
        if value <= 0:
            raise ValueError(f"size of source {name!r} must be > 0, got {size!r}")
        out[name] = value
    return out


def _normalised(raw: Mapping[str, float]) -> dict[str, float]:
    total = sum(raw.values())
    return {name: value / total for name, value in raw.items()}


def proportional(sizes: Mapping[str, float]) -> dict[str, float]:
    """Weights proportional to size."""
    return _normalised(_sizes(sizes))


def temperature(sizes: Mapping[str, float], alpha: float) -> dict[str, float]:
    """Weights proportional to ``size ** alpha`` (alpha in [0, 1]; 1/T for temperature T)."""
    alpha = _validate.real("alpha", alpha)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1] (1: proportional, 0: uniform), got {alpha!r}")
    checked = _sizes(sizes)
    largest = max(checked.values())  # scale first: size ** alpha cannot overflow
    return _normalised({n: (s / largest) ** alpha for n, s in checked.items()})


def unimax(sizes: Mapping[str, float], budget: float, max_epochs: float) -> dict[str, float]:
    """UniMax weights for a training ``budget`` (same unit as sizes).

    Sources are visited from smallest to largest; each gets an equal share of what
    is left, capped at ``max_epochs`` passes over it.
    """
    checked = _sizes(sizes)
    budget = _validate.real("budget", budget)
    max_epochs = _validate.real("max_epochs", max_epochs)
    if budget <= 0 or max_epochs <= 0:
        raise ValueError(f"budget and max_epochs must be > 0, got {budget!r}, {max_epochs!r}")
    capacity = sum(checked.values()) * max_epochs
    if budget > capacity * (1 + 1e-12):
        raise ValueError(
            f"budget {budget:g} exceeds what max_epochs = {max_epochs:g} allows "
            f"({capacity:g}: every source {max_epochs:g} times); raise max_epochs or lower "
            "the budget"
        )
    left, alloc = budget, {}
    order = sorted(checked, key=lambda n: checked[n])
    for i, name in enumerate(order):
        alloc[name] = min(left / (len(order) - i), checked[name] * max_epochs)
        left -= alloc[name]
    return _normalised({n: alloc[n] for n in checked})
