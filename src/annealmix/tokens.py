"""Weights in tokens over samples of varying length: ``TokenPlan``.

A packed source's samples are windows of one length, so its token share is its
sample share and the ordinary ``Plan`` is exact in tokens. Unpacked documents
(``annealmix.packing.Padded``, fine-tuning data) hold different numbers of tokens:
a ``TokenPlan`` reads each sample's length and keeps every source's cumulative
tokens near its token target at every step (the bound and its proof:
``annealmix._counts.Tokens``). It is a ``Plan`` in every other respect (batches,
draws, sample indices, streams, shards, states), with one difference a user sees:
a step's counts depend on the lengths of every sample before it, so a stream's
state carries the per-source deficits that make a resume O(1), and a cold lookup
of step t replays the steps before it (``benchmarks/bench_tokens.py`` measures it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from . import _validate
from ._counts import Cursor, Q, Tokens
from .mixture import Mixture
from .order import range_indices
from .plan import Batch, Plan, refuse_counts

__all__ = ["TokenPlan"]


class TokenPlan(Plan):
    """A plan whose weights count tokens, over samples of varying length.

    Args:
        mixture: the weights w(step), as token shares.
        global_batch_size: B, samples per optimizer step across all ranks.
        lengths: each source's tokens per sample, by name: an integer array over
            its sample indices, every entry >= 1 (``Padded.sample_tokens()``, or
            a constant array for windows). Its length is the source's size.
        seed: as for ``Plan``.
        order: as for ``Plan``.

    Attributes:
        lengths: the arrays (int32: 4 bytes per sample, the plan's only memory per
            sample), read-only, in the plan's source order.
    """

    __slots__ = ("lengths", "_digest")

    def __init__(
        self,
        mixture: Mixture,
        *,
        global_batch_size: int,
        lengths: Mapping[str, Any],
        seed: int = 0,
        order: str | Mapping[str, str] = "shuffle",
    ) -> None:
        if not isinstance(mixture, Mixture):
            raise TypeError(f"mixture must be an annealmix.Mixture, got {type(mixture).__name__}")
        put = object.__setattr__
        arrays = _put_lengths(self, lengths, mixture.sources)
        super().__init__(
            mixture,
            global_batch_size=global_batch_size,
            seed=seed,
            sizes={n: a.size for n, a in zip(mixture.sources, arrays)},
            order=order,
        )
        put(self, "mode", "tokens")
        put(self, "_counter", self._walk(mixture))

    def _arguments(self) -> dict[str, Any]:
        out = super()._arguments()
        del out["mode"], out["sizes"]  # the lengths give the sizes; the mode is tokens
        return out | {"lengths": dict(zip(self.mixture.sources, self.lengths))}

    def __repr__(self) -> str:
        return super().__repr__().replace("Plan(", "TokenPlan(", 1)

    def spec(self) -> dict[str, Any]:
        out = super().spec()
        out["mode"] = "tokens"
        out["sizes"] = {"samples": out["sizes"], "lengths": self._digest}
        return out

    def _walk(self, walked) -> Tokens:
        """The token walk over ``walked`` (a mixture, or an online plan's tilted one)."""
        longest = tuple(int(a.max()) for a in self.lengths)
        return Tokens(walked, self.global_batch_size, self._lengths_of, longest)

    @property
    def initial_carry(self) -> tuple[int, ...]:
        return (0,) * self.num_sources

    @property
    def longest(self) -> tuple[int, ...]:
        """Each source's longest sample, in tokens (the bound's ``M_k``)."""
        return getattr(self._counter, "longest", (1,) * self.num_sources)

    def _lengths_of(self, k: int, first: int, count: int) -> np.ndarray:
        if self.lengths is None:  # every sample counts one (an online plan in samples)
            return np.ones(count, dtype=np.int64)
        out = np.empty(count, dtype=np.int64)
        range_indices(self.orders[k], first, out, size=self.sizes[k], seed=self.seed, source_id=k)
        return self.lengths[k].take(out).astype(np.int64)

    def tokens(self, step: int, *, cursor: Cursor | None = None) -> np.ndarray:
        """Tokens drawn from each source in steps [0, step), as int64. With a cursor,
        a later step adds only the draws since its last call."""
        cursor = Cursor() if cursor is None else cursor
        counts = self.consumed(step, cursor=cursor)
        known = cursor.tokens_at
        if known is None or (known[0] > counts).any():
            known = (np.zeros_like(counts), np.zeros_like(counts))
        out = known[1].copy()
        block = 1 << 20
        for k, (a, b) in enumerate(zip(known[0].tolist(), counts.tolist())):
            for c in range(a, b, block):
                out[k] += int(self._lengths_of(k, c, min(block, b - c)).sum())
        cursor.tokens_at = (counts, out.copy())
        return out

    def step_tokens(self, batch: Batch) -> np.ndarray:
        """Tokens of each source in each step of ``batch`` (with sample indices, as a
        ``Stream`` gives them), shape (steps, N)."""
        if batch.indices is None:
            raise ValueError("step_tokens needs sample indices: take the batch from a Stream")
        tokens = np.ones(batch.sources.shape, dtype=np.int64)
        for k, lengths in enumerate(self.lengths or ()):
            at = batch.sources == k
            tokens[at] = lengths[batch.indices[at]]
        rows = np.arange(tokens.shape[0])[:, None] * self.num_sources
        flat = np.bincount((rows + batch.sources).ravel(), weights=tokens.ravel(),
                           minlength=tokens.shape[0] * self.num_sources)  # fmt: skip
        return flat.astype(np.int64).reshape(-1, self.num_sources)

    def targets(self, step: int) -> np.ndarray:
        """Scheduled cumulative tokens per source through ``step`` (floats)."""
        step = _validate.integer("step", step, minimum=0)
        cursor = Cursor()
        drawn = self.tokens(step + 1, cursor=cursor)
        deficits = cursor.deficits_at[2]
        return np.array([t + d / Q for t, d in zip(drawn.tolist(), deficits)])

    def check_consumed(
        self,
        step: int,
        consumed: np.ndarray,
        carry: tuple[int, ...] | None,
        cursor: Cursor,
    ) -> None:
        """A saved token walk is checked, not replayed: its counts must add up to the
        step's samples and its deficits must sum to zero within the proven bounds;
        then the cursor walks on from it."""
        n = self.num_sources
        self.check_total(step, consumed)
        if carry is None:
            refuse_counts(step, "it has no deficits, which the state of a walking plan carries")
        if len(carry) != n or sum(carry) != 0:
            refuse_counts(step, f"its deficits {list(carry)} do not sum to zero over {n} sources")
        for k, (d, (low, high)) in enumerate(zip(carry, self._counter.bounds())):
            if not low < d < high:
                name = self.mixture.sources[k]
                refuse_counts(step, f"source {name!r}'s deficit is out of bounds")
        cursor.at(step, consumed, tuple(carry))


def _put_lengths(plan: Plan, lengths: Mapping[str, Any], names: tuple[str, ...]):
    """Checked lengths onto ``plan``, with the digest its spec names; returns them."""
    arrays = _check_lengths(lengths, names)
    digest = hashlib.blake2b(digest_size=8)
    for a in arrays:
        digest.update(np.int64(a.size).tobytes())
        digest.update(a.tobytes())
    object.__setattr__(plan, "lengths", arrays)
    object.__setattr__(plan, "_digest", digest.hexdigest())
    return arrays


def _check_lengths(lengths: Mapping[str, Any], names: tuple[str, ...]) -> tuple[np.ndarray, ...]:
    if not isinstance(lengths, Mapping):
        raise TypeError(f"lengths must map source names to arrays of tokens per sample, got "
                        f"{type(lengths).__name__}")  # fmt: skip
    for name in lengths:
        if name not in names:
            _validate.choice("source in lengths:", name, names)
    out = []
    for name in names:
        if name not in lengths:
            raise ValueError(
                f"lengths has no entry for source {name!r}; give every source its tokens per sample"
            )
        a = np.asarray(lengths[name])
        if a.ndim != 1 or a.size == 0 or not np.issubdtype(a.dtype, np.integer):
            raise ValueError(
                f"lengths of source {name!r} must be a non-empty 1-D integer array (tokens per "
                f"sample), got shape {a.shape} and dtype {a.dtype}"
            )
        low, high = int(a.min()), int(a.max())
        if low < 1 or high >= 1 << 31:
            i = int(np.argmin(a) if low < 1 else np.argmax(a))
            raise ValueError(
                f"lengths of source {name!r}: sample {i} holds {a[i]} tokens; every sample "
                "needs at least one and fewer than 2**31 (drop empty documents)"
            )
        a = a.astype(np.int32, copy=True)  # 4 bytes per sample
        a.flags.writeable = False
        out.append(a)
    return tuple(out)
