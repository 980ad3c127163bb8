"""The stream: a walk over the plan for one shard, and the one state it resumes from.

A ``Stream`` yields one rank's micro-batches in order (the global walk is the
default shard: one rank, one micro-batch, the whole batch). It hands the plan
where it stands (a ``Point``), so walking on costs only the steps walked. Its ``State``
is the only resume format in annealmix: a small versioned JSON dict holding

- ``step``, ``micro``: the next micro-batch;
- ``world_size``, ``micro_batches``: the shard layout it was taken under (a state
  taken inside a step resumes only under the same layout);
- ``counts``: samples drawn from each source before ``step``, all ranks together,
  in the plan's source order;
- ``offset``: after a re-plan, what each source had drawn beyond the new plan's own
  counts (``None`` otherwise);
- ``plan``: a fingerprint per part of the plan (sources, weights, phases, batch
  size, seed, mode, sizes, orders, algorithm), so that a refusal names what changed;
- ``deficits`` (only for a walking plan: token and online modes): each source's target
  minus what it drew before ``step``, in tokens (or samples) / 2**40, exact
  integers summing to zero;
- ``log`` (only for an online plan): its weight log, ``[[step, [weights]], ...]``;
- ``check``: a hash of everything else in the state (``annealmix.state``).

A loaded state is checked, not trusted: its counts must be the plan's counts at its
step (``state.check_point``: exact mode recomputes them by a replay, once;
random mode, whose counts cost a hash per earlier position, and walking plans,
whose counts cost a walk over every earlier step, check that they add up to the
step's samples, and a walking plan's deficits that they sum to zero within its
bound); then its check must match its contents, which catches what those tests
cannot see (counts moved between sources, deficits moved, a log edited).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from . import _validate
from ._counting import step_counts
from .batch import Batch
from .order import indexed
from .plan import ALGORITHM, RELEASES, Plan, Point, digest
from .shard import Shard
from .state import State, check_point

__all__ = ["MicroBatch", "Position", "State", "Stream"]



@dataclass(frozen=True, slots=True)
class Position:
    """Where a stream stands: the next micro-batch, and the plan's own counts before
    its step (without a re-plan offset), with the deficits a walking plan carries
    into it (``Point.deficits``). Cheap to keep and to send between processes.
    """

    step: int
    micro: int
    consumed: np.ndarray
    deficits: tuple[int, ...] | None = None

    @property
    def point(self) -> Point:
        """Where the plan's walk stands at this position's step."""
        return Point(self.step, self.consumed, self.deficits)


@dataclass(frozen=True, kw_only=True, slots=True)
class MicroBatch:
    """One rank's micro-batch: parallel arrays over its samples.

    Args:
        step: the optimizer step.
        micro: the micro-batch within the step, in [0, micro_batches).
        sources: source id of each sample (int16).
        draws: draw number of each sample within its source.
        indices: sample index within its source; ``None`` for a plan without sizes.
        after: where the stream stands once this micro-batch is consumed: the state
            a checkpoint taken after it must hold (``Stream.state(after)``).
    """

    step: int
    micro: int
    sources: np.ndarray
    draws: np.ndarray
    indices: np.ndarray | None
    after: Position


class Stream(Iterator[MicroBatch]):
    """One shard's micro-batches from the plan, in order, with resumable state.

    Args:
        plan: the plan.
        shard: this rank's part of each batch; by default the whole global batch
            (one rank, one micro-batch).
        num_steps: stop after this many steps (``None``: never stop).
        chunk_steps: steps planned at once (speed; never changes the stream); by
            default about 64K samples' worth.
        log: an online plan's weight log to start from (a ``WeightLog`` or its
            entries); the stream owns it and ``commit`` appends to it.

    Attributes:
        log: an online plan's ``WeightLog`` (empty for other plans).
    """

    def __init__(
        self,
        plan: Plan,
        shard: Shard | None = None,
        *,
        num_steps: int | None = None,
        chunk_steps: int | None = None,
        log: Any = None,
    ) -> None:
        if not isinstance(plan, Plan):
            raise TypeError(f"plan must be an annealmix.Plan, got {type(plan).__name__}")
        shard = Shard(global_batch_size=plan.global_batch_size) if shard is None else shard
        if shard.global_batch_size != plan.global_batch_size:
            raise ValueError(
                f"shard global_batch_size {shard.global_batch_size} != plan's "
                f"{plan.global_batch_size}; build both from one batch size"
            )
        self.plan, self.shard = plan, shard
        self.num_steps = (
            None if num_steps is None else _validate.integer("num_steps", num_steps, minimum=0)
        )
        if chunk_steps is None:
            chunk_steps = min(4096, max(1, (1 << 16) // plan.global_batch_size))
        self.chunk_steps = _validate.integer("chunk_steps", chunk_steps, minimum=1)
        self.log = plan.weight_log(log).copy()
        self.offset: np.ndarray | None = None  # added to every draw after a re-plan
        start = plan.start()
        self.position = Position(0, 0, start.counts, start.deficits)
        self._cache: tuple[Batch, np.ndarray] | None = None

    @property
    def step(self) -> int:
        return self.position.step

    @property
    def micro(self) -> int:
        return self.position.micro

    @property
    def consumed(self) -> np.ndarray:
        """Samples drawn from each source, all ranks together, before ``self.step``."""
        return self._actual(self.position.consumed)

    def _actual(self, plan_consumed: np.ndarray) -> np.ndarray:
        return plan_consumed if self.offset is None else plan_consumed + self.offset

    def seek(self, position: Position) -> None:
        """Continue from a position this stream (or a copy of it) produced."""
        self.position = position

    def seek_step(self, step: int) -> None:
        """Continue from the start of ``step`` as the plan (under this stream's log)
        reaches it, every step before it handed out and nothing re-planned."""
        at = self.plan.point(_validate.integer("step", step, minimum=0), log=self.log)
        self.offset, self._cache = None, None
        self.position = Position(at.step, 0, at.counts, at.deficits)

    def __getstate__(self) -> dict[str, Any]:
        # Sent to DataLoader workers: the planned chunk stays behind (it can be
        # megabytes); the position, small, is all a copy needs.
        return {**self.__dict__, "_cache": None}

    def copy(self) -> Stream:
        """A stream over the same plan and shard at the same position."""
        out = Stream(self.plan, self.shard, num_steps=self.num_steps,
                     chunk_steps=self.chunk_steps, log=self.log)  # fmt: skip
        out.offset, out.position = self.offset, self.position
        return out

    def __len__(self) -> int:
        """Micro-batches left (needs ``num_steps``)."""
        if self.num_steps is None:
            raise TypeError("an endless stream has no length; give num_steps")
        left = (self.num_steps - self.step) * self.shard.micro_batches - self.micro
        return max(0, left)

    # -- iteration ----------------------------------------------------------------

    def __next__(self) -> MicroBatch:
        pos = self.position
        if self.num_steps is not None and pos.step >= self.num_steps:
            raise StopIteration
        batch, counts = self._planned(pos)
        row = pos.step - batch.start_step
        cols = self.shard.positions(pos.micro, pos.step)
        if pos.micro + 1 == self.shard.micro_batches:
            deficits = None if batch.deficits is None else batch.deficits[row + 1]
            after = Position(pos.step + 1, 0, pos.consumed + counts[row], deficits)
        else:
            after = Position(pos.step, pos.micro + 1, pos.consumed, pos.deficits)
        self.position = after
        return MicroBatch(
            step=pos.step,
            micro=pos.micro,
            sources=batch.sources[row, cols],
            draws=batch.draws[row, cols],
            indices=None if batch.indices is None else batch.indices[row, cols],
            after=after,
        )

    def _planned(self, pos: Position) -> tuple[Batch, np.ndarray]:
        """The planned chunk holding ``pos.step``, and its per-step counts."""
        if self._cache is not None:
            batch, counts = self._cache
            if batch.start_step <= pos.step < batch.start_step + len(counts):
                return self._cache
        steps = self.chunk_steps
        if self.num_steps is not None:
            steps = min(steps, self.num_steps - pos.step)
        batch = self._plan(pos, steps)
        self._cache = batch, step_counts(batch.sources, self.plan.num_sources)
        return self._cache

    def _plan(self, pos: Position, num_steps: int) -> Batch:
        """Steps ``[pos.step, pos.step + num_steps)`` planned, with the sample indices of
        this shard's positions (-1 at the other ranks' positions, which it never reads):
        a rank maps its own samples only."""
        batch = self.plan.batches(pos.step, num_steps, pos.point, draw_offset=self.offset,
                                  log=self.log)  # fmt: skip
        if self.plan.sizes is None:
            return batch
        cols = self.shard.columns(np.arange(pos.step, pos.step + num_steps))
        if isinstance(cols, slice):
            return indexed(self.plan, batch)
        rows = np.arange(num_steps)[:, None]
        mine = replace(batch, sources=batch.sources[rows, cols], draws=batch.draws[rows, cols])
        spans = np.bincount(batch.sources.ravel(), minlength=self.plan.num_sources)
        indices = np.full(batch.draws.shape, -1, dtype=np.int64)
        indices[rows, cols] = indexed(self.plan, mine, spans).indices
        return replace(batch, indices=indices)

    def take(self, num_steps: int) -> Batch:
        """The next ``num_steps`` whole steps of this shard's positions at once, with
        sample indices where the plan has sizes (the fast path; the stream must
        stand at a step boundary)."""
        num_steps = _validate.integer("num_steps", num_steps, minimum=1)
        pos = self.position
        if pos.micro:
            raise ValueError(
                f"take() needs a step boundary; the stream stands at micro-batch {pos.micro} "
                f"of step {pos.step}: iterate to the step's end first"
            )
        if self.num_steps is not None:
            num_steps = min(num_steps, self.num_steps - pos.step)
            if num_steps <= 0:
                raise StopIteration
        batch = self._plan(pos, num_steps)
        totals = np.bincount(batch.sources.ravel(), minlength=self.plan.num_sources)
        deficits = None if batch.deficits is None else batch.deficits[-1]
        self.position = Position(pos.step + num_steps, 0, pos.consumed + totals, deficits)
        cols = self.shard.columns(np.arange(pos.step, pos.step + num_steps))
        if isinstance(cols, slice):
            return batch
        return Batch(
            start_step=batch.start_step,
            sources=np.take_along_axis(batch.sources, cols, axis=1),
            draws=np.take_along_axis(batch.draws, cols, axis=1),
            first_draws=batch.first_draws,  # of the global batches these columns belong to
            indices=None
            if batch.indices is None
            else np.take_along_axis(batch.indices, cols, axis=1),
        )

    # -- state --------------------------------------------------------------------

    def state(self, position: Position | None = None) -> State:
        """The state at ``position`` (default: where the stream stands)."""
        pos = self.position if position is None else position
        return State(
            step=pos.step,
            micro=pos.micro,
            world_size=self.shard.world_size,
            micro_batches=self.shard.micro_batches,
            counts=tuple(self._actual(pos.consumed).tolist()),
            offset=None if self.offset is None else tuple(self.offset.tolist()),
            plan=self.plan.fingerprints_for(self.log),
            deficits=pos.deficits,
            log=self.log.to_list() if self.plan.online else None,
        )

    def state_dict(self, position: Position | None = None) -> dict[str, Any]:
        """Plain JSON: where the stream stands, the counts there, the plan's identity."""
        return self.state(position).to_dict()

    def load_state_dict(
        self,
        state: Mapping[str, Any],
        *,
        replan: bool = False,
        previous_sources: Sequence[str] | None = None,
    ) -> None:
        """Continue from ``state``, on any world size when it was taken at a step boundary.

        A state from a different plan is refused, naming what changed, unless
        ``replan=True``: then this plan takes over from the saved step, each source
        continuing from its saved count, so a without-replacement source repeats
        nothing. (Per-source counts then stay within two samples of the old counts
        plus the new plan's targets from that step on; a walking plan starts its
        token targets afresh there, each source's tokens within the plan's bound of
        its share of the tokens drawn from the saved step on.) A state names its sources
        by position only; when the sources themselves changed, ``previous_sources``
        (the old names, in the old order) says which count is whose, and a new
        source starts at 0.
        """
        s = State.from_dict(state)
        if s.algorithm != ALGORITHM:
            raise ValueError(_other_algorithm(s.algorithm))
        if self.num_steps is not None and s.step > self.num_steps:
            raise ValueError(
                f"state step {s.step} is past this stream's num_steps {self.num_steps}: it "
                "would hand out nothing; resume with the run's num_steps (or more)"
            )
        log = self._saved_log(s)
        if s.micro and (
            s.micro_batches != self.shard.micro_batches
            or s.world_size != self.shard.world_size
            or replan
        ):
            raise ValueError(
                f"state was taken inside step {s.step} (micro-batch {s.micro} of "
                f"{s.micro_batches}, world size {s.world_size}); resume it with the same "
                "world size and micro-batches, or save at step boundaries"
            )
        changed = self.plan.changes(s.plan, log)
        if not changed:
            self._resume(s, log)
            return
        if not replan:
            raise ValueError(
                f"state was saved from a different plan: {', '.join(changed)} changed. "
                "Resume with the original configuration, or pass replan=True to continue "
                f"with the new one from step {s.step}"
            )
        _same_steps(s, self.plan, changed)
        actual = _counts_by_name(s, self.plan.mixture.sources, "sources" in changed,
                                 previous_sources)  # fmt: skip
        _refuse_edited(s)
        self._cache, self.log = None, log
        if self.plan.walks:  # a walk goes on from the saved counts, its deficits afresh
            self.offset = None
            self.position = Position(s.step, 0, np.array(actual, dtype=np.int64),
                                     self.plan.start().deficits)  # fmt: skip
            return
        plan_consumed = self.plan.consumed(s.step, log=log)
        self.offset = np.asarray(actual, dtype=np.int64) - plan_consumed
        if not self.offset.any():
            self.offset = None
        self.position = Position(s.step, 0, plan_consumed)

    def _saved_log(self, s: State):
        """The log the stream goes on under: an online state's (its fingerprint then
        checks it), checked; this stream's own where the state has none."""
        if s.log is None:
            if self.log:
                raise ValueError(
                    "state has no weight log, and this stream's online plan has updates; "
                    "load it into a stream built from the plan's schedule alone"
                )
            return self.log
        if not self.plan.online:
            raise ValueError(
                f"state carries a weight log ({len(s.log)} update(s)) from an online run; "
                "resume it with an annealmix.online.OnlinePlan over the same schedule"
            )
        return self.plan.weight_log(s.log)

    def commit(self, step: int, weights: Any, *, drop_unscheduled: bool = False) -> None:
        """Online plans: ``weights`` take effect at ``step``, which no micro-batch of
        this stream has reached yet: appended to the stream's log. Refused (the log
        unchanged) for a step already planned into what was handed out, or for bad
        weights; weight for a source the schedule holds at 0 at ``step`` is refused
        too, or dropped with a warning (``drop_unscheduled``, ``WeightLog.append``)."""
        if not self.plan.online:
            raise TypeError(
                "commit needs an online plan (annealmix.online.OnlinePlan); this stream's "
                f'plan is in mode "{self.plan.mode}"'
            )
        step = _validate.integer("commit step", step, minimum=0)
        first_open = self.step if self.micro == 0 else self.step + 1
        if step < first_open:
            raise ValueError(
                f"step {step} is already (partly) handed out: this stream stands at step "
                f"{self.step}, micro-batch {self.micro}; commit at step {first_open} or later"
            )
        self.log.append(step, weights, drop_unscheduled=drop_unscheduled)
        self._cache = None

    def _resume(self, s: State, log) -> None:
        n = self.plan.num_sources
        if len(s.counts) != n:
            raise ValueError(f"state counts {len(s.counts)} sources, the plan has {n}")
        offset = None if s.offset is None else np.array(s.offset, dtype=np.int64)
        plan_consumed = np.array(s.counts, dtype=np.int64) - (0 if offset is None else offset)
        at = check_point(self.plan, Point(s.step, plan_consumed, s.deficits), log=log)
        _refuse_edited(s)
        self._cache, self.log = None, log
        self.offset = offset if offset is not None and offset.any() else None
        self.position = Position(s.step, s.micro, at.counts, at.deficits)


