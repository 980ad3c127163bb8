"""Packing: documents cut into windows of ``seq_len + 1`` tokens, reshuffled each epoch.

``Packed`` makes a random-access source of windows from ``Documents``. Epoch ``E``
of the source is a keyed permutation of its documents, concatenated; the epochs
follow one another as one endless token stream, and window ``w`` is its tokens
``[w * S, w * S + S + 1)`` (``S = seq_len``; consecutive windows share one token, as
Megatron's samples do). So every token of every document is the input of exactly
one window per epoch, the windows of two epochs differ (the documents come in
another order), and a window that runs past an epoch's end goes on into the next
epoch's first documents rather than being padded or dropped.

The plan numbers a source's samples per epoch: ``len(packed)`` is
``K = T // S`` windows (``T`` tokens in the source), and draw ``d`` reaches the
source as ``read`` of epoch ``d // K``, index ``i`` in ``[0, K)`` (the order layer's
within-epoch index: shuffled, in order, or with replacement), which is window
``(d // K) * K + i``: each block of ``K`` windows is read in a keyed random order,
as Megatron's shuffle index does, and block ``e`` is about epoch ``e``.

Random access without materialising an epoch: window ``w`` starts at token
``w * S``, in epoch ``w * S // T``; that epoch's permuted documents are found in a
table of cumulative token counts per block of 64 permuted documents (8 bytes per
64 documents, 0.125 bytes per document), built once per epoch in one vectorised pass
and kept for the last few epochs used, so memory does not grow with the number of
epochs; the documents of one block are then re-permuted (``annealmix.order``'s
shuffle) to find the exact one.

``Padded`` is the "no packing" mode for fine-tuning data: one document per sample,
padded (or truncated) to ``seq_len + 1``, the padding masked out of the loss.
``PackedStream`` packs a stream of documents (a Hugging Face streaming dataset, a
generator) in the order it comes, which has no random access to reshuffle.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from . import _validate, windows
from .documents import Documents, documents_of, open_documents
from .files import FORMATS
from .order import range_indices, shuffle_key
from .sample_dict import MEGATRON_FLAGS, check_flags
from .sources import batch_row, every_item, open_token_source

__all__ = ["OUTPUTS", "Packed", "PackedStream", "Padded", "check_options", "cu_seqlens",
           "name_key", "open_source"]  # fmt: skip

OUTPUTS = ("dict", "tokens")
_BLOCK = windows.BLOCK  # permuted documents per entry of an epoch's table
_TABLE_CHUNK = 1 << 20  # documents an epoch's table is built from at once
_EPOCHS_KEPT = 4  # epoch tables a source keeps (a window spans at most two epochs)


def name_key(name: str) -> int:
    """A stable 64-bit key of a source name (keys its document permutations)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")


