"""Global batch sizes that change over training: Megatron's ``--rampup-batch-size``,
or any batch size that steps up (or down) at given optimizer steps.

A plan counts in steps of one size. Under a ramp that size is the ramp's ``unit``,
the greatest common divisor of its batch sizes: optimizer step ``t`` of ``B(t)``
samples is ``B(t) / unit`` consecutive *plan steps*, each following the mixture's
weights at ``t`` (``Stretched``). The plan's exactness per plan step is then
exactness at every optimizer step (each ends on a plan-step boundary): every
source's count after step ``t`` is within one sample of ``sum_{s <= t} B(s) w(s)``.
Global sample ``i`` is position ``i % unit`` of plan step ``i // unit``, so
Megatron's samplers, which read samples in order and only take more micro-batches
per step as the batch grows, need nothing else; a loop that steps the optimizer
itself takes ``sizes.steps_in(t)`` plan steps (gradient accumulation) for step ``t``.

The price is planning in smaller steps: under a ramp from 32 to 1,536 samples, a
plan of 16 sources lays out steps 3 times slower than without it and a fresh
process finds step 10^6 in 7.4 s against 0.6 s; a ramp from 512 costs nothing
(``benchmarks/bench_ramp.py``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from . import _validate
from .mixture import Mixture, Phase, Segment

__all__ = ["BatchSizes", "Stretched", "planned", "ramp_of"]


class BatchSizes:
    """A global batch size per optimizer step, constant between changes.

    Args:
        changes: ``(first step, global batch size)`` pairs, steps increasing, the
            first at step 0; the last size holds for the rest of training.

    Attributes:
        unit: samples per plan step, the sizes' greatest common divisor.
        starts, sizes: the changes as arrays (a size equal to the one before is merged).
    """

    __slots__ = ("starts", "sizes", "unit", "_per", "_plan_starts")

    def __init__(self, changes: Sequence[tuple[int, int]]) -> None:
        pairs = [tuple(c) for c in changes]
        if not pairs:
            raise ValueError("batch sizes need at least one (first step, size) pair, at step 0")
        steps, sizes = [], []
        for i, pair in enumerate(pairs):
            if len(pair) != 2:
                raise ValueError(f"batch sizes[{i}] must be (first step, size), got {pair!r}")
            step = _validate.integer(f"batch sizes[{i}] first step", pair[0], minimum=0)
            size = _validate.integer(f"batch sizes[{i}] size", pair[1], minimum=1)
            if i == 0 and step != 0:
                raise ValueError(
                    f"batch sizes[0] starts at step {step}; the first size must start at step 0"
                )
            if steps and step <= steps[-1]:
                raise ValueError(
                    f"batch sizes[{i}] starts at step {step}, not after step {steps[-1]} of "
                    f"batch sizes[{i - 1}]; list the changes in step order"
                )
            if not sizes or size != sizes[-1]:
                steps.append(step)
                sizes.append(size)
        put = object.__setattr__
        put(self, "starts", np.array(steps, dtype=np.int64))
        put(self, "sizes", np.array(sizes, dtype=np.int64))
        put(self, "unit", math.gcd(*sizes))
        put(self, "_per", self.sizes // self.unit)
        runs = np.diff(self.starts) * self._per[:-1]
        put(self, "_plan_starts", np.concatenate([[0], np.cumsum(runs)]).astype(np.int64))

    @classmethod
    def megatron(cls, start: int, increment: int, samples: int,
                 global_batch_size: int) -> BatchSizes:  # fmt: skip
        """Megatron-LM's ``--rampup-batch-size start increment samples`` with
        ``--global-batch-size``: the batch grows by ``increment`` every
        ``samples / increments`` samples consumed, from ``start`` to
        ``global_batch_size``, which it keeps once ``samples`` are consumed. Step by
        step the sizes megatron-core's ``RampupBatchsizeNumMicroBatchesCalculator``
        gives (it is tested against it)."""
        start = _validate.integer("rampup start", start, minimum=1)
        increment = _validate.integer("rampup increment", increment, minimum=1)
        samples = _validate.integer("rampup samples", samples, minimum=1)
        final = _validate.integer("global_batch_size", global_batch_size, minimum=1)
        if final <= start or (final - start) % increment:
            raise ValueError(
                f"a ramp from {start} by {increment} never lands on global_batch_size "
                f"{final}: global_batch_size - start must be a positive multiple of the "
                "increment (as Megatron requires); with no ramp, give the batch size alone"
            )
        per = samples / ((final - start) // increment)

        def size(consumed: int) -> int:  # Megatron's update(consumed_samples)
            return final if consumed > samples else start + int(consumed / per) * increment

        changes, consumed, step = [], 0, 0
        while True:
            b = size(consumed)
            changes.append((step, b))
            if b == final:
                return cls(changes)
            # the first count of samples past ``consumed`` at which the size moves on: the
            # next increment's (found by Megatron's own float division) or the ramp's end
            stage = int(consumed / per)
            x = max(consumed + 1, int((stage + 1) * per) - 2)
            while int(x / per) <= stage:
                x += 1
            taken = -(-(min(x, samples + 1) - consumed) // b)
            consumed, step = consumed + taken * b, step + taken

    # -- conversions ----------------------------------------------------------------

    def size_at(self, step: int | np.ndarray) -> int | np.ndarray:
        """The global batch size of optimizer step ``step`` (or of each of an array)."""
        return self._map(step, lambda i, s: self.sizes[i])

    def steps_in(self, step: int | np.ndarray) -> int | np.ndarray:
        """Plan steps in optimizer step ``step``: ``size_at(step) / unit``."""
        return self._map(step, lambda i, s: self._per[i])

    def plan_steps(self, step: int | np.ndarray) -> int | np.ndarray:
        """Plan steps before optimizer step ``step`` (where its first one stands)."""
        return self._map(
            step, lambda i, s: self._plan_starts[i] + (s - self.starts[i]) * self._per[i]
        )

    def samples_before(self, step: int | np.ndarray) -> int | np.ndarray:
        """Samples of optimizer steps [0, step): Megatron's ``consumed_samples`` there."""
        return self.plan_steps(step) * self.unit

    def step_of(self, plan_step: int | np.ndarray) -> int | np.ndarray:
        """The optimizer step that plan step ``plan_step`` belongs to."""
        at = np.asarray(plan_step, dtype=np.int64)
        if (at < 0).any():
            raise ValueError(f"plan step must be >= 0, got {plan_step!r}")
        i = np.searchsorted(self._plan_starts, at, side="right") - 1
        out = self.starts[i] + (at - self._plan_starts[i]) // self._per[i]
        return int(out) if out.ndim == 0 else out

    def step_of_sample(self, index: int | np.ndarray) -> int | np.ndarray:
        """The optimizer step that global sample ``index`` is read in."""
        return self.step_of(np.asarray(index, dtype=np.int64) // self.unit)

    def _map(self, step, f):
        at = np.asarray(step, dtype=np.int64)
        if (at < 0).any():
            raise ValueError(f"step must be >= 0, got {step!r}")
        i = np.searchsorted(self.starts, at, side="right") - 1
        out = f(i, at)
        return int(out) if np.ndim(out) == 0 else out

    # -- values ---------------------------------------------------------------------

    def stretch(self, mixture: Mixture) -> Stretched:
        """``mixture`` (in optimizer steps) over plan steps: what a plan counts."""
        return Stretched(mixture, self)

    def spec(self) -> dict[str, Any]:
        """What a plan's fingerprint names (its ``global_batch_size`` part)."""
        return {"unit": self.unit, "sizes": self.to_list()}

    def to_list(self) -> list[list[int]]:
        return [[int(a), int(b)] for a, b in zip(self.starts, self.sizes)]

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("BatchSizes is immutable")

    def __reduce__(self):
        return BatchSizes, (self.to_list(),)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BatchSizes) and other.to_list() == self.to_list()

    def __hash__(self) -> int:
        return hash(tuple(map(tuple, self.to_list())))

    def __repr__(self) -> str:
        shown = [f"({a}, {b})" for a, b in self.to_list()]
        if len(shown) > 6:
            shown = [*shown[:3], f"... {len(shown) - 4} more", shown[-1]]
        return f"BatchSizes([{', '.join(shown)}], unit={self.unit})"


