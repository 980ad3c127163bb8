"""A run of global batches as arrays, and how a step's counts are laid out over its
positions."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ._counting import SOURCE_DTYPE

__all__ = ["Batch", "Layout", "draws_in_order", "layout"]

_GOLDEN = (5**0.5 - 1) / 2
_COMPARE_MAX = 16


@dataclass(frozen=True, kw_only=True, slots=True)
class Batch:
    """Steps ``start_step .. start_step + len(sources) - 1`` of the global stream
    (or of one rank's columns of it).

    Args:
        start_step: the first step held.
        sources: source id per position (int16), shape (num_steps, positions).
        draws: draw number within its source per position, same shape.
        first_draws: each source's first draw number in the steps held (its draws
            there run on from it), shape (num_sources,).
        indices: sample index within its source, same shape as ``sources``; ``None``
            until ``annealmix.order.indexed`` (or a ``Stream``) maps the draws, and
            for a plan without source sizes.
        deficits: what a walking plan carries from step to step besides counts
            (``Point.deficits``), before each step held and after the last;
            ``None`` for a plan whose counts alone say where it stands.
    """

    start_step: int
    sources: np.ndarray
    draws: np.ndarray
    first_draws: np.ndarray
    indices: np.ndarray | None = None
    deficits: object = None

    def tokens(self, n: int, lengths=None) -> np.ndarray:
        """Tokens of each of ``n`` sources in each step held, shape (steps, n): each
        sample's from its source's ``lengths`` (by sample index), else one."""
        tokens = np.ones(self.sources.shape, dtype=np.int64)
        for k in np.unique(self.sources).tolist() if lengths else ():
            at = self.sources == k
            tokens[at] = lengths[k][self.indices[at]]
        rows = np.arange(tokens.shape[0])[:, None] * n
        flat = np.bincount((rows + self.sources).ravel(), weights=tokens.ravel(),
                           minlength=tokens.shape[0] * n)  # fmt: skip
        return flat.astype(np.int64).reshape(-1, n)


class Layout:
    """Counts per step and source -> (source, draw) per position, for batches of B.

    Element ``e`` of a step (sources laid out one after another) goes to the
    position whose golden-ratio point is the e-th smallest: a contiguous run of
    positions then samples every source's block evenly (three-gap theorem).
    """

    def __init__(self, batch: int) -> None:
        self.batch = batch
        ranks = np.argsort(np.argsort((np.arange(batch) * _GOLDEN) % 1.0, kind="stable"))
        ranks.flags.writeable = False
        self.element_at = ranks

    def __call__(self, counts: np.ndarray, prev: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A position's source is the block its element falls in, and its draw is the
        block's first draw plus the element's offset into the block."""
        steps, n = counts.shape
        ends = np.cumsum(counts, axis=1)
        element = self.element_at
        if n <= _COMPARE_MAX:  # n - 1 compares over the batch beat a gather
            sources = np.zeros((steps, self.batch), dtype=SOURCE_DTYPE)
            for k in range(n - 1):
                sources += element >= ends[:, k, None]
        else:
            ids = np.tile(np.arange(n, dtype=SOURCE_DTYPE), steps)
            sources = np.repeat(ids, counts.ravel()).reshape(steps, -1)[:, element]
        first_draw = np.cumsum(counts, axis=0) - counts + prev
        offset = first_draw - (ends - counts)
        draws = offset.ravel().take(sources + np.arange(0, steps * n, n)[:, None])
        draws += element
        return sources, draws


@lru_cache(maxsize=16)
def layout(batch: int) -> Layout:
    """The ``Layout`` of batches of ``batch``, built once per process and size (it is
    read-only, so plans of one batch size share it)."""
    return Layout(batch)


def draws_in_order(sources: np.ndarray, prev: np.ndarray, n: int) -> np.ndarray:
    """Draw numbers when positions are consumed in stream order: each source's
    positions, in order, are numbered on from ``prev``."""
    flat = sources.ravel()
    draws = np.empty(flat.size, dtype=np.int64)
    if n <= _COMPARE_MAX:  # one scan per source beats a sort
        for k in range(n):
            where = np.flatnonzero(flat == k)
            draws[where] = prev[k] + np.arange(where.size)
    else:  # a stable sort by source puts each source's positions in one run
        by_source = np.argsort(flat, kind="stable")
        totals = np.bincount(flat, minlength=n)
        first = prev - (np.cumsum(totals) - totals)  # draw = first[k] + rank in sorted order
        draws[by_source] = np.arange(flat.size) + first.take(flat.take(by_source))
    return draws.reshape(sources.shape)
