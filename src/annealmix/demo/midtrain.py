"""The mid-training study's design: the mixes, the arms, the learning-rate endings,
the data pools that keep repetition equal, and the tree of shared training segments.

Pre-training runs on mix A (code and a little prose) under warm-up, stable, decay
(WSD); the cooldown is the last ``decay`` fraction of training. Mix B, the
mid-training mix, keeps the prose, halves the code and gives half of every batch
to arithmetic (the target domain, as labs add math at mid-training). Every arm is
a curve lambda(t), the share of the batch drawn from mix B (the rest from mix A):

- ``none``: mix A to the end (the reference: what the decay alone does);
- ``abrupt``: lambda jumps 0 -> 1 at the start of the decay (OLMo 2's and
  AuroraGPT's relaunch onto the mid-training mix);
- ``anneal``: lambda rises linearly from 0 to 1 across the decay, starting one
  decay-length before it (so it crosses 1/2 where ``abrupt`` jumps and gives B as
  many samples as ``abrupt``: a ramp inside the decay alone would give half);
- ``preramp``: a ramp over half a decay-length that ends where the decay starts,
  then held (data changes decoupled from the learning-rate decay, as FG-WSD
  advises); held at 0.8, which gives B as many samples as ``abrupt``;
- ``early``: 5% of mix B from the first step ("mix early"), then 0.8 from the
  decay on: as many B samples as ``abrupt``, some of them long before;
- ``recency``: the control for ``anneal``: an abrupt jump to a constant lambda
  whose samples are as many as ``anneal``'s *and* as recent on average (the mean
  age of a B sample at the end of training is 2/3 of a decay-length for both), so
  ``anneal`` against ``recency`` isolates the smoothness from the recency;
- ``online``: from ``anneal``'s first step on, a controller sets the weights every
  10 steps in proportion to the domains' training losses
  (``annealmix.controllers.LossProportional``): its B exposure is whatever it
  learns, reported as it falls, not matched.

Equal exposure is exact: the plan gives each domain its target within one sample
at every step, so the matched arms draw the same number of arithmetic samples
(``design`` prints them). Repetition is controlled by the pools: each domain's
training windows are cut to a pool sized so that every arm reads every window of
it the same number of times at most (once, where the data suffice: then no arm
reads any window twice); a size where no pool does that is refused, naming the
steps that fit. The online arm's controller stops drawing a domain before it
would read a window more often than the pool allows.

Runs that share a prefix (the same mix and learning rate up to a step) share its
training: the ``tree`` of segments trains each shared prefix once, per seed, and
every branch continues from its parent's model, optimizer and loader state. A
branch re-plans the loader (``load_state_dict(replan=True)``): each source goes
on from the samples it has drawn, and the batches are those the branch's own plan
gives from step 0, so a run is bit for bit the run it would be alone
(``tests/test_midtrain.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .. import _validate
from ..mixture import Mixture, Phase
from .settings import RunConfig

__all__ = ["ARMS", "DOMAINS", "ENDINGS", "MIX_A", "MIX_B", "TARGET", "Node", "Run", "Study",
           "design", "knots", "lam", "mixture", "plan_counts", "pools", "tree"]  # fmt: skip

DOMAINS = ("code", "prose", "math")
MIX_A = {"code": 0.9, "prose": 0.1, "math": 0.0}
MIX_B = {"code": 0.4, "prose": 0.1, "math": 0.5}
TARGET = "math"  # the domain mix B brings in
ENDINGS = {"zero": 0.0, "moderate": 0.3}  # where the decay ends, a fraction of the peak
ARMS = ("none", "abrupt", "anneal", "preramp", "early", "recency", "online")
EARLY = 0.05  # the "mix early" arm's share of mix B before the decay


def knots(arm: str, steps: int, decay: int) -> list[tuple[int, float]]:
    """The arm's lambda(t) as (step, lambda) knots, linear between them, constant
    before the first (0 if none) and after the last."""
    start = steps - decay  # the first step of the decay
    if arm == "none":
        return []
    if arm == "abrupt":
        return [(start - 1, 0.0), (start, 1.0)]
    if arm in ("anneal", "online"):
        return [(steps - 2 * decay, 0.0), (steps - 1, 1.0)]
    if arm == "preramp":  # lambda's sum: level * (ramp / 2 + decay) = decay
        ramp = max(2, decay // 2)
        level = 2 * decay / (2 * decay + ramp)
        return [(start - ramp, 0.0), (start - 1, level)]
    if arm == "early":  # EARLY * start + level * decay = decay
        return [(0, EARLY), (start - 1, EARLY), (start, (decay - EARLY * start) / decay)]
    if arm == "recency":  # as many B samples as anneal's, as recent on average
        held = round(4 * decay / 3)
        return [(steps - held - 1, 0.0), (steps - held, decay / held)]
    raise ValueError(f"unknown study arm {arm!r}; choose from {', '.join(ARMS)}")


def lam(arm: str, steps: int, decay: int) -> np.ndarray:
    """lambda(t) at every step: the share of the batch drawn from mix B."""
    points = knots(arm, steps, decay)
    if not points:
        return np.zeros(steps)
    x, y = zip(*points)
    return np.interp(np.arange(steps), x, y)


def mixture(arm: str, steps: int, decay: int) -> Mixture:
    """The arm as a ``Mixture`` over the three domains: (1 - lambda) A + lambda B."""

    def blend(x: float) -> dict[str, float]:
        return {d: (1.0 - x) * MIX_A[d] + x * MIX_B[d] for d in DOMAINS}

    points = knots(arm, steps, decay)
    if not points:
        return Mixture(weights=blend(0.0))
    phases = [
        Phase(start_step=a, end_step=b, weights=blend(y1))
        for (a, _), (b, y1) in zip(points, points[1:])
    ]
    return Mixture(weights=blend(points[0][1]), phases=phases)


@dataclass(frozen=True, kw_only=True, slots=True)
class Study:
    """The study's size and arms.

    Args:
        run: the model and run size (``steps``, ``batch``, ``seq_len``, ``lr``...);
            its learning-rate schedule is replaced by each ending's WSD.
        decay: the cooldown, a fraction of training (the learning rate decays over
            its steps; the arms' moves are placed by it).
        arms: the arms, from ``ARMS``.
        endings: where the decay ends, by name: a fraction of the peak rate.
        seeds: seeds per run (initialization and data order).
    """

    run: RunConfig
    decay: float = 0.2
    arms: tuple[str, ...] = ARMS
    endings: dict[str, float] = field(default_factory=lambda: dict(ENDINGS))
    seeds: int = 3

    def __post_init__(self) -> None:
        if not 0 < _validate.real("decay", self.decay) < 0.5:
            raise ValueError(
                f"decay must be in (0, 0.5), got {self.decay}: the anneal starts one decay-"
                "length before the decay and pre-training needs steps of its own"
            )
        for arm in self.arms:
            _validate.choice("study arm", arm, ARMS)
        if not self.arms or len(set(self.arms)) != len(self.arms):
            raise ValueError(f"arms must be distinct names from {ARMS}, got {self.arms}")
        if not self.endings:
            raise ValueError("endings is empty; give at least one, e.g. {'zero': 0.0}")
        for name, final in self.endings.items():
            if not 0 <= _validate.real(f"ending {name!r}", final) < 1:
                raise ValueError(f"ending {name!r} must be in [0, 1), got {final}")
        _validate.integer("seeds", self.seeds, minimum=1)
        if "early" in self.arms and EARLY * (1 - self.decay) > self.decay:
            raise ValueError(
                f"decay {self.decay} is too short for arm 'early': its {EARLY:.0%} of mix B "
                "before the decay would already exceed the other arms' exposure; use a decay "
                f"of at least {EARLY / (1 + EARLY):.3f} or leave 'early' out"
            )
        if self.decay_steps < 4:
            raise ValueError(
                f"--steps {self.run.steps} gives a decay of {self.decay_steps} steps; the arms "
                f"need at least 4: use --steps {math.ceil(4 / self.decay)} or more"
            )

    @property
    def decay_steps(self) -> int:
        return int(round(self.decay * self.run.steps))

    def config(self, ending: str) -> RunConfig:
        """The run config under ``ending``: WSD from the decay's first step."""
        steps = self.run.steps  # RunConfig decays where step / (steps - 1) passes decay_start
        start = (steps - self.decay_steps - 0.5) / (steps - 1)
        return replace(
            self.run,
            lr_schedule="wsd",
            decay_start=start,
            lr_final=self.endings[ending],
        )

    def runs(self) -> list[Run]:
        steps, decay = self.run.steps, self.decay_steps
        out = []
        for ending in self.endings:
            cfg = self.config(ending)
            lr = np.array([cfg.learning_rate(t) for t in range(steps)])
            for arm in self.arms:
                online_from = knots(arm, steps, decay)[0][0] if arm == "online" else None
                out.append(
                    Run(
                        arm=arm,
                        ending=ending,
                        lam=lam(arm, steps, decay),
                        lr=lr,
                        online_from=online_from,
                    )
                )
        return out


@dataclass(frozen=True, kw_only=True, eq=False)
class Run:
    """One arm under one learning-rate ending (then trained once per seed)."""

    arm: str
    ending: str
    lam: np.ndarray
    lr: np.ndarray
    online_from: int | None = None

    @property
    def name(self) -> str:
        return f"{self.arm}@{self.ending}"

    def online_at(self, step: int) -> bool:
        """Whether the controller sets the weights at ``step``."""
        return self.online_from is not None and step >= self.online_from

    def weights(self) -> np.ndarray:
        """The scheduled weights of ``DOMAINS`` at every step (steps x 3)."""
        a = np.array([MIX_A[d] for d in DOMAINS])
        b = np.array([MIX_B[d] for d in DOMAINS])
        return (1.0 - self.lam)[:, None] * a + self.lam[:, None] * b

    def signature(self) -> np.ndarray:
        """What the run does at each step: its weights, its learning rate and, from an
        online arm's first controlled step, a mark of the arm (its weights are then
        its controller's: the same under every ending while the learning rates agree)."""
        mark = np.zeros(len(self.lam))
        if self.online_from is not None:
            mark[self.online_from :] = 1 + ARMS.index(self.arm)
        return np.column_stack([self.weights(), self.lr, mark])


@dataclass(kw_only=True)
class Node:
    """A training segment ``[start, end)`` shared by ``runs`` (indices into the
    study's runs), continuing from ``parent`` (``None``: from initialization)."""

    id: int
    start: int
    end: int
    runs: list[int]
    parent: int | None
    children: list[int] = field(default_factory=list)


def tree(runs: list[Run], steps: int) -> list[Node]:
    """The shared segments: every run's steps are trained once by the node that
    holds them, and runs share a node for as long as they do the same thing."""
    sigs = [r.signature() for r in runs]
    nodes: list[Node] = []

    def grow(group: list[int], start: int, parent: int | None) -> None:
        first = sigs[group[0]][start:]
        differs = [np.flatnonzero((sigs[g][start:] != first).any(axis=1)) for g in group]
        split = start + min((d[0] for d in differs if d.size), default=steps - start)
        if split > start:
            nodes.append(Node(id=len(nodes), start=start, end=split, runs=group, parent=parent))
            if parent is not None:
                nodes[parent].children.append(nodes[-1].id)
            parent = nodes[-1].id
        if split == steps:
            return
        classes: dict[bytes, list[int]] = {}
        for g in group:
            classes.setdefault(sigs[g][split].tobytes(), []).append(g)
        for members in classes.values():
            grow(members, split, parent)

    grow(list(range(len(runs))), 0, None)
    return nodes


def plan_counts(run: Run, batch: int) -> np.ndarray:
    """Each domain's samples over a planned run, as scheduled (the plan's own are
    within one sample of these)."""
    return batch * run.weights().sum(axis=0)


def pools(runs: list[Run], available: dict[str, int], batch: int) -> dict[str, tuple[int, int]]:
    """Per domain, (pool size, passes): the training windows every arm draws from and
    the most times any arm reads one of them (every planned arm reads the pool that
    many times, the last pass partly). Refused where no pool size does that."""
    planned = [r for r in runs if r.online_from is None]
    counts = np.array([plan_counts(r, batch) for r in planned]) if planned else None
    out = {}
    for k, domain in enumerate(DOMAINS):
        have = available[domain]
        drawn = counts[:, k][counts[:, k] > 0] if counts is not None else np.zeros(0)
        if drawn.size == 0:
            out[domain] = (have, 1)
            continue
        most, least = math.ceil(drawn.max()) + 1, math.floor(drawn.min())  # one sample spare
        passes = math.ceil(most / have)
        # The largest pool the heaviest arm reads `passes` times and the lightest
        # more than `passes - 1` times.
        size = have if passes == 1 else min(have, math.ceil(least / (passes - 1)) - 1)
        if size * passes < most:
            heavy = planned[int(np.argmax(counts[:, k]))].name
            light = planned[int(np.argmin(np.where(counts[:, k] > 0, counts[:, k], np.inf)))].name
            raise ValueError(
                f"{domain}: {heavy} draws {drawn.max():.0f} samples and {light} "
                f"{drawn.min():.0f} from {have} windows, so no pool lets every arm read each "
                "window the same number of times; use fewer --steps, a smaller --batch or a "
                "shorter --seq-len (more windows per domain)"
            )
        out[domain] = (size, passes)
    return out


def design(runs: list[Run], batch: int) -> list[dict[str, Any]]:
    """Per run: its scheduled B exposure (samples drawn from mix B, and the target
    domain's samples), the mean age of those at the end of training, and lambda at the end."""
    out = []
    k = DOMAINS.index(TARGET)
    for r in runs:
        steps = len(r.lam)
        w = r.weights()[:, k]
        age = float((w * (steps - np.arange(steps))).sum() / w.sum()) if w.sum() else float("nan")
        out.append(
            {
                "run": r.name,
                "arm": r.arm,
                "ending": r.ending,
                "b_samples": float(batch * r.lam.sum()),
                f"{TARGET}_samples": float(batch * w.sum()),
                "mean_age": age,
                "final_lambda": float(r.lam[-1]),
                "online": r.online_from is not None,
            }
        )
    return out