class Stretched:
    """A mixture over plan steps: plan step ``u`` takes the weights of the optimizer
    step it belongs to (``sizes.step_of(u)``). Held and moving segments map to plan
    steps as they are, so the counters' closed forms hold; ``weights_at``,
    ``gamma``, ``ends``, ``segments`` and ``phases`` read as a ``Mixture``'s do."""

    __slots__ = ("base", "batch_sizes", "phases")

    def __init__(self, base: Mixture, batch_sizes: BatchSizes) -> None:
        if not isinstance(base, Mixture):
            raise TypeError(f"a ramp stretches an annealmix.Mixture, got {type(base).__name__}")
        put = object.__setattr__
        put(self, "base", base)
        put(self, "batch_sizes", batch_sizes)
        first = batch_sizes.plan_steps  # phases in plan steps, for plots and corpora
        put(self, "phases", tuple(
            Phase(start_step=first(p.start_step), end_step=first(p.end_step + 1) - 1,
                  weights=p.weights, schedule=p.schedule)
            for p in base.phases
        ))  # fmt: skip

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a Stretched mixture is immutable")

    def __reduce__(self):
        return Stretched, (self.base, self.batch_sizes)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Stretched) and other.base == self.base
                and other.batch_sizes == self.batch_sizes)  # fmt: skip

    def __hash__(self) -> int:
        return hash((repr(self.base.to_dict()), self.batch_sizes))

    @property
    def sources(self) -> tuple[str, ...]:
        return self.base.sources

    @property
    def num_sources(self) -> int:
        return self.base.num_sources

    @property
    def weights(self) -> Mapping[str, float]:
        return self.base.weights

    def weights_at(self, step: int | np.ndarray) -> np.ndarray:
        """w at plan step(s) ``step``: the weights of their optimizer steps."""
        return self.base.weights_at(self.batch_sizes.step_of(step))

    def gamma(self, phase: int, steps: np.ndarray) -> np.ndarray:
        return self.base.gamma(phase, np.asarray(self.batch_sizes.step_of(steps)))

    def ends(self, phase: int) -> tuple[np.ndarray, np.ndarray]:
        return self.base.ends(phase)

    def segments(self) -> tuple[Segment, ...]:
        first = self.batch_sizes.plan_steps
        return tuple(
            Segment(start=first(s.start), stop=None if s.stop is None else first(s.stop),
                    weights=s.weights, phase=s.phase)
            for s in self.base.segments()
        )  # fmt: skip

    def smoothness(self) -> float:
        """The base's: plan steps of one optimizer step share its weights."""
        return self.base.smoothness()

    def to_dict(self) -> dict[str, Any]:
        """The base mixture's (a plan names the ramp with its batch size)."""
        return self.base.to_dict()


