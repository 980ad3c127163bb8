"""Token files read memory-mapped, each checked against its own header and size.

- ``nanogpt``: flat binary tokens, no header (``uint16``, or ``uint32``);
- ``llmc``: llm.c's files, a 256-int32 header (magic, version, count) then tokens;
- ``npy``: a 1-D integer ``.npy`` array;
- ``megatron``: Megatron-LM's indexed dataset pair ``PREFIX.bin`` + ``PREFIX.idx``
  (as Megatron-LM's and BlendCorpus's preprocessing write them).

Token files stay closed until read: their arrays are ``Mapped``, mapped on use
through a process-wide pool of at most ``max_open_files()`` maps (least recently
used closed first), so a list of 10,000 files (or shards) holds a bounded number of
file descriptors.

A file whose size or header disagrees with its contents is an error when opened,
and so is a file opened as the wrong format where that can be seen: an llm.c
header read as ``nanogpt`` tokens, a Megatron ``.bin`` whose ``.idx`` lies beside it,
``uint32`` tokens read as ``uint16`` (every second 16-bit word zero), token ids at or
above a declared ``vocab_size``, a Megatron index whose pointers, lengths or
document boundaries do not fit its data.
"""

from __future__ import annotations

import glob
import mmap
import os
import resource
import threading
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from . import _validate

__all__ = ["FORMATS", "Mapped", "MegatronIndexed", "check_vocab", "expand", "max_open_files",
           "missing", "plain", "read_llmc", "release", "read_nanogpt", "read_npy"]  # fmt: skip


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


_maps: OrderedDict[str, np.ndarray] = OrderedDict()  # path -> its bytes, mapped
_maps_lock = threading.Lock()


