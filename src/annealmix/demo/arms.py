"""The demo's arms: how the mix moves from code to prose, each one a ``Mixture``.

Every arm starts on code only and, unless it is the constant reference, moves to
prose inside the same window (the middle half of training by default). Abrupt,
linear and cosine moves are symmetric about the window's middle, so each gives
the two domains the same number of samples over the run (to within one sample:
the plan is exact); ``replay`` ends with a 5% share of code ("maintain a mixture")
and so spends more samples on code, which is what it is about. ``online`` (not in
the default set: ``--arms online,cosine,constant``) follows the cosine move with a
learned tilt: every ``update_every`` steps a controller reads the two domains'
training losses and commits new weights (``annealmix.online``), so its samples
per domain are whatever it learns, and the leaderboard counts them as they fall.

Arms come by name (``ARMS``) or from a TOML file of ``[[arms]]`` tables::

    [[arms]]
    name = "fast-sigmoid"
    schedule = { name = "sigmoid", steepness = 20 }
    end = { code = 0.0, prose = 1.0 }     # optional, default all prose
    window = [0.25, 0.75]                 # optional, fractions of training
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import _validate
from ..mixture import Mixture, Phase
from ..schedules import Schedule, Step, get_schedule, schedule_from_dict
from .data import DOMAINS

__all__ = ["ARMS", "Arm", "load_arms"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Arm:
    """One way of moving the mix.

    Args:
        name: shown in the leaderboard and plots.
        schedule: the curve of the move (``None``: a constant 50/50 mix, no move).
        end: the weights the move ends at, by domain name (``None``: the second
            domain only but for ``keep``).
        keep: the first domain's share at the end, when ``end`` is ``None``.
        window: the move's (start, end) as fractions of training.
        online: a controller that tilts the move by the domains' losses
            (``"loss"``: ``LossProportional``), or ``None``.
        update_every: steps between the controller's updates.
    """

    name: str
    schedule: Schedule | None
    end: dict[str, float] | None = None
    keep: float = 0.0
    window: tuple[float, float] = (0.25, 0.75)
    online: str | None = None
    update_every: int = 10

    def __post_init__(self) -> None:
        lo = _validate.unit_interval(f"arm {self.name!r} window start", self.window[0])
        hi = _validate.unit_interval(f"arm {self.name!r} window end", self.window[1])
        if not lo < hi:
            raise ValueError(f"arm {self.name!r} window must have start < end, got {self.window}")

    def switch_steps(self, num_steps: int) -> tuple[int, int]:
        """The steps where the move starts and ends."""
        lo, hi = self.window
        return int(round(lo * num_steps)), max(
            int(round(lo * num_steps)) + 1, int(round(hi * num_steps)) - 1
        )

    def mixture(self, num_steps: int, domains: tuple[str, str] = ("code", "prose")) -> Mixture:
        """From the first domain alone to ``end`` (default: the second domain)."""
        old, new = domains
        if self.schedule is None:
            return Mixture(weights={old: 0.5, new: 0.5})
        end = {old: self.keep, new: 1.0 - self.keep} if self.end is None else self.end
        for name in end:
            _validate.choice(f"domain in arm {self.name!r} end:", name, domains)
        a, b = self.switch_steps(num_steps)
        phase = Phase(start_step=a, end_step=b, weights=end, schedule=self.schedule)
        return Mixture(weights={old: 1.0, new: 0.0}, phases=[phase])


ARMS: dict[str, Arm] = {
    "abrupt": Arm(name="abrupt", schedule=Step(at=0.5)),
    "linear": Arm(name="linear", schedule=get_schedule("linear")),
    "cosine": Arm(name="cosine", schedule=get_schedule("cosine")),
    "replay": Arm(name="replay", schedule=get_schedule("cosine"), keep=0.05),
    "constant": Arm(name="constant", schedule=None),
    "online": Arm(name="online", schedule=get_schedule("cosine"), online="loss"),
}
DEFAULT_ARMS = ("abrupt", "linear", "cosine", "replay", "constant")


def load_arms(path: str | Path) -> list[Arm]:
    """Arms from a TOML file of ``[[arms]]`` tables (see the module docstring)."""
    with open(path, "rb") as f:
        spec = tomllib.load(f)
    unknown = [k for k in spec if k != "arms"]
    if unknown:
        _validate.choice(f"key in {path}:", unknown[0], ["arms"])
    tables = spec.get("arms")
    if not tables:
        raise ValueError(f"{path} has no [[arms]] tables; add at least one arm")
    return [_arm(t, f"{path} arm {i}") for i, t in enumerate(tables)]


def _arm(table: dict[str, Any], where: str) -> Arm:
    for key in table:
        if key not in ("name", "schedule", "end", "window"):
            _validate.choice(f"key in {where}:", key, ("end", "name", "schedule", "window"))
    if "name" not in table or "schedule" not in table:
        raise ValueError(f"{where} needs a name and a schedule, got keys {sorted(table)}")
    raw = table["schedule"]
    schedule = get_schedule(raw) if isinstance(raw, str) else schedule_from_dict(raw)
    end = table.get("end")
    for key in end or ():
        _validate.choice(f"source in {where} end:", key, DOMAINS)
    window = tuple(table.get("window", (0.25, 0.75)))
    if len(window) != 2:
        raise ValueError(f"{where} window must be [start, end], got {table['window']!r}")
    return Arm(name=str(table["name"]), schedule=schedule, end=None if end is None else dict(end),
               window=window)  # fmt: skip
