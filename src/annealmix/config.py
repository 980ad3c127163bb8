"""Mixture config files (TOML) <-> the dataclasses the Python API uses.

seed = 0
global_batch_size = 1024
num_steps = 10000
mode = "exact"              # or "random"

[sources.web]               # one table per source, in id order
weight = 0.8                # starting weight (relative)
size = 5_000_000            # samples; for epochs and sample indices
order = "shuffle"           # or "replacement", "sequential"

[[phases]]
start_step = 8000
end_step = 9999
schedule = "cosine"         # or { name = "sigmoid", steepness = 12 }
weights = { web = 0.3, code = 0.7 }
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import _validate
from .mixture import Mixture, Phase
from .plan import Plan

__all__ = ["MixConfig", "load_config"]

_TOP = ("seed", "global_batch_size", "num_steps", "mode", "sources", "phases")
_SOURCE = ("weight", "size", "order")
_PHASE = ("start_step", "end_step", "schedule", "weights")


def _check_keys(where: str, table: dict[str, Any], valid: tuple[str, ...]) -> None:
    if not isinstance(table, dict):
        raise ValueError(f"{where} must be a table, got {table!r}")
    for key in table:
        if key not in valid:
            _validate.choice(f"key in {where}:", key, valid)


@dataclass(frozen=True, kw_only=True, slots=True)
class MixConfig:
    """A whole run's mixing set-up, as read from a config file.

    Args:
        plan: the plan (mixture, batch size, seed, mode, sizes, orders).
        num_steps: optimizer steps the run will take.
    """

    plan: Plan
    num_steps: int


def load_config(path: str | Path) -> MixConfig:
    """Read and validate a TOML mixture config; errors name the key and the fix."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"config file {str(path)!r} does not exist") from None
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"config file {str(path)!r} is not valid TOML: {err}") from None
    _check_keys("the config", raw, _TOP)
    for key in ("global_batch_size", "num_steps", "sources"):
        if key not in raw:
            raise ValueError(f"config {str(path)!r} lacks {key!r}")
    sources = raw["sources"]
    _check_keys("sources", sources, tuple(sources) if isinstance(sources, dict) else ())
    weights, sizes, orders = {}, {}, {}
    for name, table in sources.items():
        _check_keys(f"sources.{name}", table, _SOURCE)
        if "weight" not in table:
            raise ValueError(
                f"sources.{name} lacks 'weight' (its starting weight, e.g. weight = 0.5)"
            )
        weights[name] = table["weight"]
        if "size" in table:
            sizes[name] = table["size"]
        orders[name] = table.get("order", "shuffle")
    if sizes and len(sizes) != len(weights):
        lacking = next(n for n in weights if n not in sizes)
        raise ValueError(f"sources.{lacking} lacks 'size'; give every source a size or none")
    phases = []
    for i, table in enumerate(raw.get("phases", [])):
        _check_keys(f"phases[{i}]", table, _PHASE)
        phases.append(Phase(**table))
    mixture = Mixture(weights=weights, phases=phases)
    plan = Plan(
        mixture,
        global_batch_size=raw["global_batch_size"],
        seed=raw.get("seed", 0),
        mode=raw.get("mode", "exact"),
        sizes=sizes or None,
        order=orders,
    )
    num_steps = _validate.integer("num_steps", raw["num_steps"], minimum=1)
    return MixConfig(plan=plan, num_steps=num_steps)
