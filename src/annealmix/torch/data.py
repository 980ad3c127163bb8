"""Datasets and the batch sampler that follow the plan (see the package doc)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, Sampler, get_worker_info
from torch.utils.data._utils.pin_memory import pin_memory as _pin

from ..plan import Plan
from ..reading import StreamReader, read_grouped, read_step
from ..shard import Shard
from ..sources import as_source, batch_row, is_stream, read_one
from ..stream import MicroBatch, Position, Stream
from .dist import resolve_shard

__all__ = [
    "MixedDataset",
    "MixtureBatchSampler",
    "MixtureIterableDataset",
    "collated",
]


def _ordered(sources: Mapping[str, Any], plan: Plan) -> list[Any]:
    """Sources in the plan's id order, checked against the plan's names and sizes."""
    names = plan.mixture.sources
    if not isinstance(sources, Mapping) or sorted(sources) != sorted(names):
        given = sorted(sources) if isinstance(sources, Mapping) else type(sources).__name__
        raise ValueError(
            f"sources {given} do not match the plan's sources {sorted(names)}; "
            "give a dict with one source per name in the mixture"
        )
    out = [sources[n] if is_stream(sources[n]) else as_source(sources[n], n) for n in names]
    for k, (name, source) in enumerate(zip(names, out)):
        if is_stream(source):
            if plan.sizes is not None and plan.orders[k] != "sequential":
                warnings.warn(
                    f"source {name!r} is a stream, read in order: its order "
                    f"{plan.orders[k]!r} has no effect",
                    stacklevel=3,
                )
            continue
        if plan.sizes is None:
            raise ValueError(
                f"source {name!r} is random-access but the plan has no sizes; build the Plan "
                "with sizes={name: len(source)}"
            )
        if len(source) != plan.sizes[k]:
            raise ValueError(
                f"source {name!r} holds {len(source)} samples but the plan's size for it is "
                f"{plan.sizes[k]}; build the Plan with sizes from the sources themselves"
            )
    return out


class _Tagged:
    """A micro-batch (keys, samples or the collated batch) with the stream position
    after it: the position travels with the batch through workers and queues, so
    the loader knows the state of exactly what it handed to the loop."""

    __slots__ = ("value", "after")

    def __init__(self, value: Any, after: Position) -> None:
        self.value, self.after = value, after

    def pin_memory(self, device: Any = None) -> _Tagged:  # DataLoader(pin_memory=True)
        return _Tagged(_pin(self.value, device), self.after)


class _TaggedCollate:
    """Applies the loader's collate function inside a ``_Tagged``."""

    def __init__(self, collate_fn: Callable[[Any], Any]) -> None:
        self.collate_fn = collate_fn

    def __call__(self, data: Any) -> Any:
        if isinstance(data, _Tagged):
            return _Tagged(self.collate_fn(data.value), data.after)
        return self.collate_fn(data)


def _keys(mb: MicroBatch, sizes: np.ndarray | None) -> np.ndarray:
    """Rows of (source id, index, epoch), int64, shape (micro-batch size, 3): the epoch
    of a draw is ``draw // size`` (0 for a plan without sizes)."""
    index = mb.draws if mb.indices is None else mb.indices
    epoch = np.zeros_like(mb.draws) if sizes is None else mb.draws // sizes.take(mb.sources)
    return np.stack([mb.sources.astype(np.int64), index, epoch], axis=1)