def _other_algorithm(version: int | None) -> str:
    if version is None:
        return (
            "state was saved with a stream algorithm this annealmix does not know (by a "
            f"newer release?); this one draws with algorithm {ALGORITHM} (annealmix "
            f"{RELEASES[ALGORITHM]}); resume with the release that saved it"
        )
    return (
        f"state was saved with stream algorithm {version} (annealmix {RELEASES[version]}); "
        f"this annealmix draws with algorithm {ALGORITHM} (annealmix {RELEASES[ALGORITHM]}), "
        "which hands out other samples from the same state, re-planned or not: finish that "
        f"run with pip install 'annealmix=={RELEASES[version]}.*', or start it afresh"
    )


def _same_steps(s: State, plan: Plan, changed: list[str]) -> None:
    """A re-plan goes on at the saved step, counted in the old plan's steps: refused
    where a batch-size ramp (``annealmix.ramp``), in the old plan or the new, makes
    them other steps than the new plan's. (A plan without one takes ``B`` samples a
    step: its counts sum to ``B x step``, with ``B`` its fingerprint's.)"""
    if "global_batch_size" not in changed or s.step == 0:
        return
    total = sum(s.counts)
    flat = total % s.step == 0 and digest(total // s.step) == s.plan.get("global_batch_size")
    if plan.batch_sizes is not None or not flat:
        raise ValueError(
            f"state at step {s.step} was saved under other batch sizes, and under a batch-size "
            "ramp the plan's steps are not optimizer steps: this re-plan would go on at another "
            "point of the run; re-plan with the run's batch sizes (its rampup_batch_size or "
            "batch_sizes) and change the mixture"
        )


def _refuse_edited(s: State) -> None:
    """Refuse a state whose check does not match it (checked after every other test,
    which name what is wrong where they can); warn for a state without one."""
    if s.edited:
        raise ValueError(
            f"state at step {s.step} does not match its check: it was edited or corrupted "
            "after state_dict() wrote it; resume from the state this run saved"
        )
    if s.check is None:
        warnings.warn(
            f"state at step {s.step} was written by an earlier annealmix (state version 2, "
            "without a check): its counts and deficits are checked only where the plan can "
            "recompute them; save a new state to have them checked",
            stacklevel=3,
        )


def _counts_by_name(
    s: State, names: tuple[str, ...], sources_changed: bool, previous: Sequence[str] | None
) -> list[int]:
    """A re-planned state's actual counts in the new plan's source order."""
    if not sources_changed:
        return list(s.counts)
    if previous is None:
        raise ValueError(
            "the plan's sources changed and a state names its counts by position only; pass "
            "previous_sources=[the old names, in the old order] to carry each count over"
        )
    previous = list(previous)
    if len(previous) != len(s.counts) or len(set(previous)) != len(previous):
        raise ValueError(
            f"previous_sources names {len(previous)} sources for {len(s.counts)} saved counts; "
            "give the old config's source names, each once, in order"
        )
    saved = dict(zip(previous, s.counts))
    return [saved.get(name, 0) for name in names]