class Packed:
    """Documents packed into ``seq_len + 1``-token windows, in a fresh order each epoch.

    Args:
        documents: the documents (``Documents``, a Hugging Face dataset with
            ``input_ids``, or a list of token arrays).
        seq_len: input tokens per window; each window holds one more (the last target).
        seed: keys the per-epoch document orders (with ``key``). The plan does not
            see it: keep the seed and the name with the run (a config passes its own
            seed), or a resumed run reads other windows for the same draws.
        key: this source's key (default: ``name_key(name)``).
        name: the source's name, for messages and (without ``key``) its key.
        output: ``"tokens"``: a window is its ``seq_len + 1`` tokens (int64);
            ``"dict"``: Megatron's sample dict (``tokens``, ``labels``,
            ``loss_mask``, ``position_ids``) plus ``document_ids`` (which document
            of the window each input token belongs to, from 0) for attention that
            stays within documents (see ``cu_seqlens``).
        reset_position_ids: ``position_ids`` restart at 0 at each document's first
            token (and at the window's start), as Megatron's ``--reset-position-ids``
            (off by default, as there).
        reset_attention_mask: add Megatron's ``attention_mask`` (``--reset-attention-mask``):
            ``(1, seq_len, seq_len)`` booleans, True where a token may not attend
            (later tokens, earlier documents). ``seq_len**2`` bytes per window; the
            ``document_ids`` (``cu_seqlens``) say the same in ``seq_len`` ints.
        eod_mask_loss: mask the loss of each document's last token, whose target is
            another document's first token (Megatron's ``--eod-mask-loss``, found
            from the document boundaries, so no EOS id is needed).

    Megatron finds documents by their EOD token, these switches by the boundaries:
    the same where each document ends in one EOD (its ``--append-eod``; tested).
    They shape the sample dict: they need ``output="dict"``.
    """

    def __init__(
        self,
        documents: Any,
        seq_len: int,
        *,
        seed: int = 0,
        key: int | None = None,
        name: str = "packed",
        output: str = "tokens",
        reset_position_ids: bool = False,
        reset_attention_mask: bool = False,
        eod_mask_loss: bool = False,
    ) -> None:
        self.documents: Documents = documents_of(documents, name=name)
        self.seq_len = _validate.integer("seq_len", seq_len, minimum=1)
        self.seed = _validate.integer("seed", seed, minimum=0)
        self.key = name_key(name) if key is None else _validate.integer("key", key, minimum=0)
        self.name = name
        self.output = _validate.choice("output", output, OUTPUTS)
        flags = (reset_position_ids, reset_attention_mask, eod_mask_loss)
        check_flags(dict(zip(MEGATRON_FLAGS, flags)), self.output, name)
        self.reset_position_ids, self.reset_attention_mask, self.eod_mask_loss = flags
        self.num_tokens = self.documents.num_tokens
        if self.num_tokens < self.seq_len + 1:
            raise ValueError(
                f"{name}: its documents hold {self.num_tokens} tokens, fewer than one window of "
                f"seq_len + 1 = {self.seq_len + 1}; give more documents or a shorter seq_len"
            )
        self._tables: OrderedDict[int, np.ndarray] = OrderedDict()
        self.shuffle_key = shuffle_key(self.seed, self.key)  # its documents' order

    @property
    def form(self) -> tuple:
        """What shapes its windows (``seq_len``, output, switches): sources of one form
        read together (``annealmix.windows``)."""
        return (self.seq_len, self.output, *self.flags)

    @property
    def flags(self) -> tuple[bool, bool, bool]:
        return self.reset_position_ids, self.reset_attention_mask, self.eod_mask_loss

    def __len__(self) -> int:
        return self.num_tokens // self.seq_len

    def sample_tokens(self) -> int:
        """Training targets in one window: ``seq_len``."""
        return self.seq_len

    def describe(self) -> str:
        return (f"{self.name}: {len(self.documents):,} documents packed into {len(self):,} "
                f"windows of {self.seq_len} tokens per epoch")  # fmt: skip

    def where(self, epoch: int, index: int) -> dict[str, Any]:
        _, ids, offsets, counts = self.pieces([epoch * len(self) + index])
        return {"documents": [{"document": d, "start": o, "end": o + c}
                              for d, o, c in zip(ids.tolist(), offsets.tolist(), counts.tolist())]}

    def __getitem__(self, i: int) -> Any:
        """Window ``i`` of the first block (``read`` reads the others)."""
        return batch_row(self.read(np.array([0]), np.array([i])), 0)

    def read(self, epochs: np.ndarray, indices: np.ndarray) -> Any:
        """Windows ``indices`` of blocks ``epochs`` (what the plan's draws of those
        epochs read), stacked (a batch read at once)."""
        epochs = np.asarray(epochs, dtype=np.int64).ravel()
        return windows.read([self], np.zeros(epochs.size, dtype=np.intp), epochs, indices)

    def window(self, w: int) -> Any:
        """Window ``w`` of the endless stream of epochs, as ``output`` says."""
        return batch_row(self.windows(np.array([w])), 0)

    def windows(self, ws: np.ndarray) -> Any:
        """Windows ``ws`` of the endless stream, stacked: an ``(n, seq_len + 1)`` token
        array, or a dict of ``(n, seq_len)`` arrays (``output``)."""
        ws = np.asarray(ws, dtype=np.int64).ravel()
        return windows.read_windows([self], np.zeros(ws.size, dtype=np.intp), ws)

    def pieces(self, ws: np.ndarray) -> tuple[np.ndarray, ...]:
        """The document pieces windows ``ws`` read, in order: the window (its place in
        ``ws``), the document, its first token read, and how many tokens."""
        ws = np.asarray(ws, dtype=np.int64).ravel()
        got = windows.pieces([self], np.zeros(ws.size, dtype=np.intp), ws)
        return got[0], got[2], got[3], got[4]

    def _order(self, epoch: int, lo: int, hi: int) -> np.ndarray:
        """Documents at permuted positions ``[lo, hi)`` of an epoch."""
        d = len(self.documents)
        out = np.empty(hi - lo, dtype=np.int64)
        return range_indices(
            "shuffle", epoch * d + lo, out, size=d, seed=self.seed, source_id=self.key
        )

    def table(self, epoch: int) -> np.ndarray:
        """Tokens before each block of ``_BLOCK`` permuted documents of an epoch."""
        table = self._tables.get(epoch)
        if table is not None:
            self._tables.move_to_end(epoch)
            return table
        d = len(self.documents)
        sums = []
        for a in range(0, d, _TABLE_CHUNK):
            lengths = self.documents.lengths(self._order(epoch, a, min(d, a + _TABLE_CHUNK)))
            sums.append(np.add.reduceat(lengths, np.arange(0, lengths.size, _BLOCK)))
        table = np.concatenate([[0], np.cumsum(np.concatenate(sums))]).astype(np.int64)
        self._tables[epoch] = table
        if len(self._tables) > _EPOCHS_KEPT:
            self._tables.popitem(last=False)
        return table

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_tables": OrderedDict()}  # workers build their own


