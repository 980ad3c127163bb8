"""Sources: a sample index -> the sample.

A random-access source is anything with ``len`` and ``[]``: a Python sequence, a
numpy array, a PyTorch map-style ``Dataset``, a Hugging Face ``datasets.Dataset``.
Streams (an ``IterableDataset``, a Hugging Face streaming dataset, a generator) go
through ``annealmix.torch``'s iterable path. A source whose samples change from
epoch to epoch (packed documents, ``annealmix.packing``) also has
``at_epoch(epoch, index)``, and the readers here pass it the draw's epoch
(``draw // len(source)``); ``at_epochs(epochs, indices)`` reads many at once.
Token data is cut into fixed-length samples by ``TokenWindows`` (one array) and
``TokenShards`` (many files), read memory-mapped from:

- ``nanogpt``: flat binary tokens, no header (``uint16``, or ``uint32``);
- ``llmc``: llm.c's files, a 256-int32 header (magic, version, count) then tokens;
- ``npy``: a 1-D integer ``.npy`` array;
- ``megatron``: Megatron-LM's indexed dataset pair ``PREFIX.bin`` + ``PREFIX.idx``
  (as Megatron-LM's and BlendCorpus's preprocessing write them).

A file whose size or header disagrees with its contents is an error when opened,
and so is a file opened as the wrong format where that can be seen: an llm.c
header read as ``nanogpt`` tokens, a Megatron ``.bin`` whose ``.idx`` lies beside it,
``uint32`` tokens read as ``uint16`` (every second 16-bit word zero), token ids at or
above a declared ``vocab_size``, a Megatron index whose pointers, lengths or
document boundaries do not fit its data.
"""

from __future__ import annotations

import glob
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from . import _validate

__all__ = [
    "FORMATS",
    "MegatronIndexed",
    "TokenShards",
    "TokenWindows",
    "batch_row",
    "every_item",
    "open_token_source",
    "read",
    "read_batch",
    "read_llmc",
    "read_nanogpt",
    "read_npy",
]


def every_item(stream: Any) -> Iterator[Any]:
    """Every item of a stream, in order, whichever DataLoader worker reads it.

    A Hugging Face ``IterableDataset`` iterated in a worker gives only that worker's
    shards through ``__iter__``; its batch iterator reads them all.
    """
    if type(stream).__module__.startswith("datasets") and callable(getattr(stream, "iter", None)):
        rows = stream.iter(batch_size=1)
        return ({key: column[0] for key, column in batch.items()} for batch in rows)
    return iter(stream)


def read(source: Any, epoch: int, index: int) -> Any:
    """Sample ``index`` of a random-access source, in pass ``epoch`` over it."""
    at_epoch = getattr(source, "at_epoch", None)
    return source[index] if at_epoch is None else at_epoch(epoch, index)


def read_batch(source: Any, epochs: np.ndarray, indices: np.ndarray) -> Any:
    """Samples ``indices`` (in passes ``epochs``) of one source: stacked where the
    source reads batches itself (``at_epochs``), else a list."""
    at_epochs = getattr(source, "at_epochs", None)
    if at_epochs is not None:
        return at_epochs(epochs, indices)
    return [read(source, e, i) for e, i in zip(epochs.tolist(), indices.tolist())]


def batch_row(batch: Any, i: int) -> Any:
    """Sample ``i`` of what ``read_batch`` gave: a row of a stacked array, of each
    array of a dict, or an item of a list."""
    if isinstance(batch, dict):
        return {key: value[i] for key, value in batch.items()}
    return batch[i]


