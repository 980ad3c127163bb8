"""Online mixing: weights that change during training, replayed exactly from a log.

An online plan (``OnlinePlan``: ``Plan(mode="online")``) is a plan over a scheduled
mixture plus a *weight log*: entries ``(step, weights)``, each committed before its
step is planned. From an entry's step on, the schedule is tilted so that the mixture
at that step is the logged weights (``annealmix.weightlog``): under a constant
schedule that is the logged weights themselves; under an anneal the learned tilt
rides along it (a scheduled anneal with a learned residual). A source the schedule
gives weight 0 stays at 0 (its tilt has nothing to scale).

Where a ``Plan`` reads weights thousands of steps ahead of the step it plans (its
exact counts for three or more sources look ahead), weights learned online are not
known ahead. So an online plan walks, each step reading only its own weights and
the per-source deficits carried in: in samples, each step's counts are the
deficits' largest remainders (``annealmix._counting.walk.Carried``, O(N) per step);
with ``lengths``, in tokens (mode ``"online tokens"``), sample by sample as a
``TokenPlan``. A committed entry therefore never changes a step before it, and the
plan with the log replays every step exactly, on any world size. The bound, against
the realized weights: each source ahead of its target by less than one sample (one
longest sample in tokens) and behind by less than one sample for two sources, N - 1
for N (the others' longest samples together, in tokens); measured under two.

The log is not part of the plan: a ``Stream`` owns it (``Stream.commit`` appends
to it; ``MixtureDataLoader.commit`` commits at a step every rank and every
prefetching worker agrees on), and every lookup of an online plan takes it
(``plan.batches(step, 1, log=...)``, ``annealmix inspect --log``). The log travels
in the stream's state (``"log"``, one row per update), so a resumed run continues
under it; the log is part of the state's fingerprint ("phases"), so an edited log
is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .mixture import Mixture
from .plan import Plan

__all__ = ["OnlinePlan", "online"]


def OnlinePlan(  # noqa: N802 - a constructor function, named as the plan it builds
    mixture: Mixture,
    *,
    global_batch_size: int,
    sizes: Mapping[str, int] | None = None,
    lengths: Mapping[str, Any] | None = None,
    seed: int = 0,
    order: str | Mapping[str, str] = "shuffle",
) -> Plan:
    """A ``Plan`` whose weights can change during training, from a weight log:
    ``Plan(mixture, mode="online", ...)``, or ``mode="online tokens"`` with ``lengths``.

    Args:
        mixture: the schedule the log tilts (a constant one for purely online mixing).
        global_batch_size: B, samples per optimizer step across all ranks.
        sizes: samples per source, by name (for sample indices and epochs).
        lengths: tokens per sample, by name, to weigh tokens (as ``TokenPlan``);
            ``None``: every sample counts one, weights are sample shares.
        seed, order: as for ``Plan``.
    """
    if lengths is None and sizes is None:
        raise ValueError("an online plan needs sizes={name: samples} (or lengths=)")
    mode = "online" if lengths is None else "online tokens"
    return Plan(mixture, global_batch_size=global_batch_size, seed=seed, mode=mode,
                sizes=sizes, order=order, lengths=lengths)  # fmt: skip


def online(plan: Plan) -> Plan:
    """The online plan over ``plan``'s schedule, sizes, seed and orders (and its
    lengths, for a token plan): e.g. to look up the steps of an online run from its
    saved state's log."""
    if plan.sizes is None:
        raise ValueError("an online plan needs the plan's sizes: build it with sizes=")
    mode = "online" if plan.lengths is None else "online tokens"
    return plan.replace(mode=mode)