class Padded:
    """One document per sample, padded or truncated to ``seq_len + 1`` tokens ("no
    packing", for fine-tuning data): Megatron's sample dict with the padding's
    targets masked out of the loss. Sample ``i`` is document ``i``.

    Args:
        documents: the documents (as for ``Packed``).
        seq_len: input tokens per sample.
        pad_id: the token id padding fills with (its targets carry no loss).
        truncate: cut documents longer than ``seq_len + 1``; without it such a
            document is an error naming it (pack the source instead, or truncate).
        name: the source's name, for messages.
    """

    def __init__(
        self,
        documents: Any,
        seq_len: int,
        *,
        pad_id: int = 0,
        truncate: bool = False,
        name: str = "padded",
    ) -> None:
        self.documents: Documents = documents_of(documents, name=name)
        self.seq_len = _validate.integer("seq_len", seq_len, minimum=1)
        self.pad_id = _validate.integer("pad_id", pad_id, minimum=0)
        self.truncate, self.name = bool(truncate), name
        shortest = self.documents.lengths().min(initial=1)
        if shortest < 1:  # a sample of padding alone would be counted as a token of data
            i = int(np.argmin(self.documents.lengths()))
            raise ValueError(
                f"{name}: document {i} is empty; one document per sample needs at least one "
                "token: drop empty documents"
            )
        longest = self.documents.max_length()
        if longest > self.seq_len + 1 and not self.truncate:
            lengths = self.documents.lengths()
            i = int(np.argmax(lengths))
            raise ValueError(
                f"{name}: document {i} holds {longest} tokens, more than seq_len + 1 = "
                f"{self.seq_len + 1}, and packing is off: pack the source (pack = true), "
                "raise seq_len, or cut long documents (truncate = true)"
            )

    def __len__(self) -> int:
        return len(self.documents)

    @property
    def num_tokens(self) -> int:
        return self.documents.num_tokens

    def describe(self) -> str:
        return (f"{self.name}: {len(self):,} documents, one per sample of {self.seq_len} "
                "tokens, padded")  # fmt: skip

    def where(self, epoch: int, index: int) -> dict[str, Any]:
        return {"documents": [{"document": int(index)}]}

    def read(self, epochs: np.ndarray, indices: np.ndarray) -> list[dict[str, np.ndarray]]:
        """Samples ``indices`` (documents; every pass reads the same)."""
        return [self[i] for i in np.asarray(indices).tolist()]

    def sample_tokens(self) -> np.ndarray:
        """Training targets of every sample (what token weights count): a document
        of n tokens, cut to ``seq_len + 1``, gives n - 1; a one-token document
        counts as one."""
        kept = np.minimum(self.documents.lengths(), self.seq_len + 1)
        return np.maximum(kept - 1, 1).astype(np.int64)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        s = self.seq_len
        doc = np.asarray(self.documents.document(i)[: s + 1], dtype=np.int64)
        n = doc.size
        tokens = np.full(s + 1, self.pad_id, dtype=np.int64)
        tokens[:n] = doc
        loss_mask = np.zeros(s, dtype=np.float32)
        loss_mask[: max(0, n - 1)] = 1.0
        return {
            "tokens": tokens[:-1],
            "labels": tokens[1:],
            "loss_mask": loss_mask,
            "position_ids": np.arange(s, dtype=np.int64),
            "document_ids": np.zeros(s, dtype=np.int32),
        }


