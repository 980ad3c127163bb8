"""How many samples of each source the global stream holds by every step.

One counter per plan, chosen once by ``counter_for`` from the plan's mode:

- ``Nearest`` (``nearest``; exact, two sources): nearest rounding of the exact
  target, within one half of it, any step in O(1);
- ``EarliestDeadline`` (``deadline``; exact, three or more): the floor of the
  target plus bonus bits by earliest deadline, within one sample; held segments in
  closed form (``held``), the rest replayed (compiled, and across ``threads``);
- ``Bernoulli`` (``bernoulli``; random): each position's source from a keyed hash;
- ``Carried`` (``walk``; online, in samples): each step from its own weights and
  the deficits carried in;
- ``Tokens`` (``tokens``; in tokens): sample by sample, the source whose next
  sample finishes first among those not ahead of their target;
- ``Grouped`` (``grouped``; exact, with corpora): one of the exact counters over
  units of sources that keep their ratios, each unit's count split in closed form.

Targets are exact integers (``quanta``). A counter is immutable; whatever it
remembers between calls lives in a ``Memo`` its plan keeps; where a walk stands is
a ``Point`` passed in and returned. Compiled twins of the inner loops sit beside
the code they twin, switched on in ``compiled``.
"""

from __future__ import annotations

import numpy as np

from .bernoulli import Bernoulli
from .deadline import AHEAD, LOOKAHEAD, EarliestDeadline
from .grouped import Grouped, Single, Split, unit_mixture, units
from .memo import Counter, Memo, OutOfBound, Point
from .nearest import Nearest
from .quanta import CHUNK, Q_BITS, SOURCE_DTYPE, Q, Targets, quantize, step_counts
from .tokens import Tokens
from .walk import Carried

__all__ = [
    "AHEAD",
    "CHUNK",
    "LOOKAHEAD",
    "Q",
    "Q_BITS",
    "SOURCE_DTYPE",
    "Bernoulli",
    "Carried",
    "Counter",
    "EarliestDeadline",
    "Grouped",
    "Memo",
    "Nearest",
    "OutOfBound",
    "Point",
    "Targets",
    "Tokens",
    "counter_for",
    "quantize",
    "step_counts",
]


def counter_for(mode: str, mixture, batch: int, *, seed: int = 0, lengths_of=None,
                longest: tuple[int, ...] | None = None,
                corpora: tuple[tuple[int, ...], ...] = ()) -> Counter:  # fmt: skip
    """The counter of a plan in ``mode`` over ``mixture`` (a ``Mixture``, or an online
    plan's schedule tilted by its log), chosen once.

    ``lengths_of(source id, first draw, count)`` gives the tokens of a run of a
    source's draws and ``longest`` each source's longest sample (token modes).
    ``corpora`` (exact mode): tuples of source ids counted in units (``grouped``);
    where no two sources share a unit, the counter is the one without them.
    """
    targets = Targets(mixture)
    if mode == "random":
        return Bernoulli(targets, batch, seed)
    if mode == "exact":
        members, weights = units(mixture, corpora) if corpora else ([], [])
        if members and len(members) < mixture.num_sources:
            return _grouped(targets, batch, members, weights)
        two = mixture.num_sources == 2
        return Nearest(targets, batch) if two else EarliestDeadline(targets, batch)
    if mode == "online":
        return Carried(targets, batch)
    return Tokens(targets, batch, lengths_of, longest)


def _grouped(targets: Targets, batch: int, members: list[list[int]],
             weights: list[float]) -> Grouped:  # fmt: skip
    mixture, n = targets.mixture, targets.n
    unit_of = np.empty(n, dtype=np.int64)
    for u, unit in enumerate(members):
        unit_of[unit] = u
    joined = unit_mixture(mixture, members)
    one = len(members) == 1
    inner = Single(Targets(joined), batch) if one else counter_for("exact", joined, batch)
    return Grouped(targets, batch, inner, unit_of, Split(n, members, weights))