class MixedDataset(Dataset):
    """Random-access sources behind one map-style dataset keyed by ``(source id, index,
    epoch)`` (the epoch matters to sources that read by epoch, such as packed documents).

    ``dataset[key]`` is ``{"source": id, "index": index, "sample": sample}``. With
    ``batched=True``, ``__getitems__`` (which DataLoader calls for a whole batch)
    returns the batch already collated, ``source`` and ``index`` as int64 numpy
    arrays, each source's samples read in one call (``Source.read``): use it with
    ``collate_fn=annealmix.torch.collated``.

    Args:
        sources: the sources in the plan's id order (``annealmix.sources.Source``
            each, or anything with ``len`` and ``[]``).
        transform: applied to every sample as ``transform(sample, source_id)``.
        batched: collate whole batches in ``__getitems__``.
    """

    def __init__(
        self,
        sources: list[Any],
        transform: Callable[[Any, int], Any] | None = None,
        batched: bool = False,
    ) -> None:
        self.sources = [as_source(s) for s in sources]
        self.transform, self.batched = transform, batched

    def __getitem__(self, key: Any) -> dict[str, Any]:
        k, i, epoch = (int(x) for x in key)
        sample = read_one(self.sources[k], epoch, i)
        if self.transform is not None:
            sample = self.transform(sample, k)
        return {"source": k, "index": i, "sample": sample}

    def __getitems__(self, keys: Any) -> Any:
        if isinstance(keys, _Tagged):
            return _Tagged(self.__getitems__(keys.value), keys.after)
        keys = np.asarray(keys, dtype=np.int64).reshape(-1, 3)
        if not self.batched:
            return [self[key] for key in keys]
        # Ids stay numpy here: from a worker, a small array is pickled by value, while
        # a tensor costs a shared-memory segment of its own (measured: 20% of the
        # throughput with 2 workers). MixtureDataLoader makes them tensors.
        sources, indices, epochs = keys[:, 0].copy(), keys[:, 1].copy(), keys[:, 2]
        parts = read_grouped(self.sources, sources, epochs, indices)
        return {"source": sources, "index": indices, "sample": self._collate(parts, len(keys))}

    def _collate(self, parts: list[tuple[np.ndarray, np.ndarray, Any]], n: int) -> Any:
        """One batch from each source's samples (stacked arrays, dicts of them, or lists)."""
        if self.transform is None:
            stacked = _scatter([(at, got) for _, at, got in parts], n)
            if stacked is not None:
                return stacked
        samples: list[Any] = [None] * n
        for ks, at, got in parts:
            for j, (k, row) in enumerate(zip(ks.tolist(), at.tolist())):
                sample = batch_row(got, j)
                samples[row] = sample if self.transform is None else self.transform(sample, k)
        return _stack(samples)

    def __len__(self) -> int:
        return sum(len(s) for s in self.sources)


def _scatter(parts: list[tuple[np.ndarray, Any]], n: int) -> Any:
    """Stacked per-source samples put in batch order as one tensor (or a dict of them);
    ``None`` unless every source gave the same stacked shape."""
    first = parts[0][1]
    if isinstance(first, np.ndarray):
        if not all(isinstance(g, np.ndarray) and g.shape[1:] == first.shape[1:] and
                   g.dtype == first.dtype for _, g in parts):  # fmt: skip
            return None
        out = np.empty((n, *first.shape[1:]), dtype=first.dtype)
        for at, got in parts:
            out[at] = got
        return torch.from_numpy(out)
    if isinstance(first, dict) and all(
        isinstance(g, dict) and g.keys() == first.keys() for _, g in parts
    ):
        fields = {key: _scatter([(at, g[key]) for at, g in parts], n) for key in first}
        return None if any(v is None for v in fields.values()) else fields
    return None


def _stack(samples: list[Any]) -> Any:
    """Equal-shape numpy samples stack in one copy; anything else goes to default_collate."""
    first = samples[0] if samples else None
    if isinstance(first, np.ndarray) and all(
        isinstance(x, np.ndarray) and x.shape == first.shape for x in samples
    ):
        return torch.from_numpy(np.stack(samples))
    return torch.utils.data.default_collate(samples)


def collated(batch: Any) -> Any:
    """The collate function for batches a ``MixedDataset(batched=True)`` collated itself."""
    return batch


class MixtureBatchSampler(Sampler):
    """Yields this rank's micro-batches as ``(source id, index)`` rows (int64 arrays).

    Stateful (``state_dict``/``load_state_dict``): the state after the keys it
    produced last, which is what torchdata's ``StatefulDataLoader`` snapshots.

    Args:
        plan: the plan.
        shard: this rank's part of each batch; by default found once from
            ``torch.distributed`` or the launcher's environment (``resolve_shard``).
        num_steps: the run's steps (``None``: endless).
    """

    def __init__(self, plan: Plan, shard: Shard | None = None, *, num_steps: int | None = None):
        shard = resolve_shard(plan.global_batch_size) if shard is None else shard
        self.stream = Stream(plan, shard, num_steps=num_steps)
        self._sizes = None if plan.sizes is None else np.array(plan.sizes, dtype=np.int64)
        self._tagged = False  # MixtureDataLoader: each key array carries its position

    def __iter__(self) -> Iterator[Any]:
        for mb in self.stream:
            keys = _keys(mb, self._sizes)
            yield _Tagged(keys, mb.after) if self._tagged else keys

    def __len__(self) -> int:
        return len(self.stream)

    def state_dict(self) -> dict[str, Any]:
        return self.stream.state_dict()

    def load_state_dict(self, state: Mapping[str, Any], **kwargs: Any) -> None:
        """``Stream.load_state_dict`` (``replan``, ``previous_sources``)."""
        self.stream.load_state_dict(state, **kwargs)


