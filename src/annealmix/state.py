"""The one resume format: a stream's ``State``, a small versioned JSON dict (see
``annealmix.stream`` for what each key holds), checked key by key when loaded.

Since version 3 a state carries ``check``, a hash of everything else in it: the
counts of random and walking plans, their deficits and an online run's log cost a
replay to check against the plan, so an edited or corrupted state is caught by its
check instead, before the stream moves. A version-2 state (written before states
carried a check) still loads, with a warning that only its totals are checked."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _validate
from .plan import PARTS, RELEASES, Plan, Point, digest

__all__ = ["STATE_VERSION", "State", "check_point"]

STATE_VERSION = 3
_UNCHECKED = 2  # the version before states carried a check: still loaded
_KEYS = ("version", "step", "micro", "world_size", "micro_batches", "counts", "offset", "plan")
_OPTIONAL = ("deficits", "log", "check")


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
        check: the hash the saved state carried (``None`` for a version-2 state);
            ``edited`` compares it with the state's contents.
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
    check: str | None = None

    @property
    def algorithm(self) -> int | None:
        """The stream algorithm the saved plan drew with (``plan.ALGORITHM``);
        ``None`` for one this annealmix does not know."""
        mark = self.plan.get("algorithm")
        return next((version for version in RELEASES if digest(version) == mark), None)

    @property
    def edited(self) -> bool:
        """Whether the saved check differs from the state's contents."""
        return self.check is not None and self.check != _check(self._body())

    def to_dict(self) -> dict[str, Any]:
        body = self._body()
        return body | {"check": _check(body)}

    def _body(self) -> dict[str, Any]:
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
        version = state["version"]
        if version not in (STATE_VERSION, _UNCHECKED) or isinstance(version, bool):
            raise ValueError(
                f"state version {version!r} is not {STATE_VERSION}; "
                "it was written by another annealmix release"
            )
        check = state.get("check")
        if version == STATE_VERSION and not isinstance(check, str):
            raise ValueError(
                f"state check must be the string state_dict() wrote, got {check!r}; pass "
                "what state_dict() returned"
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
        # "corpora" joined the parts after annealmix 0.1: its states name the rest
        optional = "corpora" if isinstance(plan, Mapping) and "corpora" not in plan else None
        needed = [k for k in PARTS if k != optional]
        if not isinstance(plan, Mapping) or any(not isinstance(plan.get(k), str) for k in needed):
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
            plan={k: plan[k] for k in needed},
            deficits=deficits,
            log=None if log is None else [list(entry) for entry in log],
            check=check if version == STATE_VERSION else None,
        )


def _check(body: Mapping[str, Any]) -> str:
    """A state's check: a hash of everything else in it."""
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def _vector(name: str, values: Any, minimum: int | None) -> tuple[int, ...]:
    if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Sequence):
        raise ValueError(f"{name} must be a list of integers, got {values!r}")
    return tuple(
        _validate.integer(f"{name}[{i}]", v, minimum=minimum) for i, v in enumerate(values)
    )


def check_point(plan: Plan, point: Point, *, log=None) -> Point:
    """``point`` (from a saved state) if it is where ``plan`` stands at its step;
    else refused: counts that are not the plan's would shift every later draw
    without a word. Exact mode recomputes them by a replay (which leaves the
    plan's cache there); random mode, whose counts cost a hash per earlier
    position, checks that they add up to the step's samples; a walk's counts
    must add up too and its deficits sum to zero within the proven bounds."""
    step, counts = point.step, np.asarray(point.counts, dtype=np.int64)
    if plan.mode == "exact":
        want = plan.point(step, log=log).counts
        wrong = np.flatnonzero(want != counts)
        if wrong.size:
            k = int(wrong[0])
            _refuse(step, f"source {plan.mixture.sources[k]!r}: {int(counts[k])} in the state, "
                          f"{int(want[k])} in the plan; {wrong.size} source(s) differ")  # fmt: skip
        return Point(step, counts)
    b, total = plan.global_batch_size, int(np.sum(counts))
    if total != b * step:
        _refuse(step, f"they add up to {total}, not {step} steps x {b} = {b * step}")
    if not plan.walks:
        return Point(step, counts)
    deficits, n = point.deficits, plan.num_sources
    if deficits is None:
        _refuse(step, "it has no deficits, which the state of a walking plan carries")
    if len(deficits) != n or sum(deficits) != 0:
        _refuse(step, f"its deficits {list(deficits)} do not sum to zero over {n} sources")
    for k, (d, (low, high)) in enumerate(zip(deficits, plan.deficit_bounds())):
        if not low < d < high:
            _refuse(step, f"source {plan.mixture.sources[k]!r}'s deficit is out of bounds")
    return Point(step, counts, tuple(deficits))


def _refuse(step: int, detail: str) -> None:
    """The error for saved counts that are not a plan's at ``step``."""
    raise ValueError(
        f"state counts at step {step} are not the plan's counts there ({detail}): the "
        "state was edited or belongs to another run; resume from the state this run saved"
    )
