"""Packed windows, computed for one source or for hundreds at once.

``annealmix.packing.Packed`` says what its windows are (epochs of permuted
documents as one endless token stream; window ``w`` is its tokens
``[w S, w S + S + 1)``). This module computes them. A step of a run over
thousands of files reads a window or two from each of hundreds of ``Packed``
sources; read source by source, each read costs dozens of small numpy calls (0.4 ms
measured: 100 ms a step of 256 windows from 4,000 files). Here the arithmetic (the
windows' epochs and spans, the blocks of permuted documents, the document
permutation, the pieces of documents each window holds) runs once over every
source's windows together; only the files are read source by source: each source's
documents' places and lengths, then its pieces' tokens (``Documents.spans``,
``Documents.place``). ``Packed.read`` is the same computation for one source.

Sources read together share one window shape (``Packed.form``: ``seq_len``, the
output and the sample-dict switches); ``annealmix.reading.read_grouped`` groups them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .order import shuffled
from .sample_dict import attention_mask

__all__ = ["pieces", "read", "read_windows"]

BLOCK = 64  # permuted documents per entry of an epoch's table


def read(sources: Sequence[Any], which: np.ndarray, epochs: np.ndarray, indices: np.ndarray) -> Any:
    """Windows ``indices`` of blocks ``epochs`` of sources ``sources[which]`` (one
    ``Packed.form``), each row what ``sources[which[row]].read`` reads for it,
    stacked in row order."""
    which = np.asarray(which, dtype=np.intp).ravel()
    epochs = np.asarray(epochs, dtype=np.int64).ravel()
    indices = np.asarray(indices, dtype=np.int64).ravel()
    k = np.array([len(s) for s in sources], dtype=np.int64).take(which)
    bad = (epochs < 0) | (indices < 0) | (indices >= k)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise IndexError(
            f"{sources[which[row]].name}: window {int(indices[row])} of epoch {int(epochs[row])} "
            f"is out of range ({int(k[row])} windows per epoch)"
        )
    return read_windows(sources, which, epochs * k + indices)


def read_windows(sources: Sequence[Any], which: np.ndarray, ws: np.ndarray) -> Any:
    """Windows ``ws`` of the endless streams of sources ``sources[which]``, stacked: an
    ``(n, seq_len + 1)`` token array, or a dict of ``(n, seq_len)`` arrays (the
    sources' ``output``)."""
    first = sources[0]
    window, owner, ids, _, counts, firsts = pieces(sources, which, ws)
    tokens = _gather(sources, owner, ids, firsts, counts)
    tokens = tokens.reshape(np.size(ws), first.seq_len + 1)
    if first.output == "tokens":
        return tokens
    return fields(tokens, window, counts, first)


def pieces(sources: Sequence[Any], which: np.ndarray, ws: np.ndarray) -> tuple[np.ndarray, ...]:
    """The document pieces windows ``ws`` of ``sources[which]`` read, in order: the
    window (its place in ``ws``), its source (a place in ``sources``), the document,
    its first token read, how many tokens, and where the first lies in its file."""
    which = np.asarray(which, dtype=np.intp).ravel()
    ws = np.asarray(ws, dtype=np.int64).ravel()
    if (ws < 0).any():
        row = int(np.flatnonzero(ws < 0)[0])
        raise ValueError(f"{sources[which[row]].name}: windows must be >= 0, got {int(ws[row])}")
    s = sources[0].seq_len
    t = np.array([x.num_tokens for x in sources], dtype=np.int64)
    d = np.array([len(x.documents) for x in sources], dtype=np.int64)
    tw = t.take(which)
    epoch, start = np.divmod(ws * s, tw)
    stop = start + s + 1
    over = np.flatnonzero(stop > tw)  # these windows go on into the next epoch
    # Spans of one epoch's concatenation: each window's own, then its overflow.
    n = ws.size
    span_window = np.concatenate([np.arange(n), over])
    span_source = which.take(span_window)
    span_epoch = np.concatenate([epoch, epoch.take(over) + 1])
    span_start = np.concatenate([start, np.zeros(over.size, dtype=np.int64)])
    span_stop = np.concatenate([np.minimum(stop, tw), stop.take(over) - tw.take(over)])
    b0, b1, before = _blocks(sources, t, span_source, span_epoch, span_start, span_stop)
    # The permuted documents of the blocks each span reaches, span after span.
    lo, hi = b0 * BLOCK, np.minimum(b1 * BLOCK, d.take(span_source))
    sizes = hi - lo
    span = np.repeat(np.arange(span_window.size), sizes)
    heads = np.cumsum(sizes) - sizes
    positions = np.repeat(lo - heads, sizes) + np.arange(int(sizes.sum()))
    owner = span_source.take(span)
    size = d.take(owner)
    keys = np.array([x.shuffle_key for x in sources], dtype=np.uint64).take(owner)
    ids = shuffled(size, keys, span_epoch.take(span) * size + positions)
    firsts, lengths = _spans(sources, owner, ids)
    total = np.cumsum(lengths)
    ends = total - np.repeat(total.take(heads) - lengths.take(heads) - before, sizes)
    begins = ends - lengths  # each document's place in its epoch's concatenation
    keep = (ends > span_start.take(span)) & (begins < span_stop.take(span))
    span, owner, ids, begins, ends, firsts = (
        a[keep] for a in (span, owner, ids, begins, ends, firsts)
    )
    offsets = np.maximum(span_start.take(span) - begins, 0)
    counts = np.minimum(ends, span_stop.take(span)) - begins - offsets
    # Window order, a window's own span before its overflow; a span's pieces are
    # already in order, and the stable sort keeps them so.
    order = np.argsort(span_window.take(span) * 2 + (span >= n), kind="stable")
    return (span_window.take(span.take(order)), owner.take(order), ids.take(order),
            offsets.take(order), counts.take(order), (firsts + offsets).take(order))  # fmt: skip


def _blocks(
    sources: Sequence[Any], t: np.ndarray, source: np.ndarray, epoch: np.ndarray,
    start: np.ndarray, stop: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Per span (tokens ``[start, stop)`` of an epoch of a source): the blocks of
    permuted documents it reaches, ``[b0, b1)``, and the tokens before block ``b0``.

    The epoch tables of the (source, epoch) pairs present are laid end to end, each
    lifted above the one before, so one search finds every span's blocks."""
    span = epoch.max(initial=0) + 1
    pairs, pair_of = np.unique(source * span + epoch, return_inverse=True)
    tables = [sources[a].table(e) for a, e in zip(*(x.tolist() for x in np.divmod(pairs, span)))]
    lift = int(t.max()) + 1
    if lift * len(tables) >= 1 << 62:
        raise OverflowError(
            f"{len(tables)} epoch tables of up to {lift - 1} tokens each do not fit one int64 "
            "search; read fewer sources at once"
        )
    lengths = np.array([x.size for x in tables], dtype=np.int64)
    lifts = np.arange(len(tables), dtype=np.int64) * lift
    flat = np.concatenate(tables) + np.repeat(lifts, lengths)
    first, base = (np.cumsum(lengths) - lengths).take(pair_of), pair_of * lift
    g0 = np.searchsorted(flat, base + start, side="right") - 1
    g1 = np.searchsorted(flat, base + stop, side="left")
    return g0 - first, g1 - first, flat.take(g0) - base


def _grouped(owner: np.ndarray, sources: int) -> list[tuple[int, np.ndarray]]:
    """Each source's places in ``owner`` (in order), for the sources present."""
    if sources == 1:
        return [(0, np.arange(owner.size))]
    order = np.argsort(owner, kind="stable")
    bounds = np.searchsorted(owner.take(order), np.arange(sources + 1)).tolist()
    return [(a, order[lo:hi]) for a, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])) if lo < hi]