def max_open_files() -> int:
    """Files ``Mapped`` arrays keep mapped at once, per process: ``ANNEALMIX_MAX_OPEN_FILES``,
    else a quarter of the process's open-file limit (``ulimit -n``; the rest is left
    to everything else: DataLoader workers, sockets), at least 4. Each map holds one
    file descriptor; a Megatron pair is two files."""
    wanted = os.environ.get("ANNEALMIX_MAX_OPEN_FILES")
    if wanted is not None:
        try:
            value = int(wanted)
        except ValueError:
            value = 0
        if value < 1:
            raise ValueError(
                f"ANNEALMIX_MAX_OPEN_FILES must be a whole number >= 1, got {wanted!r}; unset "
                "it for a quarter of the open-file limit (ulimit -n)"
            )
        return value
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return max(4, (1 << 16 if soft == resource.RLIM_INFINITY else soft) // 4)


class _Churn:
    """Whether the pool closes maps it is about to open again: the files a step reads
    outnumber it, and every step maps them anew. Said once per process."""

    def __init__(self) -> None:
        self.seen: set[str] = set()  # every path mapped so far (a list's worth)
        self.asked = self.again = 0  # since the last look
        self.said = False

    def count(self, path: str, hit: bool, limit: int) -> None:
        self.asked += 1
        if not hit:
            self.again += path in self.seen
            self.seen.add(path)
        if self.asked < 8 * limit:
            return
        if 2 * self.again > self.asked and not self.said:
            self.said = True
            warnings.warn(
                f"annealmix: {self.again:,} of the last {self.asked:,} reads of token files "
                f"mapped again a file the pool of {limit:,} maps had closed: the files a step "
                "reads outnumber the pool, so each step maps them anew (several times slower: "
                "see the README's thousands of files); raise the open-file limit (ulimit -n) "
                "and ANNEALMIX_MAX_OPEN_FILES above the files a step reads (two per Megatron "
                "pair)",
                stacklevel=2,
            )
        self.asked = self.again = 0


_churn = _Churn()


def _mapped(path: str) -> np.ndarray:
    """The bytes of ``path``, mapped (a plain ndarray over the map), from the pool."""
    with _maps_lock:
        found = _maps.get(path)
        if found is not None:
            _maps.move_to_end(path)
            _churn.count(path, True, len(_maps))
            return found
    fd = os.open(path, os.O_RDONLY)
    try:  # the map holds a descriptor of its own (mmap duplicates it)
        found = np.frombuffer(mmap.mmap(fd, 0, access=mmap.ACCESS_READ), dtype=np.uint8)
    except ValueError:  # an empty file cannot be mapped
        found = np.zeros(0, dtype=np.uint8)
    finally:
        os.close(fd)
    limit = max_open_files()
    with _maps_lock:
        _maps[path] = found
        _maps.move_to_end(path)
        while len(_maps) > limit:
            _maps.popitem(last=False)  # its map closes once no read holds it
        _churn.count(path, False, limit)
    return found


def release(paths: Any = None) -> None:
    """Close the pool's maps of ``paths`` (say, the files of a list that failed to
    open; ``None``: every map), once no read holds them."""
    with _maps_lock:
        for path in list(_maps) if paths is None else map(str, paths):
            _maps.pop(path, None)


class Mapped:
    """``count`` values of ``dtype`` at byte ``offset`` of a file, read on use.

    The file is mapped only while it is read, through a pool of at most
    ``max_open_files()`` maps, so any number of ``Mapped`` arrays holds a bounded
    number of file descriptors. It reads as a 1-D array: a slice is another
    ``Mapped`` (nothing read), an index or an index array reads values (a copy:
    nothing handed out keeps a map open), ``np.asarray`` reads it all. It pickles as
    its path, dtype, offset and count.
    """

    __slots__ = ("path", "dtype", "offset", "count")
    ndim = 1

    def __init__(self, path: str | Path, dtype: Any, offset: int = 0, count: int | None = None):
        self.path, self.dtype, self.offset = str(path), np.dtype(dtype), int(offset)
        if count is None:
            count = (os.path.getsize(self.path) - self.offset) // self.dtype.itemsize
        self.count = int(count)

    def __len__(self) -> int:
        return self.count

    @property
    def size(self) -> int:
        return self.count

    @property
    def shape(self) -> tuple[int]:
        return (self.count,)

    def array(self) -> np.ndarray:
        """The values as an ndarray over the pool's map: read it now, do not keep it
        (it would hold the file open after the pool lets it go)."""
        end = self.offset + self.count * self.dtype.itemsize
        return _mapped(self.path)[self.offset : end].view(self.dtype)

    def __getitem__(self, at: Any) -> Any:
        if isinstance(at, slice) and at.step in (None, 1):
            start, stop, _ = at.indices(self.count)
            size = self.dtype.itemsize
            return Mapped(self.path, self.dtype, self.offset + start * size, max(0, stop - start))
        got = self.array()[at]
        if isinstance(at, np.ndarray) or not isinstance(got, np.ndarray):
            return got  # an index array reads a copy already
        return got.copy()

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.array(self.array(), dtype=dtype)

    def tolist(self) -> list:
        return self.array().tolist()

    def __repr__(self) -> str:
        return f"Mapped({self.path!r}, {self.dtype}, offset={self.offset}, count={self.count})"


def plain(array: Any) -> Any:
    """What to read ``array`` through now: a ``Mapped``'s values over the pool's map
    (read them, do not keep them), any other array as it is."""
    return array.array() if isinstance(array, Mapped) else array


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
    tokens = Mapped(path, dtype)
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
    return Mapped(path, dtype, _LLMC_HEADER * 4, count)


def read_npy(path: str | Path) -> np.ndarray:
    """A 1-D integer ``.npy`` array, memory-mapped."""
    path = _existing(path)
    try:
        tokens = np.load(path, mmap_mode="r")
    except ValueError as err:
        raise ValueError(f"{path}: not a readable .npy file ({err})") from None
    if tokens.ndim != 1 or not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError(f"{path}: expected a 1-D integer array, got {tokens.shape} {tokens.dtype}")
    if not isinstance(tokens, np.memmap):  # an empty array: numpy maps nothing
        return np.asarray(tokens)
    return Mapped(path, tokens.dtype, tokens.offset, tokens.size)


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
        idx_bytes, bin_bytes = idx.stat().st_size, bin_.stat().st_size
        if idx_bytes < expected:
            raise ValueError(
                f"{idx}: counts {count} sequences and {docs} document boundaries, which need "
                f"{expected} bytes, but the file has {idx_bytes}; it is truncated"
            )
        # The index's three arrays and the tokens, mapped only while read (``Mapped``).
        self.lengths = Mapped(idx, "<i4", 34, count)
        self.pointers = Mapped(idx, "<i8", 34 + 4 * count, count)
        self.documents = Mapped(idx, "<i8", 34 + 12 * count, docs)
        _check_index(idx, self.lengths, self.pointers, self.documents, self.dtype.itemsize,
                     bin_bytes)  # fmt: skip
        total = int(np.asarray(self.lengths).sum(dtype=np.int64)) * self.dtype.itemsize
        if bin_bytes != total:
            raise ValueError(
                f"{idx} and {bin_} disagree: the index counts {total} bytes of tokens, the "
                f"data file has {bin_bytes}; rebuild the pair with one preprocessing run"
            )
        tokens = total // self.dtype.itemsize
        self.tokens = Mapped(bin_, self.dtype, 0, tokens) if total else np.zeros(0, self.dtype)

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


def check_vocab(name: str, tokens: np.ndarray, vocab_size: int) -> None:
    for a in range(0, tokens.size, _CHECK_CHUNK):
        top = int(np.asarray(tokens[a : a + _CHECK_CHUNK]).max(initial=0))
        if top >= vocab_size:
            raise ValueError(
                f"{name}: holds token id {top}, not below vocab_size = {vocab_size}; the "
                "file is another tokenizer's, or its dtype or format is another"
            )


def expand(paths: str | list[str]) -> list[str]:
    """A file, a glob or a list of them -> the files (each glob's matches sorted)."""
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


def missing(paths: str | list[str], format: str) -> list[str]:
    """The paths among ``paths`` (files, globs) that name no file, each with why:
    a glob that matches nothing, a file that is not there, a Megatron prefix whose
    ``.bin`` or ``.idx`` is not there."""
    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    out = []
    for item in map(str, items):
        if any(c in item for c in "*?["):
            if not glob.glob(item):
                out.append(f"{item} (no file matches)")
        elif format == "megatron":
            prefix = item.removesuffix(".bin").removesuffix(".idx")
            out += [prefix + ext for ext in (".bin", ".idx") if not Path(prefix + ext).is_file()]
        elif not Path(item).is_file():
            out.append(item)
    return out


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"token file {str(path)!r} does not exist (a missing shard?)")
    if path.stat().st_size == 0:
        raise ValueError(f"token file {str(path)!r} is empty (0 bytes); remove it or rebuild it")
    return path
