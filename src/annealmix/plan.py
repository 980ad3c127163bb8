"""The plan: a pure function (mixture, batch size, seed, step) -> the global batch.

Position ``j`` of step ``t`` (``t * B + j`` in the global stream) holds one draw from
one source: ``(source id, draw number)``; the source's order maps the draw number to
a sample index. Nothing per sample is stored: any step is computed on demand.

What a plan counts is its ``mode``, one counter chosen once (``annealmix._counting``):

- ``"exact"`` (default): per-source counts ``C_k(t)`` stay within one sample of the
  plan's targets (one half for two sources). Within a step the sources are spread
  evenly over the batch, so any contiguous slice of it (a rank's or a
  micro-batch's share) is close to the mixture too.
- ``"random"``: the post's sampler: every position draws its source independently
  with probabilities w(t), from a counter-based hash of (seed, position).
- ``"tokens"``: weights count tokens over samples of varying length (``lengths``):
  every source's tokens stay near its token target (``annealmix.tokens``).
- ``"online"``, ``"online tokens"``: weights that change during training, from a
  weight log (``annealmix.online``), in samples or in tokens. The log is not part
  of the plan: a stream owns it (a commit appends to it), and every lookup of an
  online plan takes it (``log=``, a ``WeightLog`` or its entries).

The last three *walk*: a step's counts depend on the deficits carried in, so where
a walk stands is a ``Point`` (step, counts, deficits) that a stream's state carries.

A ``Plan`` is an immutable value: hashable, equal to any plan with the same
fingerprint, thread-safe, and small to pickle (it pickles as its arguments). It
keeps private caches of its replays (a plan looked up again walks on), under a lock.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np

from . import _validate
from ._counting import Q_BITS, SOURCE_DTYPE, Memo, Point, Q, counter_for
from .batch import Batch, draws_in_order, layout
from .mixture import Mixture
from .order import ORDERS, range_indices
from .ramp import BatchSizes, Stretched, planned
from .weightlog import Tilted, WeightLog

__all__ = ["MODES", "ORDERS", "Batch", "Plan", "Point"]

MODES = ("exact", "random", "tokens", "online", "online tokens")
_WALKS = ("tokens", "online", "online tokens")
_ONLINE = ("online", "online tokens")
_LENGTHS = ("tokens", "online tokens")
# The global stream's algorithm: a new value changes every user's data, on purpose;
# each ships in one release (named when a state of another is refused).
ALGORITHM, RELEASES = 2, {1: "0.1", 2: "0.2"}
_MAX_BATCH = 1 << 22
# The parts of a plan a state names, in the order messages list them.
PARTS = ("sources", "weights", "phases", "global_batch_size", "seed", "mode", "sizes", "orders",
         "algorithm", "corpora")  # fmt: skip


def digest(value: Any) -> str:
    """A part's fingerprint: 16 hex digits of the SHA-256 of its JSON."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