def _spans(sources: Sequence[Any], owner: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, ...]:
    """Documents ``ids`` of sources ``sources[owner]``: their first tokens (in their
    files) and lengths, each source's read in one call."""
    firsts, lengths = np.empty(ids.size, dtype=np.int64), np.empty(ids.size, dtype=np.int64)
    for a, at in _grouped(owner, len(sources)):
        firsts[at], lengths[at] = sources[a].documents.spans(ids.take(at))
    return firsts, lengths


def _gather(sources: Sequence[Any], owner: np.ndarray, ids: np.ndarray, firsts: np.ndarray,
            counts: np.ndarray) -> np.ndarray:  # fmt: skip
    """The pieces' tokens back to back (int64), each source's read in one call."""
    out = np.empty(int(counts.sum()), dtype=np.int64)
    heads = np.cumsum(counts) - counts
    for a, at in _grouped(owner, len(sources)):
        sources[a].documents.place(out, heads.take(at), ids.take(at), firsts.take(at),
                                   counts.take(at))  # fmt: skip
    return out


def fields(tokens: np.ndarray, window: np.ndarray, counts: np.ndarray, form: Any) -> dict:
    """Megatron's sample dict of windows ``tokens`` (``(n, seq_len + 1)``) made of
    pieces ``counts`` long of windows ``window``, as ``form``'s switches say
    (``reset_position_ids``, ``reset_attention_mask``, ``eod_mask_loss``)."""
    n, s = tokens.shape[0], tokens.shape[1] - 1
    # Each piece's first slot in its window, and its number among the window's pieces.
    first = np.searchsorted(window, np.arange(n))
    slot = np.cumsum(counts) - counts - window * (s + 1)
    number = np.arange(window.size) - first.take(window)
    document_ids = np.repeat(number.astype(np.int32), counts).reshape(n, s + 1)
    position_ids = np.broadcast_to(np.arange(s + 1), (n, s + 1))
    if form.reset_position_ids:
        position_ids = position_ids - np.repeat(slot, counts).reshape(n, s + 1)
    loss_mask = np.ones((n, s), dtype=np.float32)
    if form.eod_mask_loss:
        # Every piece but a window's last ends at its document's end; the last ends
        # on the window's final token, which is only a target: so the pieces' last
        # slots that are inputs are exactly the documents' last tokens.
        end = slot + counts - 1
        inside = end < s
        loss_mask[window[inside], end[inside]] = 0.0
    out = {
        "tokens": tokens[:, :-1],
        "labels": tokens[:, 1:],
        "loss_mask": loss_mask,
        "position_ids": np.ascontiguousarray(position_ids[:, :-1], dtype=np.int64),
        "document_ids": np.ascontiguousarray(document_ids[:, :-1]),
    }
    if form.reset_attention_mask:
        out["attention_mask"] = attention_mask(out["document_ids"])
    return out