class TokenWindows:
    """A flat token array cut into samples of ``seq_len + 1`` tokens.

    Sample ``i`` is ``tokens[i * seq_len : (i + 1) * seq_len + 1]``: consecutive
    samples share one token, so each gives ``seq_len`` next-token targets (the
    nanoGPT and Megatron convention). A memory-mapped array is read lazily.

    Args:
        tokens: 1-D integer array (in memory or ``np.memmap``).
        seq_len: tokens per sample, not counting the extra target token.
    """

    def __init__(self, tokens: np.ndarray, seq_len: int) -> None:
        if getattr(tokens, "ndim", None) != 1 or not np.issubdtype(tokens.dtype, np.integer):
            raise ValueError(
                f"tokens must be a 1-D integer array, got {getattr(tokens, 'shape', None)} "
                f"{getattr(tokens, 'dtype', type(tokens).__name__)}"
            )
        self.tokens = tokens
        self.seq_len = _validate.integer("seq_len", seq_len, minimum=1)
        if len(self) == 0:
            raise ValueError(
                f"tokens holds {tokens.size} tokens, fewer than one sample of seq_len + 1 = "
                f"{self.seq_len + 1}; give more tokens or a shorter seq_len"
            )

    def __len__(self) -> int:
        return max(0, (self.tokens.size - 1) // self.seq_len)

    @property
    def tokens_per_sample(self) -> int:
        """Training targets in one sample (what token metrics count)."""
        return self.seq_len

    def __getitem__(self, i: int) -> np.ndarray:
        i = int(i)
        if not 0 <= i < len(self):
            raise IndexError(f"sample {i} is out of range for {len(self)} samples")
        start = i * self.seq_len
        return np.asarray(self.tokens[start : start + self.seq_len + 1], dtype=np.int64)


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

    def __init__(
        self, shards: list[np.ndarray], seq_len: int, names: list[str] | None = None
    ) -> None:
        if not shards:
            raise ValueError("shards is empty; give at least one token array")
        names = names or [f"shard {i}" for i in range(len(shards))]
        self.shards = []
        for name, tokens in zip(names, shards):
            try:
                self.shards.append(TokenWindows(tokens, seq_len))
            except ValueError as err:
                raise ValueError(f"{name}: {err}") from None
        self.seq_len = self.shards[0].seq_len
        self.names = names
        self._ends = np.cumsum([len(s) for s in self.shards])

    def __len__(self) -> int:
        return int(self._ends[-1])

    @property
    def tokens_per_sample(self) -> int:
        """Training targets in one sample (what token metrics count)."""
        return self.seq_len

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

    def __getitem__(self, i: int) -> np.ndarray:
        shard, j = self.locate(i)
        return self.shards[shard][j]


FORMATS = ("llmc", "megatron", "nanogpt", "npy")
_LLMC = {20240520: (1, np.uint16), 20240801: (7, np.uint32)}  # magic: (version, token type)
_LLMC_HEADER = 256  # int32 words
_MEGATRON_MAGIC = b"MMIDIDX\x00\x00"
_CHECK_CHUNK = 1 << 24  # entries a file check reads at once
_MEGATRON_DTYPES = {
    1: np.uint8,
    2: np.int8,
    3: np.int16,
    4: np.int32,
    5: np.int64,
    6: np.float64,
    7: np.float32,
    8: np.uint16,
}


def read_nanogpt(path: str | Path, dtype: str = "uint16") -> np.ndarray:
    """A flat binary token file (nanoGPT's ``.bin``: no header), memory-mapped."""
    dtype = np.dtype(_validate.choice("dtype", dtype, ("uint16", "uint32")))
    path = _existing(path)
    size = path.stat().st_size
    if size % dtype.itemsize:
        raise ValueError(
            f"{path}: {size} bytes is not a whole number of {dtype} tokens "
            f"({dtype.itemsize} bytes each); is the file truncated, or is its dtype another?"
        )
    if path.suffix == ".bin" and path.with_suffix(".idx").is_file():
        raise ValueError(
            f"{path}: a Megatron index {path.with_suffix('.idx').name} lies beside it, so this "
            'is a Megatron .bin (sequences, not one flat stream); use format = "megatron"'
        )
    head = np.fromfile(path, dtype="<i4", count=3)
    if head.size == 3 and int(head[0]) in _LLMC and int(head[1]) == _LLMC[int(head[0])][0]:
        raise ValueError(
            f"{path}: starts with llm.c's header (magic {int(head[0])}, version {int(head[1])}); "
            'read as flat tokens its header would become tokens: use format = "llmc"'
        )
    tokens = np.memmap(path, dtype=dtype, mode="r")
    if dtype == np.uint16:
        sample = np.asarray(tokens[: 1 << 16])
        if sample.size >= 64 and not sample[1::2].any() and sample[0::2].any():
            raise ValueError(
                f"{path}: every second 16-bit word of its first {sample.size} is zero, as in "
                "uint32 tokens read as uint16 (which would double the samples and halve every "
                'token); use dtype = "uint32"'
            )
    return tokens


def read_llmc(path: str | Path) -> np.ndarray:
    """An llm.c token file: a 256-int32 header (magic, version, count), then tokens."""
    path = _existing(path)
    header = np.fromfile(path, dtype="<i4", count=_LLMC_HEADER)
    if header.size < 3 or int(header[0]) not in _LLMC:
        found = int(header[0]) if header.size else None
        raise ValueError(
            f"{path}: not an llm.c token file (magic {found}, expected one of {sorted(_LLMC)})"
        )
    version, dtype = _LLMC[int(header[0])]
    if int(header[1]) != version:
        raise ValueError(f"{path}: llm.c version {int(header[1])}, expected {version}")
    count = int(header[2])
    if count <= 0:
        raise ValueError(f"{path}: llm.c header counts {count} tokens; the file holds no data")
    expected = _LLMC_HEADER * 4 + count * np.dtype(dtype).itemsize
    if path.stat().st_size != expected:
        raise ValueError(
            f"{path}: header says {count} tokens ({expected} bytes with the header) but the "
            f"file has {path.stat().st_size} bytes; the file is truncated or corrupt"
        )
    return np.memmap(path, dtype=dtype, mode="r", offset=_LLMC_HEADER * 4, shape=(count,))


def read_npy(path: str | Path) -> np.ndarray:
    """A 1-D integer ``.npy`` array, memory-mapped."""
    path = _existing(path)
    try:
        tokens = np.load(path, mmap_mode="r")
    except ValueError as err:
        raise ValueError(f"{path}: not a readable .npy file ({err})") from None
    if tokens.ndim != 1 or not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError(f"{path}: expected a 1-D integer array, got {tokens.shape} {tokens.dtype}")
    return tokens


class MegatronIndexed:
    """A Megatron-LM indexed dataset (``PREFIX.bin`` + ``PREFIX.idx``), read with numpy.

    The ``.idx`` holds the token type, each sequence's length and byte offset, and
    the document boundaries; the ``.bin`` holds the tokens. ``tokens`` is the whole
    ``.bin`` as one memory-mapped array (sequences back to back, as Megatron's GPT
    dataset concatenates them); ``annealmix.documents.open_documents`` reads its
    sequences as documents.

    Args:
        prefix: the path without ``.bin``/``.idx`` (either extension is stripped).
    """

    def __init__(self, prefix: str | Path) -> None:
        prefix = str(prefix)
        for ext in (".bin", ".idx"):
            prefix = prefix.removesuffix(ext)
        idx, bin_ = _existing(prefix + ".idx"), _existing(prefix + ".bin")
        with open(idx, "rb") as f:
            head = f.read(9 + 8 + 1 + 8 + 8)
        if len(head) < 34 or head[:9] != _MEGATRON_MAGIC:
            raise ValueError(f"{idx}: not a Megatron index (magic {head[:9]!r})")
        version = int.from_bytes(head[9:17], "little")
        if version != 1:
            raise ValueError(f"{idx}: Megatron index version {version}, expected 1")
        code = head[17]
        if code not in _MEGATRON_DTYPES:
            raise ValueError(f"{idx}: unknown token type code {code}")
        self.dtype = np.dtype(_MEGATRON_DTYPES[code])
        count = int.from_bytes(head[18:26], "little")
        docs = int.from_bytes(head[26:34], "little")
        expected = 34 + count * 4 + count * 8 + docs * 8
        if idx.stat().st_size < expected:
            raise ValueError(
                f"{idx}: counts {count} sequences and {docs} document boundaries, which need "
                f"{expected} bytes, but the file has {idx.stat().st_size}; it is truncated"
            )
        self.lengths = np.memmap(idx, dtype="<i4", mode="r", offset=34, shape=(count,))
        self.pointers = np.memmap(idx, dtype="<i8", mode="r", offset=34 + 4 * count, shape=(count,))
        self.documents = np.memmap(
            idx, dtype="<i8", mode="r", offset=34 + 12 * count, shape=(docs,)
        )
        _check_index(idx, self.lengths, self.pointers, self.documents, self.dtype.itemsize,
                     bin_.stat().st_size)  # fmt: skip
        total = int(self.lengths.sum(dtype=np.int64)) * self.dtype.itemsize
        if bin_.stat().st_size != total:
            raise ValueError(
                f"{idx} and {bin_} disagree: the index counts {total} bytes of tokens, the "
                f"data file has {bin_.stat().st_size}; rebuild the pair with one preprocessing run"
            )
        self.tokens = (
            np.memmap(bin_, dtype=self.dtype, mode="r") if total else np.zeros(0, self.dtype)
        )

    def __len__(self) -> int:
        return int(self.lengths.size)


def _check_index(
    idx: Path,
    lengths: np.ndarray,
    pointers: np.ndarray,
    documents: np.ndarray,
    itemsize: int,
    bin_bytes: int,
) -> None:
    """Megatron index internals, checked vectorised in chunks (memory stays flat for
    indexes of 10^8 sequences): a corrupt index would hand out tokens from the wrong
    place without a word."""
    count = lengths.size
    for a in range(0, count, _CHECK_CHUNK):
        length = np.asarray(lengths[a : a + _CHECK_CHUNK], dtype=np.int64)
        start = np.asarray(pointers[a : a + _CHECK_CHUNK], dtype=np.int64)
        if (length < 0).any():
            i = int(np.flatnonzero(length < 0)[0])
            raise ValueError(
                f"{idx}: sequence {a + i} has a negative length {int(length[i])}; corrupt"
            )
        if (start % itemsize).any():
            i = int(np.flatnonzero(start % itemsize)[0])
            raise ValueError(
                f"{idx}: sequence {a + i} starts at byte {int(start[i])}, not a whole number of "
                f"{itemsize}-byte tokens; corrupt"
            )
        end = start + length * itemsize
        bad = (start < 0) | (end > bin_bytes)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"{idx}: sequence {a + i} spans bytes [{int(start[i])}, {int(end[i])}) but the "
                f".bin has {bin_bytes}; the index does not belong to this data file"
            )
    rising = all(
        (np.diff(np.asarray(documents[a : a + _CHECK_CHUNK + 1])) >= 0).all()
        for a in range(0, max(1, documents.size - 1), _CHECK_CHUNK)
    )
    if documents.size and (int(documents[0]) != 0 or int(documents[-1]) != count or not rising):
        raise ValueError(
            f"{idx}: its document index must rise from 0 to the sequence count {count}, "
            f"got {documents[:3].tolist()} ... {documents[-3:].tolist()}; the index is corrupt"
        )


