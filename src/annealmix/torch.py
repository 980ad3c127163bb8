"""PyTorch integration: the plan drives what every rank and DataLoader worker loads.

The only module that imports torch (extra ``torch``). Two paths, one loader:

- map-style, for random-access sources (anything with ``len`` and ``[]``):
  ``MixtureBatchSampler`` yields each micro-batch's ``(source id, index)`` keys and
  ``MixedDataset`` fetches them, so any ``num_workers`` splits whole micro-batches;
  the sampler is Stateful, so torchdata's ``StatefulDataLoader`` resumes it too;
- iterable, when any source is a stream (an ``IterableDataset``, a Hugging Face
  streaming dataset, a generator): ``MixtureIterableDataset`` reads each stream in
  order and keeps the draws the plan gives this rank and worker.

``MixtureDataLoader`` picks the path and counts what the loop consumed, so its
``state_dict()`` is exact however far the workers prefetched. Every sample comes
with its source id: ``{"source": id, "index": index, "sample": sample}``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler, get_worker_info

from . import metrics as _metrics
from .plan import Plan
from .shard import MicroBatch, Shard, ShardStream

__all__ = [
    "MixedDataset",
    "MixtureBatchSampler",
    "MixtureDataLoader",
    "MixtureIterableDataset",
    "all_reduce_metrics",
    "loss_by_source",
    "mix_losses",
    "resolve_rank",
]

# (rank, world size) variables, in the order launchers are tried: torchrun and ezpz,
# MPICH/Intel MPI (PMI), Open MPI, SLURM.
_ENV = (
    ("RANK", "WORLD_SIZE"),
    ("PMI_RANK", "PMI_SIZE"),
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),
    ("SLURM_PROCID", "SLURM_NTASKS"),
)


def resolve_rank(
    rank: int | None = None, world_size: int | None = None, group: Any = None
) -> tuple[int, int]:
    """This process's data-parallel (rank, world size).

    Explicit arguments win; then the group (default: the world) of an initialised
    ``torch.distributed``; then the launcher's environment (``RANK``/``WORLD_SIZE``,
    ``PMI_*``, ``OMPI_COMM_WORLD_*``, ``SLURM_*``); else a single process (0, 1).
    """
    if (rank is None) != (world_size is None):
        raise ValueError(
            f"give both rank and world_size or neither, got rank={rank!r}, "
            f"world_size={world_size!r}"
        )
    if rank is not None:
        return int(rank), int(world_size)  # type: ignore[arg-type]
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(group), dist.get_world_size(group)
    for rank_var, size_var in _ENV:
        if rank_var in os.environ and size_var in os.environ:
            try:
                return int(os.environ[rank_var]), int(os.environ[size_var])
            except ValueError:
                raise ValueError(
                    f"environment {rank_var}={os.environ[rank_var]!r}, "
                    f"{size_var}={os.environ[size_var]!r} are not integers; fix the launcher "
                    "or pass rank= and world_size="
                ) from None
    return 0, 1


def _is_stream(source: Any) -> bool:
    if isinstance(source, IterableDataset):
        return True
    return not (hasattr(source, "__len__") and hasattr(source, "__getitem__"))


def _ordered(sources: Mapping[str, Any], plan: Plan) -> list[Any]:
    """Sources in the plan's id order, checked against the plan's names and sizes."""
    names = plan.mixture.sources
    if sorted(sources) != sorted(names):
        raise ValueError(
            f"sources {sorted(sources)} do not match the plan's sources {sorted(names)}; "
            "give one source per name in the mixture"
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


def _keys(mb: MicroBatch) -> list[tuple[int, int]]:
    index = mb.draws if mb.indices is None else mb.indices
    return list(zip(mb.sources.tolist(), index.tolist()))


class MixedDataset(Dataset):
    """Random-access sources behind one map-style dataset keyed by ``(source id, index)``.

    Args:
        sources: the sources in the plan's id order (``len`` and ``[]`` each).
        transform: applied to every sample as ``transform(sample, source_id)``.
    """

    def __init__(self, sources: list[Any], transform: Callable[[Any, int], Any] | None = None):
        self.sources, self.transform = sources, transform

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        k, i = key
        sample = self.sources[k][i]
        if self.transform is not None:
            sample = self.transform(sample, k)
        return {"source": k, "index": i, "sample": sample}

    def __len__(self) -> int:
        return sum(len(s) for s in self.sources)


class MixtureBatchSampler(Sampler):
    """Yields this rank's micro-batches as lists of ``(source id, index)`` keys.

    Stateful (``state_dict``/``load_state_dict``): the state after the keys it
    produced last, which is what ``StatefulDataLoader`` snapshots.

    Args:
        plan: the plan.
        rank, world_size, group: see ``resolve_rank``.
        micro_batches: gradient-accumulation micro-batches per step on each rank.
        num_steps: the run's steps (``None``: endless).
    """

    def __init__(
        self,
        plan: Plan,
        *,
        rank: int | None = None,
        world_size: int | None = None,
        group: Any = None,
        micro_batches: int = 1,
        num_steps: int | None = None,
    ) -> None:
        r, w = resolve_rank(rank, world_size, group)
        shard = Shard(
            global_batch_size=plan.global_batch_size,
            rank=r,
            world_size=w,
            micro_batches=micro_batches,
        )
        self.stream = ShardStream(plan, shard, num_steps=num_steps)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        self.stream.mark()
        for mb in self.stream:
            yield _keys(mb)

    def __len__(self) -> int:
        s = self.stream
        if s.num_steps is None:
            raise TypeError("an endless MixtureBatchSampler has no length; give num_steps")
        return max(0, (s.num_steps - s.step) * s.shard.micro_batches - s.micro)

    def state_dict(self) -> dict[str, Any]:
        return self.stream.state_dict()

    def load_state_dict(self, state: Mapping[str, Any], *, replan: bool = False) -> None:
        self.stream.load_state_dict(state, replan=replan)


class MixtureIterableDataset(IterableDataset):
    """This rank's micro-batches as an iterable dataset, for sources that are streams.

    DataLoader worker ``w`` of ``n`` produces micro-batches ``w, w + n, ...``, which
    the DataLoader returns round-robin: the original order. A stream is read in
    order on every rank and worker, keeping the draws the plan gives it (as Hugging
    Face's ``split_dataset_by_node`` does for streams), so its order is always
    sequential; on resume it is read past the draws already consumed. Each item is
    already a list of samples: use ``batch_size=None`` and the loader's collate.

    Args:
        sources: the sources in the plan's id order.
        stream: this rank's ``ShardStream`` (its position is where iteration starts).
        transform: applied to every sample as ``transform(sample, source_id)``.
    """

    def __init__(
        self,
        sources: list[Any],
        stream: ShardStream,
        transform: Callable[[Any, int], Any] | None = None,
    ) -> None:
        self.sources, self.stream, self.transform = sources, stream, transform

    def __iter__(self) -> Iterator[list[dict[str, Any]]]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        stream = ShardStream(self.stream.plan, self.stream.shard, num_steps=self.stream.num_steps)
        stream.load_state_dict(self.stream.state_dict())
        readers = {
            k: _StreamReader(s, int(stream.consumed[k]))
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

    def _emit(
        self, pending: list[MicroBatch], readers: dict[int, _StreamReader]
    ) -> Iterator[list[dict[str, Any]]]:
        read: dict[int, dict[int, Any]] = {}
        for k, reader in readers.items():
            wanted = np.concatenate([mb.draws[mb.sources == k] for mb in pending] or [[]])
            read[k] = reader.read(np.sort(wanted).tolist())
        for mb in pending:
            out = []
            index = mb.draws if mb.indices is None else mb.indices
            for k, d, i in zip(mb.sources.tolist(), mb.draws.tolist(), index.tolist()):
                sample, i = (read[k][d], d) if k in readers else (self.sources[k][i], i)
                if self.transform is not None:
                    sample = self.transform(sample, k)
                out.append({"source": k, "index": i, "sample": sample})
            yield out


class _StreamReader:
    """Draw ``d`` of a stream is its ``d``-th item: read forward, keep what is asked."""

    def __init__(self, source: Any, start: int) -> None:
        self._it = iter(source)
        self._next = 0
        self.read([start - 1] if start else [], keep=False)

    def read(self, draws: list[int], keep: bool = True) -> dict[int, Any]:
        """Items at ``draws`` (increasing, none before the last read)."""
        out = {}
        for d in draws:
            if d < self._next:
                raise RuntimeError(f"stream draw {d} was asked after draw {self._next - 1}")
            try:
                for _ in range(d - self._next):
                    next(self._it)
                item = next(self._it)
            except StopIteration:
                raise RuntimeError(
                    f"a stream source ended before its sample {d} that the plan asks for; "
                    "give it more data, a lower weight, or fewer steps"
                ) from None
            self._next = d + 1
            if keep:
                out[d] = item
        return out


class MixtureDataLoader(DataLoader):
    """A DataLoader over named sources that follows the plan, with exact resume.

    Picks the map-style path when every source is random-access, the iterable path
    when any is a stream. ``state_dict()`` is the state after the batches this loader
    has handed to the loop (prefetched ones do not count), and fits
    ``torch.distributed.checkpoint``'s Stateful protocol; loading it on another world
    size continues the same global stream. A new iteration (``for batch in loader``
    again) continues where the loop stopped.

    Args:
        sources: the sources by name (each random-access or a stream).
        plan: the plan, its sizes those of the random-access sources.
        rank, world_size, group: see ``resolve_rank``.
        micro_batches: gradient-accumulation micro-batches per step on each rank;
            each batch the loader yields is one micro-batch.
        num_steps: the run's steps (``None``: endless).
        transform: applied to every sample as ``transform(sample, source_id)``.
        **kwargs: passed to ``torch.utils.data.DataLoader`` (``num_workers``,
            ``collate_fn``, ``pin_memory``, ...), not the batching arguments.
    """

    def __init__(
        self,
        sources: Mapping[str, Any],
        plan: Plan,
        *,
        rank: int | None = None,
        world_size: int | None = None,
        group: Any = None,
        micro_batches: int = 1,
        num_steps: int | None = None,
        transform: Callable[[Any, int], Any] | None = None,
        **kwargs: Any,
    ) -> None:
        for arg in ("batch_size", "batch_sampler", "sampler", "shuffle", "drop_last"):
            if arg in kwargs:
                raise TypeError(f"MixtureDataLoader sets {arg} from the plan; remove {arg}=")
        ordered = _ordered(sources, plan)
        sampler = MixtureBatchSampler(
            plan,
            rank=rank,
            world_size=world_size,
            group=group,
            micro_batches=micro_batches,
            num_steps=num_steps,
        )
        if any(_is_stream(s) for s in ordered):
            kwargs.setdefault("collate_fn", torch.utils.data.default_collate)
            dataset = MixtureIterableDataset(ordered, sampler.stream, transform)
            super().__init__(dataset, batch_size=None, **kwargs)
        else:
            super().__init__(MixedDataset(ordered, transform), batch_sampler=sampler, **kwargs)
        self.stream = sampler.stream
        self.names = plan.mixture.sources
        self._handed = 0  # batches handed to the loop since the stream's mark

    def __iter__(self) -> Iterator[Any]:
        if self._handed:  # drop what was prefetched but never handed out
            self.stream.load_state_dict(self.state_dict())
        self.stream.mark()
        self._handed = 0
        for batch in super().__iter__():
            self._handed += 1
            yield batch

    def __len__(self) -> int:
        s = self.stream
        if s.num_steps is None:
            raise TypeError("an endless MixtureDataLoader has no length; give num_steps")
        return max(0, (s.num_steps - s.step) * s.shard.micro_batches - s.micro - self._handed)

    def state_dict(self) -> dict[str, Any]:
        return self.stream.state_at(self._handed)

    def load_state_dict(self, state: Mapping[str, Any], *, replan: bool = False) -> None:
        self.stream.load_state_dict(state, replan=replan)
        self._handed = 0

    def metrics(self, step: int, tokens_per_sample: Mapping[str, int] | None = None):
        """``annealmix.metrics.step_metrics`` of this loader's plan at ``step``."""
        return _metrics.step_metrics(self.stream.plan, step, tokens_per_sample=tokens_per_sample)


def all_reduce_metrics(values: Mapping[str, float], group: Any = None) -> dict[str, float]:
    """Sum the additive metrics (counts, samples, tokens) over the ranks of ``group``.

    Other keys (weights, shares, epochs, losses) pass through unchanged. Without an
    initialised ``torch.distributed`` the values come back as they are.
    """
    out = dict(values)
    if not (dist.is_available() and dist.is_initialized()):
        return out
    keys = sorted(k for k in out if any(f"/{kind}/" in k for kind in _metrics.ADDITIVE))
    if keys:
        buf = torch.tensor([out[k] for k in keys], dtype=torch.float64)
        dist.all_reduce(buf, op=dist.ReduceOp.SUM, group=group)
        out.update(zip(keys, buf.tolist()))
    return out


def mix_losses(losses: Mapping[str, torch.Tensor], weights: Mapping[str, float]) -> torch.Tensor:
    """The mixture-weighted loss ``sum_k w_k L_k / sum_k w_k`` over the sources given.

    With two sources and ``weights={"X": gamma, "Y": 1 - gamma}`` it is the post's
    third reading, ``gamma L_X + (1 - gamma) L_Y``. Take the weights from the plan:
    ``dict(zip(mixture.sources, mixture.weights_at(step)))``.
    """
    if not losses:
        raise ValueError("losses is empty; give at least one source's loss")
    missing = [name for name in losses if name not in weights]
    if missing:
        raise ValueError(f"no weight for source {missing[0]!r}; weights has {sorted(weights)}")
    total = sum(float(weights[name]) for name in losses)
    if not total > 0:
        raise ValueError(
            f"the weights of {sorted(losses)} sum to {total}; at least one must be > 0"
        )
    return sum(loss * (float(weights[name]) / total) for name, loss in losses.items())


def loss_by_source(
    loss: torch.Tensor, sources: torch.Tensor, names: tuple[str, ...]
) -> dict[str, torch.Tensor]:
    """Mean per-sample loss of each source present in a batch (gradients flow).

    Args:
        loss: per-sample loss, shape (batch, ...); extra dims (tokens) are averaged.
        sources: the batch's source ids, shape (batch,).
        names: source names by id (``plan.mixture.sources``).
    """
    if loss.shape[:1] != sources.shape:
        raise ValueError(
            f"loss has shape {tuple(loss.shape)} but sources {tuple(sources.shape)}; "
            "pass the per-sample loss (reduction='none') and the batch's 'source' field"
        )
    per_sample = loss.reshape(loss.shape[0], -1).mean(dim=1)
    ids = sources.to(device=loss.device, dtype=torch.long)
    sums = torch.zeros(len(names), dtype=per_sample.dtype, device=loss.device)
    sums = sums.index_add(0, ids, per_sample)
    counts = torch.bincount(ids, minlength=len(names))
    return {n: sums[k] / counts[k] for k, n in enumerate(names) if counts[k] > 0}