class MixtureIterableDataset(IterableDataset):
    """This rank's micro-batches as an iterable dataset, for sources that are streams.

    DataLoader worker ``w`` of ``n`` produces micro-batches ``w, w + n, ...``, which
    the DataLoader returns round-robin: the original order. A stream has no random
    access, so draw ``d`` of a stream source is its ``d``-th item, and every rank and
    worker reads the whole stream up to the draws the plan gives it (reading only a
    share would change which item each draw gets); on resume it skips the items
    already drawn (through the source's own ``skip`` where it has one). A Hugging
    Face streaming dataset is read whole in every worker too (left to itself it
    would give each worker only some of its shards). Each item is a list of samples:
    use ``batch_size=None``.

    Args:
        sources: the sources in the plan's id order.
        stream: this rank's ``Stream`` (its position is where iteration starts).
        transform: applied to every sample as ``transform(sample, source_id)``.
    """

    def __init__(
        self,
        sources: list[Any],
        stream: Stream,
        transform: Callable[[Any, int], Any] | None = None,
    ) -> None:
        self.sources, self.stream, self.transform = sources, stream, transform
        self._readers: dict[int, StreamReader] = {}  # one-shot iterators read on from here

    def __iter__(self) -> Iterator[_Tagged]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        stream = self.stream.copy()
        consumed = stream.consumed
        readers = {
            k: self._reader(k, s, int(consumed[k]))
            for k, s in enumerate(self.sources)
            if is_stream(s)
        }
        pending: list[MicroBatch] = []
        for i, mb in enumerate(stream):
            if i % workers == worker:
                pending.append(mb)
            if stream.micro == 0:  # a step is complete: its stream draws, in order
                yield from self._emit(pending, readers)
                pending = []
        yield from self._emit(pending, readers)

    def _reader(self, k: int, source: Any, start: int) -> StreamReader:
        """A reader at draw ``start``: a fresh pass over a re-iterable source, the
        same reader again for a one-shot iterator (a generator cannot restart)."""
        name = self.stream.plan.mixture.sources[k]
        if not isinstance(source, Iterator):
            return StreamReader(source, start, name)
        reader = self._readers.get(k)
        if reader is None:
            reader = self._readers[k] = StreamReader(source, start, name)
        reader.skip_to(start)
        return reader

    def _emit(
        self, pending: list[MicroBatch], readers: dict[int, StreamReader]
    ) -> Iterator[_Tagged]:
        got = read_step(readers, pending)
        sizes = np.array([1 if k in readers else len(s) for k, s in enumerate(self.sources)])
        for mb in pending:
            index = mb.draws if mb.indices is None else mb.indices
            ids, draws = mb.sources.tolist(), mb.draws.tolist()
            mapped = np.array([row for row, k in enumerate(ids) if k not in readers], np.intp)
            samples: list[Any] = [None] * len(ids)
            src = mb.sources[mapped]
            for _, at, batch in read_grouped(self.sources, src, mb.draws[mapped] // sizes[src],
                                             index[mapped]):  # fmt: skip
                for j, row in enumerate(mapped[at].tolist()):  # each read once
                    samples[row] = batch_row(batch, j)
            out = []
            for row, (k, d, i) in enumerate(zip(ids, draws, index.tolist())):
                sample = got[k][d] if k in readers else samples[row]
                if self.transform is not None:
                    sample = self.transform(sample, k)
                out.append({"source": k, "index": d if k in readers else i, "sample": sample})
            yield _Tagged(out, mb.after)
