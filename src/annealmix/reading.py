"""Reading what a stream of micro-batches names: each random-access source's
samples in one call per source, and each stream's items by draw number (draw ``d``
of a stream is its ``d``-th item). The torch loader, the Hugging Face path and the
Megatron dataset read through here."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from . import windows
from .packing import Packed
from .sources import Source, stream_items
from .stream import MicroBatch

__all__ = ["StreamReader", "read_grouped", "read_step"]


def read_grouped(
    sources: Sequence[Source], ids: np.ndarray, epochs: np.ndarray, indices: np.ndarray
) -> list[tuple[np.ndarray, np.ndarray, Any]]:
    """Samples at rows ``(ids, epochs, indices)``: ``(source id of each row, the rows,
    what was read)`` per read. Packed sources of one window shape (``Packed.form``)
    are read together in one pass (``annealmix.windows``: a step over thousands of
    files reads a window or two of hundreds of them), any other source in one
    ``Source.read`` of its own. (One pass in Python to group: micro-batches are
    small, and numpy's grouping costs more there.)"""
    rows: dict[int, list[int]] = {}
    for row, k in enumerate(np.asarray(ids).tolist()):
        rows.setdefault(k, []).append(row)
    packed: dict[tuple, list[int]] = {}
    parts = []
    for k, listed in rows.items():
        source = sources[k]
        if isinstance(source, Packed):
            packed.setdefault(source.form, []).append(k)
            continue
        at = np.array(listed, dtype=np.intp)
        parts.append((np.full(at.size, k), at, source.read(epochs[at], indices[at])))
    for members in packed.values():
        at = np.array([row for k in members for row in rows[k]], dtype=np.intp)
        which = np.repeat(np.arange(len(members)), [len(rows[k]) for k in members])
        got = windows.read([sources[k] for k in members], which, epochs[at], indices[at])
        parts.append((np.array(members).take(which), at, got))
    return parts


def read_step(
    readers: dict[int, StreamReader], micro_batches: Sequence[MicroBatch]
) -> dict[int, dict[int, Any]]:
    """Each stream's items at the draws of ``micro_batches`` (one step's, in order),
    by source id and draw."""
    got = {}
    for k, reader in readers.items():
        wanted = np.concatenate([mb.draws[mb.sources == k] for mb in micro_batches] or [[]])
        got[k] = reader.read(np.sort(wanted).astype(np.int64).tolist())
    return got


class StreamReader:
    """Draw ``d`` of a stream is its ``d``-th item: read forward, keep what is asked.

    The items of the last read are kept, so that a one-shot iterator resumed a step
    back (a loop that stopped inside a step) serves them again.
    """

    def __init__(self, source: Any, start: int, name: str = "stream") -> None:
        self._it, self._next = stream_items(source, start)
        self.name = name
        self._last: dict[int, Any] = {}
        if self._next < start:
            self.read([start - 1], keep=False)

    def skip_to(self, start: int) -> None:
        """Read on to draw ``start`` if the reader stands before it."""
        if start > self._next:
            self.read([start - 1], keep=False)

    def read(self, draws: list[int], keep: bool = True) -> dict[int, Any]:
        """Items at ``draws`` (increasing; earlier ones only from the last read)."""
        out = {}
        for d in draws:
            if d < self._next:
                if d not in self._last:
                    raise RuntimeError(
                        f"stream item {d} was asked after item {self._next - 1} was read; a "
                        "one-shot source (a generator) cannot go back: pass a re-iterable one "
                        "(an IterableDataset, or a class whose __iter__ makes a new generator)"
                    )
                out[d] = self._last[d]
                continue
            try:
                while self._next < d:
                    next(self._it)
                    self._next += 1
                item = next(self._it)
            except StopIteration:
                raise ValueError(
                    f"stream source {self.name!r} ended after {self._next} rows, before row "
                    f"{d} that the plan draws; give it more data, a lower weight, or fewer steps"
                ) from None
            self._next = d + 1
            if keep:
                out[d] = item
        if keep:
            self._last = out
        return out
