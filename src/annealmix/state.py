"""The one resume format: a stream's ``State``, a small versioned JSON dict (see
``annealmix.stream`` for what each key holds), checked key by key when loaded."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import _validate
from .plan import PARTS

__all__ = ["STATE_VERSION", "State"]

STATE_VERSION = 2
_KEYS = ("version", "step", "micro", "world_size", "micro_batches", "counts", "offset", "plan")
_OPTIONAL = ("deficits", "log")


@dataclass(frozen=True, kw_only=True, slots=True)
class State:
    """A stream's resume state (see the module doc); ``to_dict`` is plain JSON.

    Args:
        step: the next micro-batch's step.
        micro: the next micro-batch within the step.
        world_size: data-parallel ranks when the state was taken.
        micro_batches: micro-batches per step when the state was taken.
        counts: samples of each source before ``step``, all ranks, in source order.
        offset: per-source draws beyond the plan's counts after a re-plan, or ``None``.
        plan: the plan's per-part fingerprints (``Plan.fingerprints``).
        deficits: a walking plan's deficits before ``step``; ``None`` otherwise.
        log: an online plan's weight log; ``None`` otherwise.
    """

    step: int
    micro: int
    world_size: int
    micro_batches: int
    counts: tuple[int, ...]
    offset: tuple[int, ...] | None
    plan: Mapping[str, str]
    deficits: tuple[int, ...] | None = None
    log: list[list[Any]] | None = None

    def to_dict(self) -> dict[str, Any]:
        extra = {} if self.deficits is None else {"deficits": list(self.deficits)}
        if self.log is not None:
            extra["log"] = [[step, list(weights)] for step, weights in self.log]
        return {
            "version": STATE_VERSION,
            "step": self.step,
            "micro": self.micro,
            "world_size": self.world_size,
            "micro_batches": self.micro_batches,
            "counts": list(self.counts),
            "offset": None if self.offset is None else list(self.offset),
            "plan": dict(self.plan),
            **extra,
        }

    @classmethod
    def from_dict(cls, state: Any) -> State:
        """Check a saved state's shape and values; errors say what is wrong and the fix."""
        if isinstance(state, (str, bytes)):
            raise TypeError(
                "state must be the dict that state_dict() returned, got a string; "
                "if you saved it as JSON, pass json.loads(text)"
            )
        if not isinstance(state, Mapping):
            raise TypeError(
                f"state must be the dict that state_dict() returned, got {type(state).__name__}"
            )
        missing = [k for k in _KEYS if k not in state]
        if missing:
            raise ValueError(f"state lacks {missing}; pass what state_dict() returned")
        unknown = sorted(set(state) - set(_KEYS) - set(_OPTIONAL))
        if unknown:
            raise ValueError(f"state has unknown keys {unknown}; pass what state_dict() returned")
        if state["version"] != STATE_VERSION:
            raise ValueError(
                f"state version {state['version']!r} is not {STATE_VERSION}; "
                "it was written by another annealmix release"
            )
        step = _validate.integer("state step", state["step"], minimum=0)
        micro = _validate.integer("state micro", state["micro"], minimum=0)
        world = _validate.integer("state world_size", state["world_size"], minimum=1)
        micro_batches = _validate.integer("state micro_batches", state["micro_batches"], minimum=1)
        if micro >= micro_batches:
            raise ValueError(f"state micro {micro} must be < its micro_batches {micro_batches}")
        counts = _vector("state counts", state["counts"], minimum=0)
        offset = state["offset"]
        if offset is not None:
            offset = _vector("state offset", offset, minimum=None)
            if len(offset) != len(counts):
                raise ValueError(
                    f"state offset has {len(offset)} entries for {len(counts)} counts; "
                    "pass what state_dict() returned"
                )
        deficits = state.get("deficits")
        if deficits is not None:
            deficits = _vector("state deficits", deficits, minimum=None)
        log = state.get("log")
        if log is not None and (isinstance(log, (str, bytes)) or not isinstance(log, Sequence)):
            raise ValueError(f"state log must be a list of [step, weights] entries, got {log!r}")
        plan = state["plan"]
        if not isinstance(plan, Mapping) or any(not isinstance(plan.get(k), str) for k in PARTS):
            raise ValueError(
                f"state plan must map each of {list(PARTS)} to a fingerprint, got {plan!r}"
            )
        return cls(
            step=step,
            micro=micro,
            world_size=world,
            micro_batches=micro_batches,
            counts=counts,
            offset=offset,
            plan={k: plan[k] for k in PARTS},
            deficits=deficits,
            log=None if log is None else [list(entry) for entry in log],
        )


def _vector(name: str, values: Any, minimum: int | None) -> tuple[int, ...]:
    if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Sequence):
        raise ValueError(f"{name} must be a list of integers, got {values!r}")
    return tuple(
        _validate.integer(f"{name}[{i}]", v, minimum=minimum) for i, v in enumerate(values)
    )