class PackedStream:
    """A stream of documents packed into ``seq_len + 1``-token windows in arrival order.

    For sources without random access (a Hugging Face streaming dataset, a
    generator of token lists): documents are concatenated as they come and cut as
    ``Packed`` cuts them, without a reshuffle (a stream cannot be reordered without
    reading it whole); the windows are the same on every pass. A Hugging Face stream
    is read whole in every DataLoader worker (``annealmix.sources.every_item``), so
    window ``d`` is the same whichever worker reads it.

    Args:
        documents: an iterable of documents: token arrays, or rows with ``column``.
        seq_len: input tokens per window.
        column: the token column of dict rows (Hugging Face: ``input_ids``).
    """

    def __init__(self, documents: Iterable[Any], seq_len: int, column: str = "input_ids"):
        self.documents, self.column = documents, column
        self.seq_len = _validate.integer("seq_len", seq_len, minimum=1)

    def __iter__(self) -> Iterator[np.ndarray]:
        s, buffer, held = self.seq_len, [], 0
        for row in every_item(self.documents):
            doc = row[self.column] if isinstance(row, dict) else row
            buffer.append(np.asarray(doc, dtype=np.int64).ravel())
            held += buffer[-1].size
            if held < s + 1:
                continue
            flat = np.concatenate(buffer)
            n = (flat.size - 1) // s
            for w in range(n):
                yield flat[w * s : w * s + s + 1]
            buffer, held = [flat[n * s :]], flat.size - n * s


def check_options(format: str, *, eos_id: int | None, pack: bool, output: str, name: str) -> None:
    """Refuse options that files of ``format`` cannot honour, before any is read."""
    format = _validate.choice(f"{name} format", format, FORMATS)
    if format == "megatron" or eos_id is not None:  # documents known
        if not pack and output != "dict":
            raise ValueError(
                f"{name}: an unpacked source pads its documents, and padding needs a loss "
                'mask: give output = "dict"'
            )
        return
    if not pack:
        raise ValueError(
            f"{name}: pack = false needs documents, and {format} files without eos_id are "
            "one flat stream; give eos_id (the end-of-text id) to split them"
        )
    if output != "tokens":
        raise ValueError(
            f'{name}: output = "{output}" needs document boundaries (position ids and '
            f"loss masks per document), and {format} files without eos_id have none; "
            "give eos_id"
        )


def open_source(
    paths: str | list[str],
    format: str,
    seq_len: int,
    *,
    name: str,
    seed: int = 0,
    eos_id: int | None = None,
    pack: bool = True,
    output: str = "tokens",
    dtype: str = "uint16",
    vocab_size: int | None = None,
    truncate: bool = False,
    **flags: bool,
) -> Any:
    """Token files as a source of ``seq_len + 1``-token samples, the way a config names it.

    Where the documents are known (a Megatron pair; flat files with ``eos_id``), the
    source is ``Packed`` (``pack``: documents reshuffled every epoch) or ``Padded``
    (one document per sample, ``pad_id`` = ``eos_id``, always ``output = "dict"``).
    Flat files without ``eos_id`` hold no document boundaries: they are cut into
    fixed windows (``TokenShards``), the same in every epoch, and cannot be unpacked.
    ``flags`` are Megatron's switches of a packed source (``annealmix.sample_dict.MEGATRON_FLAGS``).
    """
    check_options(format, eos_id=eos_id, pack=pack, output=output, name=name)
    check_flags(flags, output, name)
    on = sorted(k for k, v in flags.items() if v)
    if on and not pack:
        raise ValueError(f"{name}: {on} apply to packed windows; give pack = true")
    if not (format == "megatron" or eos_id is not None):  # no document boundaries
        return open_token_source(paths, format, seq_len, dtype, vocab_size=vocab_size)
    docs = open_documents(
        paths, format, eos_id=eos_id, dtype=dtype, vocab_size=vocab_size, name=name
    )
    if pack:
        return Packed(docs, seq_len, seed=seed, name=name, output=output, **flags)
    pad = 0 if eos_id is None else eos_id
    return Padded(docs, seq_len, pad_id=pad, truncate=truncate, name=name)


def cu_seqlens(document_ids: np.ndarray) -> np.ndarray:
    """Cumulative sequence lengths (int32) of a batch of packed windows for varlen
    attention (flash-attention's ``cu_seqlens``): the ``(B, S)`` ``document_ids``
    of the samples, flattened, with a boundary wherever the document changes and
    at every sample's start."""
    ids = np.asarray(document_ids)
    if ids.ndim == 1:
        ids = ids[None]
    b, s = ids.shape
    change = np.ones((b, s), dtype=bool)
    change[:, 1:] = ids[:, 1:] != ids[:, :-1]
    return np.append(np.flatnonzero(change.ravel()), b * s).astype(np.int32)
