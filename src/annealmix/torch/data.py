"""Datasets, the batch sampler and the loader that follow the plan (see the package doc)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler, get_worker_info
from torch.utils.data._utils.pin_memory import pin_memory as _pin

from .. import _validate
from .. import metrics as _metrics
from ..plan import Plan
from ..shard import Shard
from ..sources import batch_row, every_item, read, read_batch
from ..stream import MicroBatch, Position, Stream
from .dist import resolve_shard

__all__ = [
    "MixedDataset",
    "MixtureBatchSampler",
    "MixtureDataLoader",
    "MixtureIterableDataset",
    "collated",
]


def _is_stream(source: Any) -> bool:
    if isinstance(source, IterableDataset):
        return True
    return not (hasattr(source, "__len__") and hasattr(source, "__getitem__"))


def _ordered(sources: Mapping[str, Any], plan: Plan) -> list[Any]:
    """Sources in the plan's id order, checked against the plan's names and sizes."""
    names = plan.mixture.sources
    if not isinstance(sources, Mapping) or sorted(sources) != sorted(names):
        given = sorted(sources) if isinstance(sources, Mapping) else type(sources).__name__
        raise ValueError(
            f"sources {given} do not match the plan's sources {sorted(names)}; "
            "give a dict with one source per name in the mixture"
        )
    out = [sources[n] for n in names]
    for k, (name, source) in enumerate(zip(names, out)):
        if _is_stream(source):
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
    epoch)`` (the epoch matters to sources that read by epoch: ``annealmix.sources.read``).

    ``dataset[key]`` is ``{"source": id, "index": index, "sample": sample}``. With
    ``batched=True``, ``__getitems__`` (which DataLoader calls for a whole batch)
    returns the batch already collated, ``source`` and ``index`` as int64 numpy
    arrays, each source's samples read in one call where it reads batches itself
    (``at_epochs``): use it with ``collate_fn=annealmix.torch.collated``.

    Args:
        sources: the sources in the plan's id order (``len`` and ``[]`` each).
        transform: applied to every sample as ``transform(sample, source_id)``.
        batched: collate whole batches in ``__getitems__``.
    """

    def __init__(
        self,
        sources: list[Any],
        transform: Callable[[Any, int], Any] | None = None,
        batched: bool = False,
    ) -> None:
        self.sources, self.transform, self.batched = sources, transform, batched

    def __getitem__(self, key: Any) -> dict[str, Any]:
        k, i, epoch = (int(x) for x in key)
        sample = read(self.sources[k], epoch, i)
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
        parts = []
        for k in np.unique(sources).tolist():
            at = np.flatnonzero(sources == k)
            parts.append((k, at, read_batch(self.sources[k], epochs[at], indices[at])))
        return {"source": sources, "index": indices, "sample": self._collate(parts, len(keys))}

    def _collate(self, parts: list[tuple[int, np.ndarray, Any]], n: int) -> Any:
        """One batch from each source's samples (stacked arrays, dicts of them, or lists)."""
        if self.transform is None:
            stacked = _scatter([(at, got) for _, at, got in parts], n)
            if stacked is not None:
                return stacked
        samples: list[Any] = [None] * n
        for k, at, got in parts:
            for j, row in enumerate(at.tolist()):
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
        self._readers: dict[int, _StreamReader] = {}  # one-shot iterators read on from here

    def __iter__(self) -> Iterator[_Tagged]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        stream = self.stream.copy()
        consumed = stream.consumed
        readers = {
            k: self._reader(k, s, int(consumed[k]))
            for k, s in enumerate(self.sources)
            if _is_stream(s)
        }
        pending: list[MicroBatch] = []
        for i, mb in enumerate(stream):
            if i % workers == worker:
                pending.append(mb)
            if stream.micro == 0:  # a step is complete: its stream draws, in order
                yield from self._emit(pending, readers)
                pending = []
        yield from self._emit(pending, readers)

    def _reader(self, k: int, source: Any, start: int) -> _StreamReader:
        """A reader at draw ``start``: a fresh pass over a re-iterable source, the
        same reader again for a one-shot iterator (a generator cannot restart)."""
        if not isinstance(source, Iterator):
            return _StreamReader(source, start)
        reader = self._readers.get(k)
        if reader is None:
            reader = self._readers[k] = _StreamReader(source, start)
        reader.skip_to(start)
        return reader

    def _emit(
        self, pending: list[MicroBatch], readers: dict[int, _StreamReader]
    ) -> Iterator[_Tagged]:
        got: dict[int, dict[int, Any]] = {}
        for k, reader in readers.items():
            wanted = np.concatenate([mb.draws[mb.sources == k] for mb in pending] or [[]])
            got[k] = reader.read(np.sort(wanted).astype(np.int64).tolist())
        for mb in pending:
            out = []
            index = mb.draws if mb.indices is None else mb.indices
            for k, d, i in zip(mb.sources.tolist(), mb.draws.tolist(), index.tolist()):
                if k in readers:
                    sample, i = got[k][d], d
                else:
                    sample = read(self.sources[k], d // len(self.sources[k]), i)
                if self.transform is not None:
                    sample = self.transform(sample, k)
                out.append({"source": k, "index": i, "sample": sample})
            yield _Tagged(out, mb.after)


def _items(source: Any, start: int) -> tuple[Iterator[Any], int]:
    """The items of a stream, every item whatever the worker, and the number of the
    first one: ``start`` where the source skips on its own, else 0."""
    first = 0
    if start and callable(getattr(source, "skip", None)):
        source, first = source.skip(start), start  # Hugging Face streams skip in their reader
    return every_item(source), first


class _StreamReader:
    """Draw ``d`` of a stream is its ``d``-th item: read forward, keep what is asked.

    The items of the last read are kept, so that a one-shot iterator resumed a step
    back (a loop that stopped inside a step) serves them again.
    """

    def __init__(self, source: Any, start: int) -> None:
        self._it, self._next = _items(source, start)
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
                for _ in range(d - self._next):
                    next(self._it)
                item = next(self._it)
            except StopIteration:
                raise RuntimeError(
                    f"a stream source ended before its item {d} that the plan asks for; "
                    "give it more data, a lower weight, or fewer steps"
                ) from None
            self._next = d + 1
            if keep:
                out[d] = item
        if keep:
            self._last = out
        return out


class MixtureDataLoader(DataLoader):
    """A DataLoader over named sources that follows the plan, with exact resume.

    Picks the map-style path when every source is random-access, the iterable path
    when any is a stream. Every batch travels with the stream position after it, so
    ``state_dict()`` is the state after the last batch handed to the loop, however
    far the workers prefetched, with no replay; it fits ``torch.distributed.checkpoint``'s
    Stateful protocol, and loading it on another world size continues the same
    global stream. A new iteration (``for batch in loader`` again) continues where
    the loop stopped.

    Args:
        sources: the sources by name (each random-access or a stream).
        plan: the plan, its sizes those of the random-access sources.
        shard: this rank's part of each batch (rank, world size, micro-batches);
            by default found once from ``torch.distributed`` or the launcher's
            environment, one micro-batch per step (``resolve_shard``).
        num_steps: the run's steps (``None``: endless).
        transform: applied to every sample as ``transform(sample, source_id)``.
        **kwargs: passed to ``torch.utils.data.DataLoader`` (``num_workers``,
            ``collate_fn``, ``pin_memory``, ...), not the batching arguments.
    """

    def __init__(
        self,
        sources: Mapping[str, Any],
        plan: Plan,
        shard: Shard | None = None,
        *,
        num_steps: int | None = None,
        transform: Callable[[Any, int], Any] | None = None,
        **kwargs: Any,
    ) -> None:
        for arg in ("batch_size", "batch_sampler", "sampler", "shuffle", "drop_last"):
            if arg in kwargs:
                raise TypeError(f"MixtureDataLoader sets {arg} from the plan; remove {arg}=")
        ordered = _ordered(sources, plan)
        sampler = MixtureBatchSampler(plan, shard, num_steps=num_steps)
        sampler._tagged = True
        self._stream = sampler.stream  # where the workers plan from; the loop's: _after
        streams = [n for n, s in zip(plan.mixture.sources, ordered) if _is_stream(s)]
        user_collate = kwargs.pop("collate_fn", None)
        if streams:
            _check_stream_loader(streams, self._stream.shard, kwargs)
            collate = user_collate or torch.utils.data.default_collate
            dataset = MixtureIterableDataset(ordered, self._stream, transform)
            super().__init__(dataset, batch_size=None, collate_fn=_TaggedCollate(collate), **kwargs)
        else:  # without a collate_fn of the user's, whole batches are collated at once
            collate = user_collate or collated
            dataset = MixedDataset(ordered, transform, batched=user_collate is None)
            super().__init__(
                dataset, batch_sampler=sampler, collate_fn=_TaggedCollate(collate), **kwargs
            )
        self.names = plan.mixture.sources
        # fixed-length sources say how many tokens a sample is (windows of seq_len)
        self._tokens_per_sample = {
            n: s.tokens_per_sample for n, s in zip(self.names, ordered)
            if hasattr(s, "tokens_per_sample")
        }  # fmt: skip
        # document sources say how many documents a sample holds (packed: per epoch)
        self._documents_per_sample = {
            n: len(s.documents) / len(s) for n, s in zip(self.names, ordered)
            if hasattr(s, "documents") and hasattr(s, "__len__")
        }  # fmt: skip
        self._after = self._stream.position  # the position after the last batch handed out
        self._boundaries = {0: self._after.consumed}  # step -> plan counts before it (recent)

    def __iter__(self) -> Iterator[Any]:
        self._stream.seek(self._after)  # drop what was prefetched but never handed out
        for tagged in super().__iter__():
            self._handed(tagged.after)
            batch = tagged.value
            if isinstance(batch, dict) and isinstance(batch.get("source"), np.ndarray):
                batch["source"] = torch.from_numpy(batch["source"])
                batch["index"] = torch.from_numpy(batch["index"])
            yield batch

    def _handed(self, after: Position) -> None:
        self._after = after
        if after.micro == 0:
            self._boundaries[after.step] = after.consumed
            if len(self._boundaries) > 2:
                del self._boundaries[min(self._boundaries)]

    @property
    def plan(self) -> Plan:
        """The plan the loader follows."""
        return self._stream.plan

    @property
    def shard(self) -> Shard:
        """This rank's part of each global batch."""
        return self._stream.shard

    @property
    def log(self):
        """An online plan's weight log (``annealmix.weightlog.WeightLog``; its
        ``to_list()`` is what the state holds); empty for other plans."""
        return self._stream.log

    @property
    def step(self) -> int:
        """The step of the next batch the loop receives."""
        return self._after.step

    @property
    def consumed(self) -> np.ndarray:
        """Samples drawn from each source, all ranks together, before ``step``."""
        return self._stream._actual(self._after.consumed)

    def weights_at(self, step: int | np.ndarray) -> np.ndarray:
        """The weights the loader's plan follows at ``step`` (online: under its log)."""
        return self._stream.plan.weights_at(step, log=self._stream.log)

    def __len__(self) -> int:
        """Micro-batches left to hand out (needs ``num_steps``)."""
        stream = self._stream.copy()
        stream.seek(self._after)
        return len(stream)

    def state_dict(self) -> dict[str, Any]:
        """The state after the last batch handed to the loop (no replay)."""
        return self._stream.state_dict(self._after)

    def load_state_dict(self, state: Mapping[str, Any], **kwargs: Any) -> None:
        """``Stream.load_state_dict`` (``replan``, ``previous_sources``)."""
        self._stream.load_state_dict(state, **kwargs)
        self._after = self._stream.position
        self._boundaries = {self._after.step: self._after.consumed}

    @property
    def commit_delay(self) -> int:
        """Steps from the last batch handed out to the first an update may change:
        past every micro-batch the workers may have prefetched (``prefetch_factor``
        x ``num_workers``), plus the step in progress."""
        prefetched = (self.prefetch_factor or 0) * self.num_workers if self.num_workers else 0
        return 1 + -(-prefetched // self._stream.shard.micro_batches)

    def commit(self, weights: Any, *, step: int | None = None, delay: int | None = None) -> int:
        """Online plans (``annealmix.online.OnlinePlan``): ``weights`` take effect at
        ``step``, by default ``delay`` (``commit_delay``) steps after the last batch
        handed out, so every rank that commits at the same point of its loop commits
        the same step, and no prefetched batch changes. Returns the step. Bad weights
        or a step already planned into prefetched batches are refused, the log
        unchanged."""
        if isinstance(self.dataset, MixtureIterableDataset):
            raise ValueError(
                "online updates need map-style sources: with a stream source the plan is "
                "walked inside the workers, which an update cannot reach"
            )
        if step is None:
            wait = self.commit_delay if delay is None else delay
            step = self._after.step + _validate.integer("delay", wait, minimum=1)
        self._stream.commit(step, weights)
        return step

    def metrics(self, step: int, tokens_per_sample: Mapping[str, int] | None = None):
        """``annealmix.metrics.step_metrics`` of this loader's plan at ``step``.

        The steps the loop is at (and the one before) cost no replay: their counts
        travelled with the batches. Tokens are counted for sources of fixed-length
        samples (packed documents, token windows: ``tokens_per_sample``) unless
        ``tokens_per_sample`` names them, and for every source of a plan with lengths;
        documents for document sources (``Packed``: whole-document equivalents,
        ``Padded``: one per sample).
        """
        return _metrics.step_metrics(
            self._stream.plan,
            step,
            consumed=self._boundaries.get(step),
            log=self._stream.log,
            offset=self._stream.offset,
            tokens_per_sample=self._tokens_per_sample if tokens_per_sample is None
            else tokens_per_sample,
            documents_per_sample=self._documents_per_sample,
        )  # fmt: skip


def _check_stream_loader(streams: Sequence[str], shard: Shard, kwargs: Mapping[str, Any]) -> None:
    if kwargs.get("persistent_workers"):
        raise ValueError(
            f"persistent_workers=True cannot be used with stream sources ({', '.join(streams)}): "
            "a persistent worker keeps reading from where its previous pass stopped; leave "
            "persistent_workers unset"
        )
    readers = shard.world_size * max(1, int(kwargs.get("num_workers", 0)))
    if readers > 1:
        warnings.warn(
            f"stream sources {', '.join(streams)} are read in full by each of the "
            f"{shard.world_size} rank(s) x {max(1, int(kwargs.get('num_workers', 0)))} "
            f"worker(s): {readers} reads of every item (a stream has no random access, and "
            "reading only a share would change which item each draw gets). For large data, "
            "use a map-style source (a Hugging Face Dataset, token files)",
            stacklevel=3,
        )
