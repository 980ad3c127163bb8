"""Sources: a sample index -> the sample, behind one declared interface.

Every reader of annealmix implements ``Source`` (``TokenWindows`` and ``TokenShards``
here, ``Packed`` and ``Padded`` in ``annealmix.packing``); ``as_source`` wraps
anything else with ``len`` and ``[]`` (a Python sequence, a numpy array, a PyTorch
map-style ``Dataset``, a Hugging Face ``datasets.Dataset``). This module is the only
one that asks what a source can do: everything downstream calls the interface.

Streams (an ``IterableDataset``, a Hugging Face streaming dataset, a generator) have
no random access: ``is_stream`` tells them apart, and ``annealmix.reading`` reads
them in order. Token files are opened by ``annealmix.files`` and cut into
fixed-length samples here (``open_token_source``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

import numpy as np

from . import _validate, files
from .files import FORMATS, MegatronIndexed, check_vocab, expand, read_llmc, read_nanogpt, read_npy

__all__ = [
    "Indexed",
    "Source",
    "TokenShards",
    "TokenWindows",
    "as_source",
    "batch_row",
    "every_item",
    "is_stream",
    "open_token_source",
    "read_one",
    "stream_items",
    "tokens_of",
]


@runtime_checkable
class Source(Protocol):
    """A random-access source as annealmix reads it.

    - ``len(source)``: samples in one pass (epoch).
    - ``read(epochs, indices)``: samples ``indices`` in passes ``epochs`` (a source
      whose samples change from pass to pass, such as packed documents, reads the
      draw's pass, ``draw // len(source)``): stacked (an array, or a dict of arrays)
      where the source reads batches, else a list.
    - ``sample_tokens()``: training targets per sample: one int where every sample has the
      same number (windows), an int64 array over the samples where they vary
      (unpacked documents), ``None`` where unknown.
    - ``documents``: its documents (``annealmix.documents.Documents``: their
      lengths), or ``None``.
    - ``num_tokens``: tokens the source holds (its files), or ``None``.
    - ``describe()``: one line for the CLI.
    - ``where(epoch, index)``: what sample ``index`` of pass ``epoch`` reads, for
      ``annealmix inspect``: ``{"tokens": {"file", "start", "end"}}``,
      ``{"documents": [{"document", "start", "end"}, ...]}``, or ``{}``.
    """

    documents: Any
    num_tokens: int | None

    def __len__(self) -> int: ...

    def read(self, epochs: np.ndarray, indices: np.ndarray) -> Any: ...

    def sample_tokens(self) -> int | np.ndarray | None: ...

    def describe(self) -> str: ...

    def where(self, epoch: int, index: int) -> dict[str, Any]: ...


class Indexed:
    """Anything with ``len`` and ``[]`` as a ``Source``: sample ``i`` is ``data[i]`` in
    every pass; its tokens and documents are unknown.

    Args:
        data: the samples (a sequence, an array, a map-style dataset).
    """

    documents = None
    num_tokens = None

    def __init__(self, data: Any) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def read(self, epochs: np.ndarray, indices: np.ndarray) -> list[Any]:
        return [self.data[i] for i in np.asarray(indices).tolist()]

    def sample_tokens(self) -> None:
        return None

    def describe(self) -> str:
        return f"{type(self.data).__name__} of {len(self):,} samples"

    def where(self, epoch: int, index: int) -> dict[str, Any]:
        return {}


_source_types: set[type] = set()  # classes whose instances were Sources


def is_source(data: Any) -> bool:
    """``isinstance(data, Source)``, remembered per class: a protocol check costs
    tens of microseconds, and a list of 10,000 files asks it for every file."""
    if type(data) in _source_types:
        return True
    if isinstance(data, Source):
        _source_types.add(type(data))
        return True
    return False


def is_stream(data: Any) -> bool:
    """Whether ``data`` is a stream (read in order) rather than random-access."""
    if is_source(data):
        return False
    torch_data = sys.modules.get("torch.utils.data")  # loaded wherever a torch object exists
    if torch_data is not None and isinstance(data, torch_data.IterableDataset):
        return True  # even with __len__ (and Dataset's __getitem__): it is read in order
    return not (hasattr(data, "__len__") and hasattr(data, "__getitem__"))


def as_source(data: Any, name: str = "source") -> Source:
    """``data`` as a ``Source``: a reader of annealmix as it is, anything else with
    ``len`` and ``[]`` wrapped (``Indexed``); a stream is refused."""
    if is_source(data):
        return data
    if is_stream(data):
        raise TypeError(
            f"source {name!r} is a stream ({type(data).__name__}), not random-access; read it "
            "through annealmix.torch.MixtureDataLoader or annealmix.hf.mix_datasets"
        )
    return Indexed(data)


def read_one(source: Source, epoch: int, index: int) -> Any:
    """Sample ``index`` of a source, in pass ``epoch``."""
    return batch_row(source.read(np.array([epoch]), np.array([index])), 0)


def tokens_of(source: Source) -> np.ndarray:
    """Training targets of every sample of a source, as an int64 array (what token
    weights count); refused where the source does not know them."""
    tokens = source.sample_tokens()
    if tokens is None:
        raise ValueError(
            f"{source.describe()}: tokens per sample are unknown; weigh it in samples, or "
            "give it as token files or documents"
        )
    if isinstance(tokens, np.ndarray):
        return tokens
    return np.full(len(source), tokens, dtype=np.int64)


def every_item(stream: Any) -> Iterator[Any]:
    """Every item of a stream, in order, whichever DataLoader worker reads it.

    A Hugging Face ``IterableDataset`` iterated in a worker gives only that worker's
    shards through ``__iter__``; its batch iterator reads them all.
    """
    if type(stream).__module__.startswith("datasets") and callable(getattr(stream, "iter", None)):
        rows = stream.iter(batch_size=1)
        return ({key: column[0] for key, column in batch.items()} for batch in rows)
    return iter(stream)


def stream_items(stream: Any, start: int) -> tuple[Iterator[Any], int]:
    """The items of a stream, every item whatever the worker (``every_item``), and
    the number of the first one: ``start`` where the stream skips on its own (a
    Hugging Face stream skips in its reader), else 0."""
    if start and callable(getattr(stream, "skip", None)):
        return every_item(stream.skip(start)), start
    return every_item(stream), 0


def batch_row(batch: Any, i: int) -> Any:
    """Sample ``i`` of what ``Source.read`` gave: a row of a stacked array, of each
    array of a dict, or an item of a list."""
    if isinstance(batch, dict):
        return {key: value[i] for key, value in batch.items()}
    return batch[i]


class TokenWindows:
    """A flat token array cut into samples of ``seq_len + 1`` tokens (a ``Source``).

    Sample ``i`` is ``tokens[i * seq_len : (i + 1) * seq_len + 1]``: consecutive
    samples share one token, so each gives ``seq_len`` next-token targets (the
    nanoGPT and Megatron convention). A memory-mapped array is read lazily.

    Args:
        tokens: 1-D integer array (in memory or ``np.memmap``).
        seq_len: tokens per sample, not counting the extra target token.
        name: a label for messages (the file's name).
    """

    documents = None

    def __init__(self, tokens: np.ndarray, seq_len: int, name: str | None = None) -> None:
        if not isinstance(tokens, (np.ndarray, files.Mapped)):
            raise ValueError(f"tokens must be a 1-D integer array, got {type(tokens).__name__}")
        if tokens.ndim != 1 or not np.issubdtype(tokens.dtype, np.integer):
            raise ValueError(
                f"tokens must be a 1-D integer array, got {tokens.shape} {tokens.dtype}"
            )
        self.tokens = tokens
        self.seq_len = _validate.integer("seq_len", seq_len, minimum=1)
        self.name = name
        if len(self) == 0:
            raise ValueError(
                f"tokens holds {tokens.size} tokens, fewer than one sample of seq_len + 1 = "
                f"{self.seq_len + 1}; give more tokens or a shorter seq_len"
            )

    def __len__(self) -> int:
        return max(0, (self.tokens.size - 1) // self.seq_len)

    @property
    def num_tokens(self) -> int:
        return int(self.tokens.size)

    def sample_tokens(self) -> int:
        """Training targets in one sample: ``seq_len``."""
        return self.seq_len

    def describe(self) -> str:
        label = self.name or "tokens"
        return f"{label}: {len(self):,} windows of {self.seq_len} tokens"

    def where(self, epoch: int, index: int) -> dict[str, Any]:
        start = int(index) * self.seq_len
        return {"tokens": {"file": self.name, "start": start, "end": start + self.seq_len + 1}}

    def __getitem__(self, i: int) -> np.ndarray:
        i = int(i)
        if not 0 <= i < len(self):
            raise IndexError(f"sample {i} is out of range for {len(self)} samples")
        start = i * self.seq_len
        return np.asarray(self.tokens[start : start + self.seq_len + 1], dtype=np.int64)

    def read(self, epochs: np.ndarray, indices: np.ndarray) -> np.ndarray:
        """Samples ``indices``, stacked: shape (n, seq_len + 1), int64."""
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
            bad = int(indices[(indices < 0) | (indices >= len(self))][0])
            raise IndexError(f"sample {bad} is out of range for {len(self)} samples")
        s, tokens = self.seq_len, files.plain(self.tokens)
        out = np.empty((indices.size, s + 1), dtype=np.int64)
        for row, start in enumerate((indices * s).tolist()):  # one copy, cast on the way
            out[row] = tokens[start : start + s + 1]
        return out


class TokenShards:
    """Several token arrays (shards) as one source of ``seq_len + 1``-token samples.

    Samples never cross a shard boundary; the shards' samples are numbered one
    shard after another, so a uniform (shuffled) pick over the source takes each
    shard in proportion to its size.

    Args:
        shards: 1-D integer arrays (in memory or memory-mapped).
        seq_len: tokens per sample, not counting the extra target token.
        names: a label per shard for messages (file names).
    """

    documents = None

    def __init__(
        self, shards: list[np.ndarray], seq_len: int, names: list[str] | None = None
    ) -> None:
        if not shards:
            raise ValueError("shards is empty; give at least one token array")
        names = names or [f"shard {i}" for i in range(len(shards))]
        self.shards = []
        for name, tokens in zip(names, shards):
            try:
                self.shards.append(TokenWindows(tokens, seq_len, name=name))
            except ValueError as err:
                raise ValueError(f"{name}: {err}") from None
        self.seq_len = self.shards[0].seq_len
        self.names = names
        self._ends = np.cumsum([len(s) for s in self.shards])

    def __len__(self) -> int:
        return int(self._ends[-1])

    @property
    def num_tokens(self) -> int:
        return sum(s.num_tokens for s in self.shards)

    def sample_tokens(self) -> int:
        """Training targets in one sample: ``seq_len``."""
        return self.seq_len

    def describe(self) -> str:
        return f"{len(self.shards)} file(s): {len(self):,} windows of {self.seq_len} tokens"

    def locate(self, i: int) -> tuple[int, int]:
        """(shard, sample within it) of sample ``i``."""
        i = int(i)
        if not 0 <= i < len(self):
            raise IndexError(f"sample {i} is out of range for {len(self)} samples")
        shard = int(np.searchsorted(self._ends, i, side="right"))
        return shard, i - (int(self._ends[shard - 1]) if shard else 0)

    def token_range(self, i: int) -> tuple[str, int, int]:
        """(shard name, first token, end token) of sample ``i``: what to look at in the file."""
        shard, j = self.locate(i)
        start = j * self.seq_len
        return self.names[shard], start, start + self.seq_len + 1

    def where(self, epoch: int, index: int) -> dict[str, Any]:
        file, start, end = self.token_range(index)
        return {"tokens": {"file": file, "start": start, "end": end}}

    def __getitem__(self, i: int) -> np.ndarray:
        shard, j = self.locate(i)
        return self.shards[shard][j]

    def read(self, epochs: np.ndarray, indices: np.ndarray) -> np.ndarray:
        """Samples ``indices``, stacked: shape (n, seq_len + 1), int64."""
        indices = np.asarray(indices, dtype=np.int64)
        out = np.empty((indices.size, self.seq_len + 1), dtype=np.int64)
        s = self.seq_len
        for row, i in enumerate(indices.tolist()):
            shard, j = self.locate(i)
            out[row] = files.plain(self.shards[shard].tokens)[j * s : j * s + s + 1]
        return out


def open_token_source(
    paths: str | list[str],
    format: str,
    seq_len: int,
    dtype: str = "uint16",
    *,
    vocab_size: int | None = None,
) -> TokenShards:
    """Token files of one format as one source of ``seq_len + 1``-token samples.

    ``paths`` is a file, a glob (``data/web/*.bin``, matched files sorted) or a list;
    for ``megatron``, a ``.bin`` and its ``.idx`` name one pair. With ``vocab_size``,
    every token id is checked to lie below it (a pass over the files).
    """
    format = _validate.choice("format", format, FORMATS)
    named = expand(paths)
    if format == "megatron":  # PREFIX.bin and PREFIX.idx are one pair: open it once
        named = list(dict.fromkeys(f.removesuffix(".bin").removesuffix(".idx") for f in named))
    readers = {
        "nanogpt": lambda p: read_nanogpt(p, dtype),
        "llmc": read_llmc,
        "npy": read_npy,
        "megatron": lambda p: MegatronIndexed(p).tokens,
    }
    shards = [readers[format](f) for f in named]
    if vocab_size is not None:
        vocab_size = _validate.integer("vocab_size", vocab_size, minimum=1)
        for name, tokens in zip(named, shards):
            check_vocab(name, tokens, vocab_size)
    return TokenShards(shards, seq_len, names=named)
