"""Document sources: variable-length token documents, read with random access.

A ``Documents`` is one or more flat token arrays, each with the start and length of
every document in it: document ``i`` is ``tokens[start[i] : start[i] + length[i]]``.
It is what packing (``annealmix.packing``) cuts into windows and what a "no
packing" source pads. It opens from:

- a Megatron-LM indexed pair (``PREFIX.bin`` + ``PREFIX.idx``): one document per
  sequence, as Megatron's GPT dataset counts them; the index stays memory-mapped
  (its byte pointers are read as token starts on demand), so the documents cost no
  memory beyond the page cache;
- flat token files (nanoGPT, llm.c, ``.npy``, OLMo-style raw ``uint16``/``uint32``
  memmaps) split at an end-of-text id: each document ends with its EOS token, and
  a last piece without one is a document too; the split costs 12 bytes per
  document (an int64 start and an int32 length) and one pass over the file;
- a Hugging Face dataset with an ``input_ids`` column (the flat Arrow values and
  offsets, read without a Python loop);
- a Python list of token arrays (copied into one array).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import _validate
from .files import (
    FORMATS,
    Mapped,
    MegatronIndexed,
    check_vocab,
    expand,
    plain,
    read_llmc,
    read_nanogpt,
    read_npy,
)

__all__ = ["Documents", "open_documents"]

_SCAN = 1 << 24  # tokens an EOS scan reads at once: memory stays flat on huge files


class Documents:
    """Variable-length token documents over one or more flat token arrays.

    Args:
        parts: ``(tokens, starts, lengths)`` per file: a 1-D integer token array
            (in memory or memory-mapped), each document's first token and length.
        names: a label per part for messages (file names).
        name: what the documents are, for messages (a source name).
    """

    def __init__(
        self,
        parts: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
        names: Sequence[str] | None = None,
        name: str = "documents",
    ) -> None:
        if not parts:
            raise ValueError(f"{name}: no token arrays; give at least one file or array")
        self.name = name
        self.names = list(names or [f"part {i}" for i in range(len(parts))])
        self.parts = []
        for label, (tokens, starts, lengths) in zip(self.names, parts):
            arrays = (np.ndarray, Mapped)
            if not isinstance(tokens, arrays) or tokens.ndim != 1 or not np.issubdtype(
                tokens.dtype, np.integer
            ):
                raise ValueError(f"{label}: tokens must be a 1-D integer array")
            if len(starts) != len(lengths):
                raise ValueError(
                    f"{label}: {len(starts)} document starts for {len(lengths)} lengths"
                )
            self.parts.append((tokens, starts, lengths))
        counts = np.array([len(p[1]) for p in self.parts], dtype=np.int64)
        self._first = np.concatenate([[0], np.cumsum(counts)])  # first document of each part
        if self._first[-1] == 0:
            raise ValueError(
                f"{name} holds no documents; check the files, the eos_id, or the input_ids column"
            )
        self.num_tokens = int(sum(int(np.sum(p[2], dtype=np.int64)) for p in self.parts))
        self._single = len(self.parts) == 1
        self._plain: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return int(self._first[-1])

    def lengths(self, ids: np.ndarray | None = None) -> np.ndarray:
        """Token counts of documents ``ids`` (all of them by default), int64."""
        if ids is None:
            return np.concatenate([np.asarray(p[2], dtype=np.int64) for p in self.parts])
        return self._take(2, np.asarray(ids, dtype=np.int64))

    def _take(self, column: int, ids: np.ndarray) -> np.ndarray:
        """Column ``column`` of the parts (1: starts, 2: lengths) at documents ``ids``."""
        if self._single:
            return np.asarray(self.parts[0][column][ids], dtype=np.int64)
        part, local = self._locate(ids)
        out = np.empty(ids.shape, dtype=np.int64)
        for p in np.unique(part).tolist():
            at = part == p
            out[at] = self.parts[p][column][local[at]]
        return out

    def subset(self, start: int, stop: int) -> Documents:
        """Documents ``[start, stop)`` in file order, as their own ``Documents`` (views of
        the same files: nothing is copied)."""
        if not 0 <= start < stop <= len(self):
            raise ValueError(
                f"{self.name}: documents [{start}, {stop}) are not a non-empty range of the "
                f"{len(self)} documents"
            )
        parts, names = [], []
        for label, (tokens, starts, lengths), first in zip(self.names, self.parts, self._first):
            a, b = max(start - first, 0), min(stop - first, len(starts))
            if a < b:
                parts.append((tokens, starts[a:b], lengths[a:b]))
                names.append(label)
        return Documents(parts, names=names, name=self.name)

    def max_length(self) -> int:
        """The longest document's token count."""
        return max(int(np.max(p[2])) if len(p[2]) else 0 for p in self.parts)

    def _locate(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        part = np.searchsorted(self._first, ids, side="right") - 1
        return part, ids - self._first[part]

    def document(self, i: int) -> np.ndarray:
        """Document ``i`` as a token array (a view of the file where it can be)."""
        i = int(i)
        if not 0 <= i < len(self):
            raise IndexError(f"document {i} is out of range for {len(self)} documents")
        part, local = self._locate(np.array([i]))
        tokens, starts, lengths = self.parts[int(part[0])]
        start = int(starts[int(local[0])])
        return np.asarray(tokens[start : start + int(lengths[int(local[0])])])

    def spans(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Documents ``ids``' first tokens (positions in their files) and lengths, int64."""
        ids = np.asarray(ids, dtype=np.int64)
        return self._take(1, ids), self._take(2, ids)

    def gather(self, ids: np.ndarray, offsets: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """Tokens ``[offset, offset + count)`` of each document ``ids``, back to back (int64)."""
        ids, offsets, counts = (np.asarray(a, dtype=np.int64) for a in (ids, offsets, counts))
        out = np.empty(int(counts.sum()), dtype=np.int64)
        self.place(out, np.cumsum(counts) - counts, ids, self._take(1, ids) + offsets, counts)
        return out

    def place(
        self, out: np.ndarray, heads: np.ndarray, ids: np.ndarray, firsts: np.ndarray,
        counts: np.ndarray,
    ) -> None:  # fmt: skip
        """Write pieces of documents into ``out``: piece ``j``, the tokens
        ``[firsts[j], firsts[j] + counts[j])`` of document ``ids[j]``'s file (``firsts``
        from ``spans``' starts), at ``out[heads[j]:]``.

        Long pieces (64 tokens or more on average, a chosen threshold) are sliced one
        by one, which beat one fancy index on bench_packing's pieces of about 700
        tokens; many short ones are read by one fancy index per file, built without a
        Python loop over the pieces.
        """
        part = None if self._single else self._locate(ids)[0]
        views = self._views([0] if part is None else np.unique(part).tolist())
        total = int(counts.sum())
        if ids.size <= 4 or total >= 64 * ids.size:  # few or long pieces: slice each
            owners = itertools.repeat(0) if part is None else part.tolist()
            for p, h, a, c in zip(owners, heads.tolist(), firsts.tolist(), counts.tolist()):
                out[h : h + c] = views[p][a : a + c]
            return
        # Slot t of piece j (counted over the pieces end to end) is token
        # firsts[j] + (t - at[j]) of its file, and lands at heads[j] + (t - at[j]).
        at = np.cumsum(counts) - counts
        step = np.arange(total)
        where = np.repeat(firsts - at, counts) + step
        to = np.repeat(heads - at, counts) + step
        if self._single:
            out[to] = views[0][where]
            return
        owner = np.repeat(part, counts)
        for p in views:
            mine = owner == p
            out[to[mine]] = views[p][where[mine]]

    def _views(self, parts: list[int]) -> dict[int, np.ndarray]:
        """Parts' token arrays as plain ndarrays over the same memory: slicing a
        ``np.memmap`` costs a subclass round trip per slice (measured: a third of a
        packed batch's time). Arrays in memory are kept per process (a pickle carries
        the arrays); a ``Mapped`` file's map comes from the pool for this read only."""
        if self._plain is None:
            self._plain = [None if isinstance(p[0], Mapped) else np.asarray(p[0])
                           for p in self.parts]  # fmt: skip
        return {p: plain(self.parts[p][0]) if self._plain[p] is None else self._plain[p]
                for p in parts}  # fmt: skip

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_plain": None}


def _split(tokens: np.ndarray, eos_id: int, label: str) -> tuple[np.ndarray, np.ndarray]:
    """Starts (int64) and lengths (int32) of the documents of a flat token array, each
    ending with its EOS token; a last piece without one is a document too."""
    ends = [
        np.flatnonzero(np.asarray(tokens[a : a + _SCAN]) == eos_id) + (a + 1)
        for a in range(0, tokens.size, _SCAN)
    ]
    ends = np.concatenate(ends) if ends else np.zeros(0, dtype=np.int64)
    if ends.size == 0 or ends[-1] != tokens.size:
        ends = np.append(ends, tokens.size)
    starts = np.concatenate([[0], ends[:-1]]).astype(np.int64)
    lengths = (ends - starts).astype(np.int64)
    if lengths.max(initial=0) >= 2**31:
        raise ValueError(f"{label}: a document of {int(lengths.max())} tokens; is eos_id right?")
    return starts, lengths.astype(np.int32)


def _check_eos(eos_id: Any, tokens: np.ndarray, label: str, vocab_size: int | None) -> int:
    eos_id = _validate.integer("eos_id", eos_id, minimum=0)
    top = int(np.iinfo(tokens.dtype).max) if np.issubdtype(tokens.dtype, np.integer) else None
    limit = vocab_size if vocab_size is not None else (None if top is None else top + 1)
    if limit is not None and eos_id >= limit:
        what = f"vocab_size = {vocab_size}" if vocab_size is not None else f"{tokens.dtype} tokens"
        raise ValueError(
            f"{label}: eos_id = {eos_id} lies outside the vocabulary ({what}); give the "
            "tokenizer's end-of-text id (GPT-2: 50256; Llama 3: 128001)"
        )
    return eos_id


def open_documents(
    paths: str | list[str],
    format: str,
    *,
    eos_id: int | None = None,
    dtype: str = "uint16",
    vocab_size: int | None = None,
    name: str = "documents",
) -> Documents:
    """Token files of one format as documents.

    ``megatron`` pairs give one document per sequence of their index; flat formats
    (``nanogpt``, ``llmc``, ``npy``) are split after every ``eos_id`` (required for
    them). ``paths`` is a file, a glob or a list (see ``open_token_source``).
    """
    format = _validate.choice("format", format, FORMATS)
    files = expand(paths)
    if vocab_size is not None:
        vocab_size = _validate.integer("vocab_size", vocab_size, minimum=1)
    parts = []
    if format == "megatron":
        files = list(dict.fromkeys(f.removesuffix(".bin").removesuffix(".idx") for f in files))
        for f in files:
            m = MegatronIndexed(f)
            if eos_id is not None:
                _check_eos(eos_id, m.tokens, f, vocab_size)
            parts.append((m.tokens, _TokenStarts(m.pointers, m.dtype.itemsize), m.lengths))
    else:
        if eos_id is None:
            raise ValueError(
                f"{name}: {format} files are one flat stream of tokens; give eos_id (the "
                "tokenizer's end-of-text id) to split them into documents"
            )
        readers = {"nanogpt": lambda p: read_nanogpt(p, dtype), "llmc": read_llmc, "npy": read_npy}
        for f in files:
            tokens = readers[format](f)
            eos = _check_eos(eos_id, tokens, f, vocab_size)
            parts.append((tokens, *_split(tokens, eos, f)))
    if vocab_size is not None:
        for f, (tokens, _, _) in zip(files, parts):
            check_vocab(f, tokens, vocab_size)
    return Documents(parts, names=files, name=name)


class _TokenStarts:
    """A Megatron index's byte pointers read as token starts on demand, so the index
    stays memory-mapped (no per-document memory; ``MegatronIndexed`` has checked
    that every pointer is a whole number of tokens)."""

    def __init__(self, pointers: np.ndarray, itemsize: int) -> None:
        self.pointers, self.itemsize = pointers, itemsize

    def __len__(self) -> int:
        return len(self.pointers)

    def __getitem__(self, at: Any) -> Any:
        if isinstance(at, slice):
            return _TokenStarts(self.pointers[at], self.itemsize)
        return np.asarray(self.pointers[at], dtype=np.int64) // self.itemsize


def documents_from_arrays(arrays: Sequence[Any], name: str = "documents") -> Documents:
    """A list of token arrays (lists, numpy arrays or tensors) as documents (copied)."""
    arrays = [np.asarray(a) for a in arrays]
    for i, a in enumerate(arrays):
        if a.ndim != 1 or (a.size and not np.issubdtype(a.dtype, np.integer)):
            raise ValueError(
                f"{name}: document {i} must be a 1-D integer array, got {a.shape} {a.dtype}"
            )
        if a.size and a.min() < 0:
            raise ValueError(
                f"{name}: document {i} holds the token id {int(a.min())}; token ids are >= 0"
            )
    lengths = np.array([a.size for a in arrays], dtype=np.int64)
    tokens = np.concatenate(arrays) if arrays else np.zeros(0, np.int64)
    if not np.issubdtype(tokens.dtype, np.integer):  # only empty documents: no dtype of their own
        tokens = tokens.astype(np.int64)
    return Documents([(tokens, np.cumsum(lengths) - lengths, lengths)], name=name)


def documents_from_hf(
    dataset: Any, column: str = "input_ids", name: str = "documents"
) -> Documents:
    """A Hugging Face ``datasets.Dataset`` with a token-list column as documents.

    Reads the column's flat Arrow values and offsets, so opening costs no Python
    loop over rows; a dataset behind an indices mapping (after ``shuffle`` or
    ``select``) is flattened first, so that document ``i`` is row ``i``.
    """
    import datasets as hf

    if not isinstance(dataset, hf.Dataset):
        raise TypeError(f"{name}: expected a datasets.Dataset, got {type(dataset).__name__}")
    if column not in dataset.column_names:
        raise ValueError(
            f"{name}: the dataset has no {column!r} column (columns: "
            f"{dataset.column_names}); tokenize it first, or name the column"
        )
    if dataset._indices is not None:
        dataset = dataset.flatten_indices()
    col = dataset.data.column(column).combine_chunks()
    if col.null_count:
        raise ValueError(f"{name}: {col.null_count} rows have no {column}; drop them first")
    import pyarrow as pa

    if pa.types.is_large_list(col.type) or pa.types.is_list(col.type):
        offsets = np.asarray(col.offsets, dtype=np.int64)
        values = col.values.to_numpy(zero_copy_only=False)
    else:
        raise ValueError(f"{name}: column {column!r} holds {col.type}, not lists of token ids")
    if not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"{name}: column {column!r} holds {values.dtype} values, not token ids")
    # ``values`` is the child array unsliced; the offsets index into it as they are.
    return Documents([(values, offsets[:-1], np.diff(offsets))], names=[column], name=name)


def documents_of(source: Any, *, name: str = "documents") -> Documents:
    """``source`` as ``Documents``: itself, a Hugging Face dataset's ``input_ids``,
    or a list of token arrays."""
    if isinstance(source, Documents):
        return source
    if type(source).__module__.startswith("datasets"):
        return documents_from_hf(source, name=name)
    if isinstance(source, (list, tuple)):
        return documents_from_arrays(source, name=name)
    raise TypeError(
        f"{name}: cannot read documents from {type(source).__name__}; give annealmix "
        "Documents (open_documents), a Hugging Face Dataset with input_ids, or a list of arrays"
    )