def _check_vocab(name: str, tokens: np.ndarray, vocab_size: int) -> None:
    for a in range(0, tokens.size, _CHECK_CHUNK):
        top = int(np.asarray(tokens[a : a + _CHECK_CHUNK]).max(initial=0))
        if top >= vocab_size:
            raise ValueError(
                f"{name}: holds token id {top}, not below vocab_size = {vocab_size}; the "
                "file is another tokenizer's, or its dtype or format is another"
            )


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
    files = _expand(paths)
    if format == "megatron":  # PREFIX.bin and PREFIX.idx are one pair: open it once
        files = list(dict.fromkeys(f.removesuffix(".bin").removesuffix(".idx") for f in files))
    readers = {
        "nanogpt": lambda p: read_nanogpt(p, dtype),
        "llmc": read_llmc,
        "npy": read_npy,
        "megatron": lambda p: MegatronIndexed(p).tokens,
    }
    shards = [readers[format](f) for f in files]
    if vocab_size is not None:
        vocab_size = _validate.integer("vocab_size", vocab_size, minimum=1)
        for name, tokens in zip(files, shards):
            _check_vocab(name, tokens, vocab_size)
    return TokenShards(shards, seq_len, names=files)


def _expand(paths: str | list[str]) -> list[str]:
    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not items:
        raise ValueError("path is empty; give a file, a glob or a list of files")
    files = []
    for item in map(str, items):
        if any(c in item for c in "*?["):
            matched = sorted(glob.glob(item))
            if not matched:
                raise FileNotFoundError(f"no files match {item!r}")
            files += matched
        else:
            files.append(item)
    return files


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"token file {str(path)!r} does not exist (a missing shard?)")
    if path.stat().st_size == 0:
        raise ValueError(f"token file {str(path)!r} is empty (0 bytes); remove it or rebuild it")
    return path