def planned(mixture: Mixture | Stretched, global_batch_size: int | BatchSizes):
    """What a ``Plan`` counts: (the mixture over plan steps, samples per plan step)."""
    if isinstance(global_batch_size, BatchSizes):
        base = mixture.base if isinstance(mixture, Stretched) else mixture
        return global_batch_size.stretch(base), global_batch_size.unit
    if isinstance(mixture, Stretched) and global_batch_size != mixture.batch_sizes.unit:
        raise ValueError(
            f"a mixture stretched over a ramp counts in plan steps of its unit, "
            f"{mixture.batch_sizes.unit} samples, not global_batch_size={global_batch_size}: "
            "pass the BatchSizes itself as global_batch_size"
        )
    return mixture, global_batch_size


def ramp_of(rampup: Any, sizes: Any, final: int) -> BatchSizes | None:
    """A config's ramp: Megatron's ``rampup_batch_size`` (start, increment, samples)
    up to ``final``, or ``batch_sizes`` ending at ``final``; one at a time."""
    if rampup is not None and sizes is not None:
        raise ValueError("give rampup_batch_size or batch_sizes, not both")
    if rampup is not None:
        if not isinstance(rampup, (list, tuple)) or len(rampup) != 3:
            raise ValueError(
                f"rampup_batch_size must be [start, increment, samples] (Megatron's "
                f"--rampup-batch-size), got {rampup!r}"
            )
        return _named("rampup_batch_size", rampup, lambda: BatchSizes.megatron(*rampup, final))
    if sizes is None:
        return None
    if not isinstance(sizes, (list, tuple)):
        raise ValueError(f"batch_sizes must be a list of [first step, size], got {sizes!r}")
    ramp = _named("batch_sizes", sizes, lambda: BatchSizes(sizes))
    if ramp.sizes[-1] != final:
        raise ValueError(
            f"batch_sizes ends at {ramp.sizes[-1]} samples a step, global_batch_size is "
            f"{final}: make global_batch_size the size the ramp ends at"
        )
    return ramp


def _named(field: str, value: Any, build):
    """``build()``, its error prefixed with the config's field and value."""
    try:
        return build()
    except (TypeError, ValueError) as err:
        raise type(err)(f"{field} = {list(value)!r}: {err}") from None