class Plan:
    """Which sample of which source fills every position of every global batch.

    Args:
        mixture: the weights w(step) (online: the schedule a log tilts).
        global_batch_size: B, samples per optimizer step across all ranks; or a
            ``BatchSizes`` (a batch-size ramp): the plan then counts in *plan steps*
            of its ``unit`` samples, ``global_batch_size`` is that unit, ``mixture``
            the given one stretched over plan steps, and ``batch_sizes`` converts
            (``annealmix.ramp``).
        seed: keys every random choice (random mode, shuffles); in [0, 2**64).
        mode: what the plan counts, one of ``MODES`` (see the module doc).
        sizes: samples per source, by name; needed for sample indices and epochs
            (token modes take them from ``lengths``).
        order: ``"shuffle"`` (without replacement), ``"replacement"`` or
            ``"sequential"``; one for all sources or a dict by source name.
        lengths: token modes: each source's tokens per sample, by name (an integer
            array over its sample indices, every entry >= 1; its length is the
            source's size).
        corpora: exact mode: source names by corpus (``read_file_list`` gives them):
            a corpus is counted within one sample, its sources within 1.68 by a closed
            form, so a lookup costs what the corpora's does (``_counting.grouped``).

    Attributes:
        fingerprints: a 64-bit hash (hex) of each part of the plan (``PARTS``), which
            a stream's state carries so that a refusal can name what changed.
        fingerprint: a hash of them all: equal fingerprints, equal streams.
        batch_sizes: the ramp (``BatchSizes``), or ``None`` where every step has B.
        lengths: token modes: the arrays (int32, read-only) in source order, else ``None``.
    """

    __slots__ = ("mixture", "global_batch_size", "seed", "mode", "sizes", "orders", "lengths",
                 "corpora", "fingerprints", "fingerprint", "_lengths_digest", "_counter", "_layout",
                 "_memo", "_lock", "_walks", "_prints")  # fmt: skip

    def __init__(
        self,
        mixture: Mixture | Stretched,
        *,
        global_batch_size: int | BatchSizes,
        seed: int = 0,
        mode: str = "exact",
        sizes: Mapping[str, int] | None = None,
        order: str | Mapping[str, str] = "shuffle",
        lengths: Mapping[str, Any] | None = None,
        corpora: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        mixture, global_batch_size = planned(mixture, global_batch_size)
        if not isinstance(mixture, (Mixture, Stretched)):
            raise TypeError(f"mixture must be an annealmix.Mixture, got {type(mixture).__name__}")
        if mixture.num_sources > np.iinfo(SOURCE_DTYPE).max:
            raise ValueError(
                f"a plan holds at most {np.iinfo(SOURCE_DTYPE).max} sources, the mixture has "
                f"{mixture.num_sources}; merge small sources into one"
            )
        batch = _validate.integer("global_batch_size", global_batch_size, minimum=1)
        if batch > _MAX_BATCH:
            raise ValueError(f"global_batch_size must be <= {_MAX_BATCH}, got {global_batch_size}")
        seed = _validate.integer("seed", seed, minimum=0)
        if seed >= 1 << 64:  # keys are 64-bit: a larger seed would alias a smaller one
            raise ValueError(f"seed must be < 2**64, got {seed}; use seed % 2**64 or a new seed")
        mode = _validate.choice("mode", mode, MODES)
        names = mixture.sources
        orders = {n: order for n in names} if isinstance(order, str) else dict(order)
        for name in sorted(set(orders) - set(names)):
            _validate.choice("source in order:", name, names)
        put = object.__setattr__
        put(self, "mixture", mixture)
        put(self, "global_batch_size", batch)
        put(self, "seed", seed)
        put(self, "mode", mode)
        put(self, "orders", tuple(
            _validate.choice(f"order for source {n!r}", orders.get(n, "shuffle"), ORDERS)
            for n in names
        ))  # fmt: skip
        found = _validate.sizes_or_lengths(mode, mode in _LENGTHS, sizes, lengths, names)
        for name, value in zip(("sizes", "lengths", "_lengths_digest"), found):
            put(self, name, value)
        if mode in _ONLINE and self.sizes is None:
            raise ValueError(f'mode = "{mode}" needs sizes={{name: samples}} (or lengths=)')
        put(self, "corpora", _validate.corpora(corpora, names, mode))
        fingerprints = self._fingerprints(WeightLog(names))
        put(self, "fingerprints", fingerprints)
        put(self, "fingerprint", digest(dict(fingerprints)))
        put(self, "_layout", layout(batch))
        put(self, "_lock", threading.RLock())
        put(self, "_walks", {})  # an online plan's counter and memo per log (its digest)
        put(self, "_prints", {})  # its fingerprints under the last log asked for
        put(self, "_counter", self._build(()))
        put(self, "_memo", Memo())

    def _build(self, entries: tuple):
        """The counter of this plan, of an online one under log ``entries``."""
        walked = Tilted(self.mixture, entries) if self.online else self.mixture
        longest = None if self.lengths is None else tuple(int(a.max()) for a in self.lengths)
        ids = {name: k for k, name in enumerate(self.mixture.sources)}.__getitem__
        corpora = tuple(tuple(map(ids, names)) for names in (self.corpora or {}).values())
        return counter_for(self.mode, walked, self.global_batch_size, seed=self.seed,
                           lengths_of=self._lengths_of, longest=longest,
                           corpora=corpora)  # fmt: skip

    @property
    def batch_sizes(self) -> BatchSizes | None:
        """The batch-size ramp the plan counts under, or ``None``."""
        return self.mixture.batch_sizes if isinstance(self.mixture, Stretched) else None

    def plan_steps(self, step: int) -> int:
        """Plan steps before optimizer step ``step``: ``step`` itself without a ramp."""
        ramp = self.batch_sizes
        return step if ramp is None else ramp.plan_steps(step)

    def weight_log(self, log: WeightLog | Sequence[tuple[int, Any]] | None = None) -> WeightLog:
        """``log`` as a checked ``WeightLog`` over this plan's sources (an online plan
        takes one; ``None``: empty). Lookups take entries too, checked on every call:
        for many lookups under one log, check it once with this and pass the result."""
        if not self.online:
            if log is not None and len(log):
                raise ValueError(
                    f'a weight log needs an online plan (mode "online" or "online tokens"); '
                    f'this plan is in mode "{self.mode}"'
                )
            return WeightLog(self.mixture.sources)
        if isinstance(log, WeightLog) and log.schedule == self.mixture:
            return log
        return WeightLog(self.mixture.sources, () if log is None else log, schedule=self.mixture)

    def _walk(self, log) -> tuple:
        """The counter and memo of a lookup under ``log`` (held with the lock)."""
        if log is None or (isinstance(log, WeightLog) and not log.entries):
            return self._counter, self._memo
        log = self.weight_log(log)
        if not log.entries:
            return self._counter, self._memo
        walk = self._walks.get(log.digest)
        if walk is None:
            if len(self._walks) >= 4:  # a few recent logs: a stream's and its metrics'
                del self._walks[next(iter(self._walks))]
            walk = self._walks[log.digest] = (self._build(log.entries), Memo())
        return walk

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"a Plan is immutable; build a new one to change {name!r}")

    def __reduce__(self):
        return _rebuild, (self.mixture, self._arguments())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Plan) and other.fingerprint == self.fingerprint

    def __hash__(self) -> int:
        return hash(self.fingerprint)

    def __repr__(self) -> str:
        return (
            f"Plan(sources={list(self.mixture.sources)}, global_batch_size="
            f"{self.batch_sizes or self.global_batch_size}, seed={self.seed}, mode={self.mode!r}, "
            f"fingerprint={self.fingerprint!r})"
        )

    def _arguments(self) -> dict[str, Any]:
        """What the constructor takes besides the mixture (pickling, ``replace``)."""
        names = self.mixture.sources
        out = {"global_batch_size": self.global_batch_size, "seed": self.seed, "mode": self.mode,
               "order": dict(zip(names, self.orders)),
               "corpora": None if self.corpora is None else dict(self.corpora)}  # fmt: skip
        if self.lengths is not None:
            return out | {"lengths": dict(zip(names, self.lengths))}
        return out | {"sizes": None if self.sizes is None else dict(zip(names, self.sizes))}

    def replace(self, **changes: Any) -> Plan:
        """This plan with some constructor arguments changed (``mode=``, ``seed=``, ...)."""
        return Plan(self.mixture, **(self._arguments() | changes))

    def fingerprints_for(self, log: WeightLog | Sequence | None) -> Mapping[str, str]:
        """The fingerprint of each part of the plan (``PARTS``) under ``log``: an
        online plan's log is part of its phases (an edited log is refused)."""
        if log is None or not len(log):
            return self.fingerprints
        log = self.weight_log(log)  # refused for a plan that takes none
        with self._lock:
            known = self._prints.get(log.digest)
            if known is None:  # a stream asks again at every state: keep the last log's
                known = self._fingerprints(log)
                self._prints.clear()
                self._prints[log.digest] = known
        return known

    def _fingerprints(self, log: WeightLog) -> Mapping[str, str]:
        spec = self.spec()
        phases = spec["mixture"]["phases"]
        if self.online:
            phases = {"phases": phases, "log": log.to_list()}
        parts = {
            "sources": list(self.mixture.sources),
            "weights": spec["mixture"]["weights"],
            "phases": phases,
            **{k: spec[k] for k in PARTS[3:]},
        }
        return MappingProxyType({k: digest(v) for k, v in parts.items()})

    def spec(self) -> dict[str, Any]:
        """Everything that decides the stream, as plain JSON-able values."""
        sizes = None if self.sizes is None else list(self.sizes)
        ramp = self.batch_sizes
        return {
            "mixture": self.mixture.to_dict(),
            "global_batch_size": self.global_batch_size if ramp is None else ramp.spec(),
            "seed": self.seed,
            "mode": self.mode,
            "sizes": {"samples": sizes, "lengths": self._lengths_digest} if self.walks else sizes,
            "orders": list(self.orders),
            "algorithm": ALGORITHM,
            "corpora": None if self.corpora is None else dict(self.corpora),
        }

    def changes(self, fingerprints: Mapping[str, Any], log=None) -> list[str]:
        """The parts (``PARTS``) whose fingerprints (under ``log``, online) differ
        from ``fingerprints``."""
        mine = self.fingerprints_for(log)
        return [k for k in PARTS if fingerprints.get(k) != mine[k]]

    @property
    def num_sources(self) -> int:
        return self.mixture.num_sources

    @property
    def walks(self) -> bool:
        """Whether a step's counts depend on deficits carried in (token and online
        modes): a ``Point`` then carries them."""
        return self.mode in _WALKS

    @property
    def online(self) -> bool:
        """Whether the plan follows a weight log (``"online"``, ``"online tokens"``)."""
        return self.mode in _ONLINE

    @property
    def longest(self) -> tuple[int, ...] | None:
        """Token modes: each source's longest sample, in tokens (the bound's ``M_k``)."""
        return None if self.lengths is None else self._counter.longest

    def deficit_bounds(self) -> list[tuple[int, int]]:
        """A walk's proven open bounds on each source's deficit (a saved one is checked)."""
        return self._counter.bounds()

    @property
    def replay_chunk(self) -> int:
        """Steps a replay computes at once: looking up steps in multiples of it, in
        order, adds no work."""
        return self._counter.chunk

    def start(self) -> Point:
        """Where every walk of the plan starts: step 0, no samples, no deficits."""
        zeros = np.zeros(self.num_sources, dtype=np.int64)
        return Point(0, zeros, (0,) * self.num_sources if self.walks else None)

    # -- counts -------------------------------------------------------------------

    def point(self, step: int, *, log=None) -> Point:
        """Where a walk of the plan stands before ``step``: counts (and deficits)."""
        step = _validate.integer("step", step, minimum=0)
        with self._lock:
            counter, memo = self._walk(log)
            return counter.point(step, memo)

    def consumed(self, step: int, *, log=None) -> np.ndarray:
        """Samples drawn from each source in steps [0, step), as int64 counts."""
        return self.point(step, log=log).counts.copy()

    def epochs(self, step: int, *, log=None) -> np.ndarray:
        """Passes over each source made by steps [0, step) (needs ``sizes``)."""
        if self.sizes is None:
            raise ValueError("epochs need source sizes: build the Plan with sizes={name: samples}")
        return self.consumed(step, log=log) / np.array(self.sizes)

    def _at(self, start: int, at: Point | np.ndarray | None, counter, memo) -> Point:
        """``at`` as the point before ``start``: counts alone make a point (a walking
        counter finds its deficits), none looks it up."""
        if at is None:
            return counter.point(start, memo)
        if isinstance(at, Point):
            if at.step != start:
                raise ValueError(f"the point given stands at step {at.step}, not at {start}")
            return at
        return Point(start, np.asarray(at, dtype=np.int64))

    def counts(
        self, start: int, num_steps: int = 1, at: Point | np.ndarray | None = None, *, log=None
    ) -> np.ndarray:
        """Samples of each source in each step of [start, start + num_steps), shape
        (num_steps, N). ``at`` (``self.point(start)``, or its counts) saves the lookup."""
        return self._rows(*_span(start, num_steps), at, log)[1]

    def _rows(self, start: int, num_steps: int, at, log):
        with self._lock:
            counter, memo = self._walk(log)
            at = self._at(start, at, counter, memo)
            cumulative, deficits = counter.range(at, num_steps, memo)
        per_step = np.diff(cumulative, axis=0, prepend=at.counts[None, :])
        return at, per_step, deficits

    def weights_at(self, step: int | np.ndarray, *, log=None) -> np.ndarray:
        """The weights the plan follows at ``step`` (online: the schedule tilted by the log)."""
        with self._lock:
            counter = self._walk(log)[0]
        return counter.targets.mixture.weights_at(step)

    def targets(self, step: int, *, log=None) -> np.ndarray:
        """Scheduled cumulative samples (tokens, in token modes) per source through
        ``step``, as floats."""
        step = _validate.integer("step", step, minimum=0)
        if self.lengths is not None:  # the tokens drawn plus what each source is owed
            drawn, after = self.tokens(step + 1, log=log), self.point(step + 1, log=log)
            return np.array([t + d / Q for t, d in zip(drawn.tolist(), after.deficits)])
        with self._lock:
            counter, memo = self._walk(log)
            u = counter.targets.before(step + 1, memo)
        return np.array([self.global_batch_size * x / (1 << Q_BITS) for x in u])

    # -- tokens -------------------------------------------------------------------

    def _lengths_of(self, k: int, first: int, count: int) -> np.ndarray:
        """Tokens of draws ``first .. first + count - 1`` of source ``k``."""
        if self.lengths is None:  # every sample counts one (online in samples)
            return np.ones(count, dtype=np.int64)
        out = np.empty(count, dtype=np.int64)
        range_indices(self.orders[k], first, out, size=self.sizes[k], seed=self.seed, source_id=k)
        return self.lengths[k].take(out).astype(np.int64)

    def tokens(self, step: int, *, log=None) -> np.ndarray:
        """Token modes: tokens drawn from each source in steps [0, step), as int64.
        A later step than the last call's adds only the draws since."""
        if self.lengths is None:
            raise ValueError(f'tokens are counted in token modes; this plan is in "{self.mode}"')
        counts = self.consumed(step, log=log)
        with self._lock:
            memo = self._walk(log)[1]
            known = memo.tokens_at
        if known is None or (known[0] > counts).any():
            known = (np.zeros_like(counts), np.zeros_like(counts))
        out = known[1].copy()
        block = 1 << 20
        for k, (a, b) in enumerate(zip(known[0].tolist(), counts.tolist())):
            for c in range(a, b, block):
                out[k] += int(self._lengths_of(k, c, min(block, b - c)).sum())
        with self._lock:
            memo.tokens_at = (counts, out.copy())
        return out

    def step_tokens(self, batch: Batch) -> np.ndarray:
        """Tokens of each source in each step of ``batch`` (with sample indices, as a
        ``Stream`` gives them), shape (steps, N); a sample counts one without lengths."""
        if batch.indices is None:
            raise ValueError("step_tokens needs sample indices: take the batch from a Stream")
        return batch.tokens(self.num_sources, self.lengths)

    # -- batches ------------------------------------------------------------------

    def batch(self, step: int) -> Batch:
        """The global batch of one step (sources and draws)."""
        return self.batches(step, 1)

    def batches(
        self,
        start: int,
        num_steps: int,
        at: Point | np.ndarray | None = None,
        *,
        draw_offset: np.ndarray | None = None,
        log=None,
    ) -> Batch:
        """The global batches of steps [start, start + num_steps): each position's
        source and draw number (``annealmix.indexed`` adds sample indices).

        ``at`` (``self.point(start)``, or its counts) saves the lookup. ``draw_offset``
        is added to each source's draw numbers: a re-planned run continues every
        source from the draws of the plan it replaced (a walking plan takes none: it
        continues from the saved counts themselves). A walking plan's batch carries
        its deficits (``Batch.deficits``). An online plan's lookups take its ``log``.
        """
        if self.walks and draw_offset is not None:
            raise ValueError(f'a plan in mode "{self.mode}" takes no draw_offset; re-plan '
                             "from the saved counts")  # fmt: skip
        start, num_steps = _span(start, num_steps)
        if self._counter.lays_out:
            at, counts, deficits = self._rows(start, num_steps, at, log)
            sources, draws = self._layout(counts, at.counts)
        else:  # each position's source drawn by the counter itself
            with self._lock:
                at = self._at(start, at, self._counter, self._memo)
            sources = self._counter.sources(start, start + num_steps)
            draws, deficits = draws_in_order(sources, at.counts, self.num_sources), None
        prev = at.counts
        if draw_offset is not None:
            draw_offset = np.asarray(draw_offset, dtype=np.int64)
            draws += draw_offset.take(sources)
            prev = prev + draw_offset
        return Batch(start_step=start, sources=sources, draws=draws, first_draws=prev,
                     deficits=deficits)  # fmt: skip


def _rebuild(mixture: Mixture, arguments: dict[str, Any]) -> Plan:
    return Plan(mixture, **arguments)


def _span(start: int, num_steps: int) -> tuple[int, int]:
    return (_validate.integer("start", start, minimum=0),
            _validate.integer("num_steps", num_steps, minimum=1))  # fmt: skip
